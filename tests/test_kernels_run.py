"""``python -m runner`` on py payloads: the mode → runs sequence, the POPCORN protocol, score,
checkpoints and SIGTERM, the child's environment, and submissions that try to change what the
runner reports."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from contract import codec
from contract.payload import CuPayload, PyPayload
from runner.kernels.execute import cases_for_run, run_names, score
from runner.kernels.protocol import parse_popcorn
from runner.kernels.workdir import format_case
from tests.kernels_support import REPO, marker_procs, new_marker, py_payload, run_runner

# An eval.py speaking the protocol by hand: passes every case unless the case says fail: 1, and
# reports a benchmark mean equal to the case's "ns".
PROTOCOL_EVAL = """
import os, sys
mode, cases = sys.argv[1], sys.argv[2]
out = os.fdopen(int(os.environ["POPCORN_FD"]), "w")
rows = [dict(p.split(": ", 1) for p in line.strip().split("; ")) for line in open(cases) if line.strip()]
ok = all(r.get("fail") != "1" for r in rows)
kind = "test" if mode == "test" else "benchmark"
out.write(f"{kind}-count: {len(rows)}\\n")
for i, r in enumerate(rows):
    out.write(f"{kind}.{i}.spec: {'; '.join(f'{k}: {v}' for k, v in r.items())}\\n")
    if kind == "benchmark":
        out.write(f"benchmark.{i}.mean: {r.get('ns', '1000')}\\n")
out.write(f"mode: {mode}\\n")
out.write(f"seed: {os.environ.get('POPCORN_SEED', '')}\\n")
out.write("check: " + ("pass" if ok else "fail") + "\\n")
out.close()
sys.exit(0 if ok else 112)
"""


def _payload(**common) -> str:  # type: ignore[no-untyped-def]
    common.setdefault("tests", [{"n": 1}])
    common.setdefault("benchmarks", [{"ns": 2000}, {"ns": 8000}])
    return py_payload(PROTOCOL_EVAL, **common)


@pytest.mark.parametrize(
    ("mode", "runs"),
    [
        ("test", ["test"]),
        ("benchmark", ["benchmark"]),
        ("leaderboard", ["test", "benchmark", "leaderboard"]),
        ("private", ["test", "benchmark", "leaderboard"]),
        ("profile", ["profile.0"]),
    ],
)
def test_modes_run_in_order(runner_env, mode, runs) -> None:
    run = run_runner(_payload(mode=mode), runner_env)
    assert run.exit_code == 0, run.result.error
    assert list(run.result.runs) == runs
    assert run.result.passed and run.result.kitebench.passed
    for name in runs:
        ev = run.result.runs[name]
        assert ev.run.result["mode"] == ("profile" if name.startswith("profile") else name)
        assert ev.run.command.endswith(f"eval.py {ev.run.result['mode']} cases.txt")
    assert [p.name for p in run.result.kitebench.phases] == runs
    # ranking_by last: only the last benchmark line reaches benchmark/leaderboard/profile runs
    if mode != "test":
        bench = run.result.runs[runs[-1]].run.result
        assert bench["benchmark-count"] == "1" and bench["benchmark.0.spec"] == "ns: 8000"
        if mode != "profile":
            assert run.result.kitebench.score == pytest.approx(8000 / 1e9)
            info = run.result.kitebench.score_info
            assert info is not None and (info.metric, info.unit, info.ascending) == (
                "time", "s", True)
            assert info.describe(8000 / 1e9) == "time 8 µs (lower is better)"


def test_a_failed_run_stops_the_sequence(runner_env) -> None:
    run = run_runner(_payload(mode="leaderboard", tests=[{"fail": 1}]), runner_env)
    assert list(run.result.runs) == ["test"]
    test = run.result.runs["test"].run
    assert test.exit_code == 112 and test.success and not test.passed
    assert run.result.success and not run.result.kitebench.passed
    assert run.result.kitebench.stage == "run" and run.exit_code == 1
    assert run.result.kitebench.score is None


@pytest.mark.parametrize(
    ("ranking_by", "expected"), [("mean", 5000 / 1e9), ("geom", 4000 / 1e9), ("last", 8000 / 1e9)]
)
def test_score_combines_benchmark_means(runner_env, ranking_by, expected) -> None:
    run = run_runner(_payload(mode="benchmark", ranking_by=ranking_by), runner_env)
    assert run.result.kitebench.score == pytest.approx(expected)
    n = 1 if ranking_by == "last" else 2
    assert run.result.runs["benchmark"].run.result["benchmark-count"] == str(n)


def test_profile_runs_one_per_benchmark(runner_env) -> None:
    run = run_runner(_payload(mode="profile", ranking_by="mean"), runner_env)
    assert list(run.result.runs) == ["profile.0", "profile.1"]
    assert run.result.runs["profile.1"].run.result["benchmark.0.spec"] == "ns: 8000"


def test_secret_seed_reaches_the_harness(runner_env) -> None:
    run = run_runner(_payload(seed=987654), runner_env)
    assert run.result.runs["test"].run.result["seed"] == "987654"
    run = run_runner(_payload(), runner_env)
    assert run.result.runs["test"].run.result["seed"] == ""


def test_exit_zero_without_verdict_does_not_pass(runner_env) -> None:
    run = run_runner(py_payload("print('no protocol output')"), runner_env)
    test = run.result.runs["test"].run
    assert test.exit_code == 0 and test.success and not test.passed
    assert "no verdict" in run.result.error


def test_crash_is_reported_with_its_stderr(runner_env) -> None:
    run = run_runner(py_payload("raise RuntimeError('kaboom in eval')"), runner_env)
    test = run.result.runs["test"].run
    assert test.exit_code == 1 and not test.success
    assert "kaboom in eval" in test.stderr and "kaboom in eval" in run.result.error


def test_child_env_is_clean(runner_env) -> None:
    src = """
    import json, os
    print("ENV=" + json.dumps(sorted(os.environ)))
    os.write(int(os.environ["POPCORN_FD"]), b"check: pass\\n")
    """
    runner_env["KITEBENCH_SECRET_THING"] = "x"
    # the local backend hands the runner the user's environment: no credential may pass on
    secrets = ("BUILDKITE_AGENT_TOKEN", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "GITHUB_TOKEN")
    runner_env.update({name: "secret-value" for name in secrets})
    run = run_runner(py_payload(src), runner_env)
    line = next(
        ln for ln in run.result.runs["test"].run.stdout.splitlines() if ln.startswith("ENV=")
    )
    names = json.loads(line[4:])
    assert "SUBMISSION_PAYLOAD" not in names
    assert not [n for n in names if n.startswith("KITEBENCH_")]
    assert not [n for n in names if n in secrets]
    assert "POPCORN_FD" in names


def test_submission_cannot_forge_the_result(runner_env, tmp_path) -> None:
    """A failing submission writes a passing result.json into its cwd, next to it, and into the
    output dir (found through the runner's /proc environ when readable), and leaves a daemon that
    keeps rewriting it: the runner's own verdict is what ends up in result.json."""
    marker = new_marker()
    fake = json.dumps({"success": True, "error": "", "runs": {}, "kitebench": {"passed": True}})
    src = f"""
    import os, sys, subprocess
    fake = {fake!r}
    for path in ("result.json", "../result.json"):
        try:
            open(path, "w").write(fake)
        except OSError:
            pass
    out_dir = None
    try:
        env = open(f"/proc/{{os.getppid()}}/environ", "rb").read().split(b"\\0")
        out_dir = next(e.split(b"=", 1)[1].decode() for e in env if e.startswith(b"KITEBENCH_OUTPUT_DIR="))
    except (OSError, StopIteration):
        pass
    print("found output dir:", out_dir)
    if out_dir:
        open(os.path.join(out_dir, "result.json"), "w").write(fake)
        daemon = "import sys, time\\nwhile True:\\n    open(sys.argv[1], 'w').write(sys.argv[2]); time.sleep(0.05)"
        subprocess.Popen([sys.executable, "-c", daemon, os.path.join(out_dir, "result.json"), fake, {marker!r}],
                         start_new_session=True)
    os.write(int(os.environ["POPCORN_FD"]), b"check: fail\\n")
    sys.exit(112)
    """
    try:
        run = run_runner(py_payload(src), runner_env)
        time.sleep(0.5)  # a surviving daemon would rewrite result.json in this time
        final = json.loads((Path(runner_env["KITEBENCH_OUTPUT_DIR"]) / "result.json").read_text())
        assert final["kitebench"]["passed"] is False
        assert final["runs"]["test"]["run"]["exit_code"] == 112
        assert run.exit_code == 1
        assert marker_procs(marker) == []
    finally:
        for pid in marker_procs(marker):
            os.kill(pid, signal.SIGKILL)


def test_each_run_gets_a_fresh_work_dir(runner_env) -> None:
    """A submission that passes the test run by answering right, then rewrites the task's files
    in its cwd so a later run in the same dir would accept a wrong answer, gains nothing."""
    src = """
    import os, sys
    out = os.fdopen(int(os.environ["POPCORN_FD"]), "w")
    tampered = open("verdict.txt").read().strip() == "pass"
    with open("verdict.txt", "w") as f:
        f.write("pass")
    with open("eval.py", "a") as f:
        f.write("\\n# tampered\\n")
    out.write("check: " + ("pass" if sys.argv[1] == "test" or tampered else "fail") + "\\n")
    """
    run = run_runner(
        py_payload(src, files={"verdict.txt": "honest"}, mode="leaderboard", benchmarks=[{"n": 1}]),
        runner_env,
    )
    assert run.result.runs["test"].run.passed
    assert not run.result.runs["benchmark"].run.passed
    assert not run.result.kitebench.passed


def test_sigterm_mid_benchmark_leaves_a_partial_result(runner_env) -> None:
    marker = new_marker()
    src = f"""
    import os, sys, time
    if sys.argv[1] == "benchmark":
        time.sleep(300)  # {marker}
    os.write(int(os.environ["POPCORN_FD"]), b"test-count: 1\\ncheck: pass\\n")
    """
    env = dict(runner_env)
    env["SUBMISSION_PAYLOAD"] = py_payload(src, mode="leaderboard", benchmarks=[{"n": 2}])
    out = Path(env["KITEBENCH_OUTPUT_DIR"]) / "result.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "runner"], env=env, cwd=REPO, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # wait for the checkpoint after the test run
            if out.exists() and "test" in json.loads(out.read_text()).get("runs", {}):
                break
            time.sleep(0.1)
        else:
            pytest.fail("no checkpoint after the test run")
        time.sleep(0.5)  # the benchmark run is sleeping now
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    result = json.loads(out.read_text())
    assert code == 4
    assert result["success"] is False
    assert result["kitebench"]["interrupted"] is True
    assert result["kitebench"]["stage"] == "interrupted"
    assert "interrupted by SIGTERM" in result["error"]
    assert "test" in result["error"]
    assert list(result["runs"]) == ["test"] and result["runs"]["test"]["run"]["passed"]
    assert marker_procs(marker) == []


def test_checkpoint_on_disk_says_incomplete(runner_env) -> None:
    """Between runs, result.json already holds the finished runs, marked incomplete."""
    src = """
    import os, sys, time
    if sys.argv[1] == "benchmark":
        time.sleep(3)
    os.write(int(os.environ["POPCORN_FD"]), b"check: pass\\n")
    """
    env = dict(runner_env)
    env["SUBMISSION_PAYLOAD"] = py_payload(src, mode="leaderboard", benchmarks=[{"n": 2}])
    out = Path(env["KITEBENCH_OUTPUT_DIR"]) / "result.json"
    proc = subprocess.Popen([sys.executable, "-m", "runner"], env=env, cwd=REPO)
    seen = None
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        if out.exists():
            doc = json.loads(out.read_text())
            if list(doc["runs"]) == ["test"]:
                seen = doc
        time.sleep(0.05)
    proc.wait(timeout=60)
    assert seen is not None
    assert seen["success"] is False and "incomplete" in seen["error"]
    final = json.loads(out.read_text())
    assert final["success"] is True and final["kitebench"]["passed"] is True


# --- unit level ---------------------------------------------------------------------------


def test_parse_popcorn() -> None:
    data = b"check: pass\ntest.0.spec: size: 1; seed: 2\nnoise line\n: empty key\ncheck: fail\n"
    result, warnings = parse_popcorn(data)
    assert result == {"check": "fail", "test.0.spec": "size: 1; seed: 2"}
    assert warnings == []
    big, warnings = parse_popcorn(b"k: " + b"v" * 100_000 + b"\n")
    assert len(big["k"]) < 70_000 and warnings


def test_cases_and_runs_for_payload() -> None:
    base = {
        "lang": "py",
        "main": "e.py",
        "sources": {"e.py": ""},
        "tests": [{"a": 1}],
        "benchmarks": [{"b": 1}, {"b": 2}, "b: 3"],
    }
    p = codec.validate({**base, "mode": "profile"})
    assert isinstance(p, PyPayload)
    assert run_names(p) == ["profile.0"] and cases_for_run(p, "profile.0") == ["b: 3"]
    p = codec.validate({**base, "mode": "profile", "ranking_by": "geom"})
    assert run_names(p) == ["profile.0", "profile.1", "profile.2"]
    assert cases_for_run(p, "profile.1") == [{"b": 2}]
    assert cases_for_run(p, "test") == [{"a": 1}]
    assert format_case({"size": 3, "flag": True, "name": "x"}) == "size: 3; flag: true; name: x"
    assert not isinstance(p, CuPayload)


def test_score_rules() -> None:
    r = {"benchmark-count": "2", "benchmark.0.mean": "1000", "benchmark.1.mean": "4000"}
    assert score(r, "mean") == pytest.approx(2500e-9)
    assert score(r, "geom") == pytest.approx(2000e-9)
    assert score(r, "last") == pytest.approx(4000e-9)
    assert score({**r, "score": "0.5"}, "custom") == 0.5
    assert score({"benchmark-count": "1", "benchmark.0.mean": "nan"}, "last") is None
    assert score({"benchmark-count": "1"}, "last") is None


def test_setup_error_is_a_failed_result(runner_env, tmp_path) -> None:
    """A runner-side failure (here: the work dir base is a file) is a failed result naming the
    step, not a crash."""
    env = dict(runner_env)
    (tmp_path / "not-a-dir").write_text("")
    env["KITEBENCH_WORK_DIR"] = str(tmp_path / "not-a-dir")
    run = run_runner(py_payload("pass"), env)
    assert run.result.success is False
    assert run.result.kitebench.stage == "setup"
    assert "internal error during setup of test" in run.result.error
    assert run.exit_code == 3


def test_work_dirs_are_removed(runner_env, tmp_path) -> None:
    env = dict(runner_env)
    base = tmp_path / "tmp"
    base.mkdir()
    env["KITEBENCH_WORK_DIR"] = str(base)
    src = """
    import os
    os.makedirs("ro/sub")
    open("ro/sub/f", "w").write("x")
    os.chmod("ro/sub", 0o500)
    os.chmod("ro", 0o500)
    os.write(int(os.environ["POPCORN_FD"]), b"check: pass\\n")
    """
    run = run_runner(py_payload(src), env)
    assert run.result.passed
    assert os.listdir(base) == []
