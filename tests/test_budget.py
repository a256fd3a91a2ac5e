"""One job budget: every waiter covers the sum of the runner's own per-phase limits."""

from __future__ import annotations

import pytest

from contract import codec
from contract.budget import phase_limits, phases_s
from host.settings import HostSettings
from launcher.buildkite import budget_for
from launcher.local import _budget

MODES = ("test", "benchmark", "leaderboard", "private", "profile")
SOURCES = {"eval.py": "print()", "submission.py": "x = 1"}
CASES = {"tests": [{"n": 1}, {"n": 2}], "benchmarks": [{"n": 3}, {"n": 4}, {"n": 5}]}
TIMEOUTS = {"test_timeout": 11, "benchmark_timeout": 23, "ranked_timeout": 37}


def _payloads() -> list[tuple[str, object]]:
    out = []
    for mode in MODES:
        for ranking in ("last", "mean"):
            out.append((f"py-{mode}-{ranking}", codec.validate(
                {"lang": "py", "mode": mode, "main": "eval.py", "sources": SOURCES,
                 "ranking_by": ranking, **CASES, **TIMEOUTS})))
        out.append((f"cu-{mode}", codec.validate(
            {"lang": "cu", "mode": mode, "sources": {"eval.cu": "int main(){}"}, **CASES,
             **TIMEOUTS})))
    for mode in ("test", "benchmark", "leaderboard", "private"):
        out.append((f"model-{mode}", codec.validate({
            "lang": "model", "mode": mode, "archive_path": "/x.tgz", **TIMEOUTS,
            "model_config": {"model_name": "m", "install_timeout": 101,
                             "server_startup_timeout": 53, "benchmark_timeout": 211,
                             "benchmark_shapes": [
                                 {"num_prompts": 4, "input_len": 8, "output_len": 8},
                                 {"num_prompts": 4, "input_len": 16, "output_len": 8}]}})))
    return out


@pytest.mark.parametrize(("name", "payload"), _payloads(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_waiter_covers_every_phase(name: str, payload: object) -> None:
    total = sum(s for _n, s in phase_limits(payload))  # type: ignore[arg-type]
    assert total == phases_s(payload) > 0  # type: ignore[arg-type]
    host = HostSettings().timeout_for(payload)
    local = _budget(payload, None)
    buildkite = budget_for(payload)
    # each adds its own margin for start-up on top of the runner's phases; the Buildkite
    # waiter also waits for the host's hard limit (and for the queue)
    assert host > total and local > total
    assert buildkite > host


def test_model_leaderboard_counts_both_timed_runs() -> None:
    # the bug this module fixes: the host's limit was below the sum of its own phase limits
    payload = dict(_payloads())["model-leaderboard"]
    names = [n for n, _s in phase_limits(payload)]  # type: ignore[arg-type]
    assert names.count("benchmark: benchmark") == 1 and names.count("leaderboard: benchmark") == 1
    own_phases = 101 + 53 + 11 + 211 + 211  # install, start, gate, two timed runs
    assert HostSettings(timeout_margin_s=0).timeout_for(payload) >= own_phases


def test_profile_and_ranking_last_agree_with_the_runs_the_runner_makes() -> None:
    from runner.kernels.execute import run_names

    for name, payload in _payloads():
        if name.startswith(("py", "cu")):
            extra = ("compile", "reference ceiling", "secret recheck")
            runs = [n for n, _s in phase_limits(payload) if n not in extra]  # type: ignore[arg-type]
            assert runs == run_names(payload), name  # type: ignore[arg-type]


def test_ranked_runs_count_the_cross_checks_reruns() -> None:
    payload = dict(_payloads())["py-leaderboard-last"]
    limits = dict(phase_limits(payload))  # type: ignore[arg-type]
    assert limits["secret recheck"] == 11 and limits["reference ceiling"] == 23
    assert phases_s(payload) == 11 + 23 + 37 + 23 + 11  # type: ignore[arg-type]
