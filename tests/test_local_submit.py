"""The local backend end to end: `kitebench submit` and `launcher.api.submit` run the bundled
examples through the real runner in a subprocess (the container's env contract), in every mode."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from contract.result import FullResult, KitebenchInfo
from launcher import local
from launcher.api import options, submit
from launcher.base import StatusEvent
from launcher.errors import UsageError
from launcher.local import LocalLauncher
from launcher.report import render_result
from tests.common import missing_prereq
from tests.kernels_support import REPO

EXAMPLES = REPO / "examples"
MODES = ["test", "benchmark", "leaderboard", "profile"]


def _solutions(task: str, kind: str) -> list[Path]:
    return sorted((EXAMPLES / task / "solutions" / kind).glob("*.py"))


def _need(module: str) -> None:
    try:
        __import__(module)
    except ImportError:
        missing_prereq(f"{module} is not installed")


CASES = [
    (task, mode, sol, kind == "correct")
    for task, dep in (("vectoradd_np", "numpy"), ("vectoradd_py", "torch"))
    for kind in ("correct", "wrong")
    for sol in _solutions(task, kind)
    for mode in MODES
]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("task", "mode", "solution", "should_pass"),
    CASES,
    ids=[f"{t}-{m}-{s.parent.name}/{s.stem}" for t, m, s, _ in CASES],
)
def test_examples_in_every_mode(task, mode, solution, should_pass) -> None:
    _need("numpy" if task == "vectoradd_np" else "torch")
    events: list[StatusEvent] = []
    result = submit(
        EXAMPLES / task,
        solution,
        mode=mode,
        backend="local",
        isolation="process",
        on_status=events.append,
    )
    assert result.passed is should_pass, result.error
    assert result.success  # the runner carried the job to a verdict either way
    assert result.kitebench.isolation["mode"] == "process"
    assert events[0].state == "starting" and "process" in events[0].message
    assert events[-1].state == ("passed" if should_pass else "failed")
    if should_pass:
        expected_runs = {
            "test": ["test"],
            "benchmark": ["benchmark"],
            "profile": ["profile.0"],
            "leaderboard": ["test", "benchmark", "leaderboard"],
        }[mode]
        if task == "vectoradd_np" and mode == "profile":  # ranking_by geom: one per benchmark
            expected_runs = ["profile.0", "profile.1"]
        assert list(result.runs) == expected_runs
        if mode in ("benchmark", "leaderboard"):
            assert result.kitebench.score is not None and result.kitebench.score > 0
        if mode == "profile":
            assert "profile:" in render_result(result)
    else:
        assert result.kitebench.stage == "run"
        assert "check failed" in result.error


@pytest.mark.slow
def test_cheat_passes_test_and_benchmark_but_not_leaderboard() -> None:
    _need("torch")
    cheat = EXAMPLES / "vectoradd_py" / "solutions" / "cheat" / "cache_by_size.py"
    assert submit(
        EXAMPLES / "vectoradd_py", cheat, mode="benchmark", isolation="process", backend="local"
    ).passed
    result = submit(
        EXAMPLES / "vectoradd_py", cheat, mode="leaderboard", isolation="process", backend="local"
    )
    assert not result.passed
    assert list(result.runs) == ["test", "benchmark", "leaderboard"]
    assert "fresh inputs" in result.error


# --- the CLI -----------------------------------------------------------------------------


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("KITEBENCH_", "BUILDKITE_"))}
    base["PYTHONPATH"] = str(REPO)
    base.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "kitebench", "submit", *args],
        cwd=REPO,
        env=base,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


@pytest.mark.slow
def test_cli_pass_report_and_output(tmp_path) -> None:
    _need("numpy")
    out = tmp_path / "res"
    out.mkdir()
    proc = _cli(
        "examples/vectoradd_np",
        "--submission",
        "examples/vectoradd_np/solutions/correct/submission.py",
        "--mode",
        "benchmark",
        "--isolation",
        "process",
        "--output",
        str(out),
    )
    assert proc.returncode == 0, proc.stderr
    assert "verdict: PASSED" in proc.stdout
    assert "pass  benchmark 0: size: 4096; seed: 31232" in proc.stdout
    assert "mean " in proc.stdout and "µs" in proc.stdout and "score:" in proc.stdout
    assert "isolation: process" in proc.stdout
    assert "starting: local run, isolation: process" in proc.stderr  # the status line
    doc = json.loads((out / "result.json").read_text())
    assert doc["kitebench"]["passed"] is True and "benchmark" in doc["runs"]


@pytest.mark.slow
def test_cli_failure_json_and_exit_1(tmp_path) -> None:
    _need("numpy")
    target = tmp_path / "r.json"
    proc = _cli(
        "examples/vectoradd_np",
        "-s",
        "examples/vectoradd_np/solutions/wrong/scaled.py",
        "--json",
        "--quiet",
        "-o",
        str(target),
        "--isolation",
        "process",
    )
    assert proc.returncode == 1
    doc = json.loads(proc.stdout)
    assert doc["kitebench"]["passed"] is False and doc["kitebench"]["stage"] == "run"
    assert json.loads(target.read_text()) == doc
    assert proc.stderr == ""  # --quiet, --json: nothing else


def test_cli_usage_errors_exit_2(tmp_path) -> None:
    proc = _cli(str(tmp_path / "nope"), "-s", "x.py", "--isolation", "process")
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("Error: no task.yml")
    assert "Traceback" not in proc.stderr
    proc = _cli("examples/vectoradd_np", "-s", str(tmp_path / "missing.py"))
    assert proc.returncode == 2 and "not found" in proc.stderr and "Traceback" not in proc.stderr
    proc = _cli("examples/vectoradd_np", "-s", "x.py", "--mode", "bogus")
    assert proc.returncode == 2


@pytest.mark.slow
def test_cli_hang_exit_1_with_timeout(tmp_path) -> None:
    _need("numpy")
    task = tmp_path / "task"
    task.mkdir()
    for name in ("eval.py", "reference.py"):
        (task / name).write_text((EXAMPLES / "vectoradd_np" / name).read_text())
    yml = (
        (EXAMPLES / "vectoradd_np" / "task.yml")
        .read_text()
        .replace("test_timeout: 120", "test_timeout: 5")
    )
    (task / "task.yml").write_text(yml)
    sub = tmp_path / "hang.py"
    sub.write_text("import time\n\ndef custom_kernel(data):\n    time.sleep(300)\n")
    proc = _cli(str(task), "-s", str(sub), "--isolation", "process")
    assert proc.returncode == 1
    assert "timed out after 5 s" in proc.stdout and "verdict: FAILED" in proc.stdout


# --- the launcher's own failure paths ----------------------------------------------------


def _fake_python(tmp_path: Path, body: str) -> str:
    path = tmp_path / "fake-python"
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


def _np_payload():  # type: ignore[no-untyped-def]
    from launcher.task import build_payload

    return build_payload(
        EXAMPLES / "vectoradd_np",
        EXAMPLES / "vectoradd_np" / "solutions" / "correct" / "submission.py",
    )


def test_missing_result_json_is_a_failed_result(tmp_path) -> None:
    launcher = LocalLauncher(
        isolation="process", python=_fake_python(tmp_path, "echo runner died >&2; exit 3")
    )
    result = launcher.run(_np_payload())
    assert result.success is False and result.kitebench.stage == "internal"
    assert "result.json was not written" in result.error and "runner died" in result.error
    assert result.kitebench.isolation["mode"] == "process"


def test_invalid_result_json_is_a_failed_result(tmp_path) -> None:
    fake = _fake_python(
        tmp_path, 'echo "{\\"success\\": 12}" > "$KITEBENCH_OUTPUT_DIR/result.json"'
    )
    result = LocalLauncher(isolation="process", python=fake).run(_np_payload())
    assert result.success is False
    # not signed with the job's key (only the real runner gets it): refused before parsing
    assert "not signed by the runner" in result.error


def test_runner_gets_the_container_env_contract(tmp_path) -> None:
    dump = tmp_path / "env.json"
    fake = _fake_python(
        tmp_path,
        f"{sys.executable} -c \"import json, os; json.dump(dict(os.environ), open('{dump}', 'w'))\"",
    )
    os.environ["KITEBENCH_LEAK_CHECK"] = "1"
    try:
        LocalLauncher(isolation="process", python=fake).run(_np_payload())
    finally:
        del os.environ["KITEBENCH_LEAK_CHECK"]
    env = json.loads(dump.read_text())
    # the payload and the key come on stdin: no environment or file another process could read
    assert env["KITEBENCH_INPUT"] == "stdin" and Path(env["KITEBENCH_OUTPUT_DIR"]).name == "out"
    assert "SUBMISSION_PAYLOAD" not in env and "KITEBENCH_RESULT_KEY" not in env
    assert "KITEBENCH_LEAK_CHECK" not in env
    assert not Path(env["KITEBENCH_OUTPUT_DIR"]).exists()  # the temp dir is cleaned up


def test_budget_overrun_stops_the_runner(tmp_path) -> None:
    from launcher.task import build_payload

    sub = tmp_path / "hang.py"
    sub.write_text("import time\n\ndef custom_kernel(data):\n    time.sleep(300)\n")
    payload = build_payload(EXAMPLES / "vectoradd_np", sub)
    result = LocalLauncher(isolation="process").run(payload, timeout_s=4)
    assert result.success is False and not result.passed
    assert "longer than its budget of 4 s" in result.error
    assert "interrupted by SIGTERM" in result.error


# --- isolation choice --------------------------------------------------------------------


class _FakeDocker:
    def __init__(self, available: bool) -> None:
        self.available = available
        self.images: set[str] = {"kitebench-runner:test"}
        self.calls: list[Path] = []

    def docker_available(self) -> bool:
        return self.available

    def image_for(self, payload):  # type: ignore[no-untyped-def]
        return None if getattr(payload, "lang", None) == "model" else "kitebench-runner:test"

    def image_present(self, image: str) -> bool:
        return image in self.images

    def run_payload_in_docker(self, payload, *, output_dir, on_status=None, timeout_s=None):  # type: ignore[no-untyped-def]
        self.calls.append(output_dir)
        return FullResult(success=True, kitebench=KitebenchInfo(passed=True))


def test_isolation_choice(monkeypatch) -> None:
    monkeypatch.setattr(local, "_docker_backend", lambda: None)
    assert LocalLauncher("auto").resolve_isolation()[0] == "process"
    assert LocalLauncher("process").resolve_isolation()[0] == "process"
    with pytest.raises(UsageError, match="Docker isolation is unavailable"):
        LocalLauncher("docker").resolve_isolation()
    with pytest.raises(UsageError, match="unknown isolation"):
        LocalLauncher("vm")
    fake = _FakeDocker(available=False)
    monkeypatch.setattr(local, "_docker_backend", lambda: fake)
    assert LocalLauncher("auto").resolve_isolation() == ("process", "no Docker engine answers")
    with pytest.raises(UsageError, match="no Docker engine answers"):
        LocalLauncher("docker").resolve_isolation()
    fake.available = True
    assert LocalLauncher("auto").resolve_isolation(_np_payload())[0] == "docker"
    # an engine without the runner image: auto falls back and says why; docker refuses
    fake.images.clear()
    mode, why = LocalLauncher("auto").resolve_isolation(_np_payload())
    assert mode == "process" and "kitebench-runner:test is not built" in why
    with pytest.raises(UsageError, match="is not built"):
        LocalLauncher("docker").resolve_isolation(_np_payload())
    fake.images.add("kitebench-runner:test")
    events: list[StatusEvent] = []
    result = LocalLauncher("auto").run(_np_payload(), on_status=events.append)
    assert result.kitebench.isolation["mode"] == "docker" and len(fake.calls) == 1
    assert "isolation: docker" in events[0].message


def test_model_payloads_need_a_model_image_for_docker(monkeypatch) -> None:
    from types import SimpleNamespace

    fake = _FakeDocker(available=True)
    monkeypatch.setattr(local, "_docker_backend", lambda: fake)
    mode, why = LocalLauncher("auto").resolve_isolation(SimpleNamespace(lang="model"))
    assert mode == "process" and "KITEBENCH_MODEL_IMAGE" in why


def test_options_go_into_submit_options(tmp_path) -> None:
    opts = options(
        tmp_path,
        "s.py",
        mode="benchmark",
        backend="buildkite",
        gpu="h100",
        queue="q",
        arch="90a",
        timeout_s=30.0,
        gpus_file="g.yml",
        isolation="docker",
    )
    assert (opts.gpu, opts.queue, opts.arch, opts.timeout_s) == ("h100", "q", "90a", 30.0)
    assert opts.gpus_file == Path("g.yml") and opts.submission == Path("s.py")
    assert opts.extra == {"isolation": "docker"} and opts.mode == "benchmark"
    with pytest.raises(UsageError):
        options(tmp_path, mode="fast")


FORGER = '''
import json, os, signal

def custom_kernel(data):
    # find the runner's output dir, forge a passing result.json there, then kill the runner
    runner = os.getppid()
    env = open(f"/proc/{runner}/environ", "rb").read().split(b"\\0")
    out = next(e.split(b"=", 1)[1].decode() for e in env if e.startswith(b"KITEBENCH_OUTPUT_DIR="))
    forged = {"success": True, "error": "", "runs": {},
              "kitebench": {"passed": True, "exit_code": 0}}
    with open(os.path.join(out, "result.json"), "w") as f:
        json.dump(forged, f)
    os.kill(runner, signal.SIGKILL)
'''


def test_result_forged_by_a_submission_that_kills_the_runner_is_refused(tmp_path) -> None:
    from launcher.task import build_payload

    sub = tmp_path / "forger.py"
    sub.write_text(FORGER)
    payload = build_payload(EXAMPLES / "vectoradd_np", sub)
    result = LocalLauncher(isolation="process").run(payload)
    assert not result.passed
    if result.kitebench.isolation.get("sandbox", {}).get("mode") in ("ns", "uid+ns"):
        # its own pid namespace: the runner is not even there to be found or killed
        assert any(why in result.error
                   for why in ("StopIteration", "No such file", "Permission denied"))
    else:
        assert result.success is False and "runner" in result.error
