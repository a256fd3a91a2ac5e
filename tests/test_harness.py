"""runner.harness: protocol lines, correctness with rtol/atol (NaN/inf), the stopping rule,
leaderboard rechecks with fresh inputs, and main() as a task's eval.py."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from runner import harness
from runner.harness import (
    CheckFailed,
    PopcornOutput,
    Stats,
    Task,
    TimingOptions,
    compare,
    measure,
    mix_seed,
    parse_case,
    run_mode,
)
from tests.common import missing_prereq
from tests.kernels_support import REPO


class Collect(PopcornOutput):
    def __init__(self) -> None:
        self.lines: dict[str, str] = {}
        self._own = False

    def log(self, key: str, value: object) -> None:
        self.lines[key] = str(value)


def _torch():  # type: ignore[no-untyped-def]
    try:
        import torch
    except ImportError:
        missing_prereq("torch is not installed (.ci/setup.d/20-torch.sh installs it)")
    return torch


def _np():  # type: ignore[no-untyped-def]
    try:
        import numpy
    except ImportError:
        missing_prereq("numpy is not installed")
    return numpy


# --- cases -------------------------------------------------------------------------------


def test_parse_case_types() -> None:
    assert parse_case("size: 1024; seed: 42; scale: 0.5; name: fp16; flag: true") == {
        "size": 1024,
        "seed": 42,
        "scale": 0.5,
        "name": "fp16",
        "flag": True,
    }
    assert harness.case_spec({"size": 3, "flag": False}) == "size: 3; flag: false"
    with pytest.raises(ValueError):
        parse_case("size 1024")


def test_secret_seed_mixing() -> None:
    case = {"size": 8, "seed": 10}
    assert mix_seed(case, None) == case
    assert mix_seed(case, 5)["seed"] == 15
    assert mix_seed(case, 5, offset=2)["seed"] == 17
    assert mix_seed({"size": 8}, 5) == {"size": 8}


# --- correctness -------------------------------------------------------------------------


def test_compare_python_values() -> None:
    assert compare([1.0, 2.0], [1.0, 2.0 + 1e-9], rtol=1e-6, atol=0) is None
    assert "got 2.1" in compare([1.0, 2.1], [1.0, 2.0], rtol=1e-6, atol=0)
    assert compare(float("nan"), float("nan"), rtol=0, atol=0) is None
    assert compare(1.0, float("nan"), rtol=1, atol=1) is not None
    assert compare(float("inf"), float("-inf"), rtol=1, atol=1) is not None
    assert compare(float("inf"), 1e308, rtol=1, atol=1) is not None
    assert compare([1.0], [1.0, 2.0], rtol=0, atol=0).startswith("expected a sequence of 2")
    assert compare({"a": 1}, {"a": 1}, rtol=0, atol=0) is None
    assert compare("x", "y", rtol=0, atol=0) is not None


def test_compare_numpy() -> None:
    np = _np()
    e = np.array([1.0, 2.0, np.nan, np.inf, -np.inf], dtype=np.float32)
    assert compare(e.copy(), e, rtol=1e-5, atol=1e-5) is None
    o = e.copy()
    o[0] = 1.0 + 1e-3
    assert "1 of 5 elements mismatch" in compare(o, e, rtol=1e-5, atol=1e-5)
    assert compare(o, e, rtol=1e-2, atol=0) is None  # within rtol
    o = e.copy()
    o[1] = np.nan  # NaN where a number is expected
    assert compare(o, e, rtol=1, atol=1) is not None
    o = e.copy()
    o[2] = 0.0  # a number where NaN is expected
    assert compare(o, e, rtol=1, atol=1) is not None
    o = e.copy()
    o[3] = -np.inf  # the wrong infinity
    assert compare(o, e, rtol=1, atol=1) is not None
    assert compare(e[:2], e, rtol=1, atol=1).startswith("shape mismatch")
    assert compare([1.0] * 5, e, rtol=1, atol=1).startswith("expected a numpy array")


def test_compare_torch() -> None:
    torch = _torch()
    e = torch.tensor([[1.0, 2.0], [float("nan"), float("inf")]], dtype=torch.float16)
    assert compare(e.clone(), e, rtol=1e-3, atol=1e-3) is None
    o = e.clone()
    o[0, 1] = 2.5
    err = compare(o, e, rtol=1e-3, atol=1e-3)
    assert "1 of 4 elements mismatch" in err and "(0, 1)" in err
    o = e.clone()
    o[1, 0] = 7.0
    assert compare(o, e, rtol=10, atol=10) is not None
    o = e.clone()
    o[1, 1] = float("-inf")
    assert compare(o, e, rtol=10, atol=10) is not None
    assert compare(e.flatten(), e, rtol=1, atol=1).startswith("shape mismatch")


def test_task_verify_with_custom_check() -> None:
    calls = []

    def check(data, output):  # type: ignore[no-untyped-def]
        calls.append(data)
        return (output == data * 2, "not doubled")

    task = Task(generate_input=lambda n: n, reference=lambda d: d, check=check)
    assert task.verify(3, 6) is None
    assert task.verify(3, 7) == "not doubled"
    task = Task(
        generate_input=lambda n: n,
        reference=lambda d: d,
        check=lambda d, o: "" if o == d else "bad",
    )
    assert task.verify(1, 1) is None and task.verify(1, 2) == "bad"


def test_reference_sees_unmutated_inputs() -> None:
    np = _np()

    def kernel(data):  # type: ignore[no-untyped-def]
        a, b = data
        a += b  # writes into its input, then returns the sum
        return a

    task = Task(
        generate_input=lambda size, seed: (np.ones(size), np.full(size, 2.0)),
        reference=lambda d: d[0] + d[1],
    )
    out = Collect()
    assert run_mode("test", [{"size": 4, "seed": 1}], task, kernel, out) == 0
    assert out.lines["check"] == "pass"


# --- timing ------------------------------------------------------------------------------


class FakeClock:
    name = "fake"

    def __init__(self, durations) -> None:  # type: ignore[no-untyped-def]
        self.durations = list(durations)
        self.calls = 0

    def time(self, fn, data):  # type: ignore[no-untyped-def]
        ns = self.durations[min(self.calls, len(self.durations) - 1)]
        self.calls += 1
        return float(ns), fn(data)

    def sync(self) -> None:
        pass


def test_stats() -> None:
    st = Stats.of([100.0, 200.0, 300.0, 400.0])
    assert st.runs == 4 and st.mean == 250 and st.best == 100 and st.worst == 400
    assert st.median == 250
    assert st.std == pytest.approx(math.sqrt(sum((x - 250) ** 2 for x in [100, 200, 300, 400]) / 3))
    assert st.err == pytest.approx(st.std / 2)


def test_stopping_rule_stops_after_three_when_stable() -> None:
    clock = FakeClock([1000, 1000, 1000, 1000])
    st = measure(lambda d: d, 0, opts=TimingOptions(max_repeats=100), clock=clock)
    assert st.runs == 3 and clock.calls == 3


def test_stopping_rule_caps_noisy_runs() -> None:
    clock = FakeClock([1000, 5000] * 100)
    st = measure(lambda d: d, 0, opts=TimingOptions(max_repeats=40, max_time_s=60), clock=clock)
    assert st.runs == 40


def test_stopping_rule_time_cap() -> None:
    clock = FakeClock([1000, 5000] * 100)
    st = measure(lambda d: d, 0, opts=TimingOptions(max_repeats=10_000, max_time_s=0), clock=clock)
    assert st.runs == 3  # the minimum, then the (already passed) deadline stops it


def test_fresh_inputs_are_checked_every_timed_run() -> None:
    seen = []

    def fresh(i):  # type: ignore[no-untyped-def]
        seen.append(i)
        return i, (lambda out: "" if out == i else "stale")

    measure(
        lambda d: d,
        0,
        opts=TimingOptions(max_repeats=5, target_rse=0),
        fresh=fresh,
        clock=FakeClock([1000, 1100]),
    )
    assert seen == [0, 1, 2, 3, 4]
    cached = {}
    with pytest.raises(CheckFailed, match="timed run 1 with fresh inputs: stale"):
        measure(
            lambda d: cached.setdefault("x", d),
            0,
            opts=TimingOptions(max_repeats=5),
            fresh=fresh,
            clock=FakeClock([1000]),
        )


def test_benchmark_keys_and_leaderboard_recheck() -> None:
    cache = {}

    def caching_kernel(data):  # type: ignore[no-untyped-def]
        return cache.setdefault(len(data), [x * 2 for x in data])

    task = Task(
        generate_input=lambda size, seed: [float(seed + i) for i in range(size)],
        reference=lambda d: [x * 2 for x in d],
    )
    opts = TimingOptions(max_repeats=5, warmup_time_s=0)
    out = Collect()
    assert run_mode("benchmark", [{"size": 3, "seed": 1}], task, caching_kernel, out, opts) == 0
    for key in ("runs", "mean", "std", "err", "best", "worst", "median"):
        assert float(out.lines[f"benchmark.0.{key}"]) >= 0
    assert out.lines["benchmark.0.clock"] == "perf_counter_ns"
    assert out.lines["check"] == "pass"
    cache.clear()
    out = Collect()
    assert run_mode("leaderboard", [{"size": 3, "seed": 1}], task, caching_kernel, out, opts) == 112
    assert out.lines["benchmark.0.status"] == "fail"
    assert "fresh inputs" in out.lines["benchmark.0.error"]
    assert out.lines["check"] == "fail"


def test_kernel_exception_is_a_failed_test(capsys) -> None:
    def boom(data):  # type: ignore[no-untyped-def]
        raise ZeroDivisionError("no")

    task = Task(generate_input=lambda n: n, reference=lambda d: d)
    out = Collect()
    assert run_mode("test", [{"n": 1}, {"n": 2}], task, boom, out) == 112
    assert out.lines["test-count"] == "2"
    assert out.lines["test.1.status"] == "fail"
    assert out.lines["test.1.error"] == "ZeroDivisionError: no"


def test_no_cases_does_not_pass() -> None:
    out = Collect()
    task = Task(generate_input=lambda n: n, reference=lambda d: d)
    assert run_mode("test", [], task, lambda d: d, out) == 112
    assert out.lines["check"] == "fail"


def test_profile_mode_writes_a_report() -> None:
    import base64

    out = Collect()
    task = Task(generate_input=lambda n: list(range(n)), reference=lambda d: d)
    assert run_mode("profile", [{"n": 10}], task, lambda d: list(d), out) == 0
    text = base64.b64decode(out.lines["benchmark.0.report"]).decode()
    assert "function calls" in text  # cProfile's table for non-torch inputs


def test_cuda_clock_is_chosen_only_for_cuda_data() -> None:
    torch = _torch()
    assert harness.clock_for(torch.zeros(3)).name == "perf_counter_ns"
    assert harness.clock_for([1, 2]).name == "perf_counter_ns"


# --- main() as eval.py -------------------------------------------------------------------


def _task_dir(tmp_path: Path, submission: str) -> Path:
    (tmp_path / "reference.py").write_text(
        textwrap.dedent("""
        RTOL = 0.0
        ATOL = 0.0
        def generate_input(size, seed):
            return [float((seed * 31 + i) % 7) for i in range(size)]
        def ref_kernel(data):
            return [x + 1 for x in data]
    """)
    )
    (tmp_path / "submission.py").write_text(textwrap.dedent(submission))
    (tmp_path / "eval.py").write_text("from runner.harness import main\nmain()\n")
    (tmp_path / "cases.txt").write_text("size: 5; seed: 1\nsize: 9; seed: 2\n")
    return tmp_path


def _run_eval(wd: Path, mode: str, *extra: str) -> tuple[int, dict[str, str], str]:
    r, w = os.pipe()
    env = {**os.environ, "POPCORN_FD": str(w), "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "eval.py", mode, "cases.txt", *extra],
        cwd=wd,
        env=env,
        pass_fds=(w,),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    os.close(w)
    with os.fdopen(r) as f:
        lines = dict(line.rstrip("\n").split(": ", 1) for line in f if ": " in line)
    return proc.returncode, lines, proc.stderr


def test_main_as_eval_py(tmp_path) -> None:
    wd = _task_dir(tmp_path, "def custom_kernel(data):\n    return [x + 1 for x in data]\n")
    code, lines, _ = _run_eval(wd, "test")
    assert code == 0 and lines["check"] == "pass" and lines["test-count"] == "2"
    assert lines["test.0.spec"] == "size: 5; seed: 1"
    code, lines, _ = _run_eval(wd, "leaderboard")
    assert code == 0 and int(lines["benchmark.1.runs"]) >= 3


def test_main_wrong_and_broken_submissions(tmp_path) -> None:
    wd = _task_dir(tmp_path, "def custom_kernel(data):\n    return [x + 2 for x in data]\n")
    code, lines, _ = _run_eval(wd, "test")
    assert code == 112 and lines["check"] == "fail" and lines["test.0.status"] == "fail"
    (wd / "submission.py").write_text("raise ImportError('broken on import')\n")
    code, lines, stderr = _run_eval(wd, "test")
    assert code == 112 and "broken on import" in lines["error"] and "broken on import" in stderr
    code, lines, _ = _run_eval(wd, "nonsense")
    assert code == 113
    (wd / "cases.txt").write_text("size 5\n")
    code, lines, _ = _run_eval(wd, "test")
    assert code == 113 and lines["check"] == "fail"


def test_main_secret_seed_changes_inputs(tmp_path) -> None:
    # The submission hard-codes the answers for the public seeds: the secret seed defeats it.
    wd = _task_dir(
        tmp_path,
        textwrap.dedent("""
        def custom_kernel(data):
            gen = lambda size, seed: [float((seed * 31 + i) % 7) + 1 for i in range(size)]
            return gen(5, 1) if len(data) == 5 else gen(9, 2)
    """),
    )
    code, _, _ = _run_eval(wd, "test")
    assert code == 0
    os.environ["POPCORN_SEED"] = "12345"
    try:
        code, lines, _ = _run_eval(wd, "test")
    finally:
        del os.environ["POPCORN_SEED"]
    assert code == 112 and lines["check"] == "fail"
