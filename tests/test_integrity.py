"""kitebench.integrity: the cross-checks that trust no harness (static scan, physical floor,
secret recheck), on foreign harnesses and the built-in one."""

from __future__ import annotations

import pytest

from contract.payload import PyPayload
from runner.kernels import integrity
from tests.judge_cheats import CHEATS, CORRECT, REFERENCE, STUB
from tests.kernels_support import py_payload, run_runner

#: A foreign harness that believes whatever it is told: it reports a 1 ns mean for every case.
FAKE_FAST_EVAL = """
import os, sys
mode, path = sys.argv[1], sys.argv[2]
cases = [l.strip() for l in open(path) if l.strip()]
fd = int(os.environ["POPCORN_FD"])
out = []
kind = "test" if mode == "test" else "benchmark"
out.append(f"{kind}-count: {len(cases)}")
for i, c in enumerate(cases):
    out += [f"{kind}.{i}.spec: {c}", f"{kind}.{i}.status: pass"]
    if kind == "benchmark":
        out += [f"benchmark.{i}.runs: 10", f"benchmark.{i}.mean: 1.0"]
out.append("check: pass")
os.write(fd, ("\\n".join(out) + "\\n").encode())
"""

#: Right for the public test seeds only: the answers are generated, not computed from inputs.
SEED_KEYED = """
import numpy as np

def custom_kernel(data):
    a, b = data
    if a.size == 127:  # test 0's public seed: replay its answer without looking at the inputs
        rng = np.random.default_rng(4242)
        x = rng.standard_normal(127, dtype=np.float32)
        return x + rng.standard_normal(127, dtype=np.float32)
    return a + b
"""


def _payload(**kw):  # type: ignore[no-untyped-def]
    return PyPayload.model_validate({"lang": "py", "main": "eval.py", **kw})


def _checks(run) -> dict[str, object]:  # type: ignore[no-untyped-def]
    return {c.check: c for c in run.result.kitebench.integrity}


def test_static_scan_names_the_lines() -> None:
    for name in ("protocol_forge_exit", "clock_patch", "frame_gc_inspection"):
        p = _payload(sources={"eval.py": STUB, "submission.py": CHEATS[name][0]})
        check = integrity.static_scan(p)
        assert check.verdict == "warn", name
        assert "submission.py:" in check.detail
    p = _payload(sources={"eval.py": STUB, "submission.py": CHEATS["protocol_forge_exit"][0]})
    detail = integrity.static_scan(p).detail
    assert "the protocol descriptor" in detail and "a hard exit" in detail
    clock = integrity.static_scan(
        _payload(sources={"eval.py": STUB, "submission.py": CHEATS["clock_patch"][0]})).detail
    assert "patching the clock" in clock and "time.perf_counter_ns = fake" in clock
    honest = _payload(sources={"eval.py": STUB, "submission.py": CORRECT,
                               "reference.py": "import ctypes  # the task's own file\n"})
    assert integrity.static_scan(honest).verdict == "pass"


def test_floor_expressions() -> None:
    assert integrity.evaluate("3 * 4 * size", {"size": 10}) == 120
    assert integrity.evaluate("2 * n ** 3 - 1", {"n": 2}) == 15
    for bad in ("__import__('os')", "size.real", "open('x')", "name * 2", "2 ** 1000"):
        with pytest.raises((ValueError, SyntaxError)):
            integrity.evaluate(bad, {"size": 1, "name": "fp16"})


def test_physical_floor_fails_a_foreign_harness_claiming_1ns(runner_env) -> None:
    payload = py_payload(FAKE_FAST_EVAL, mode="benchmark", benchmarks=[{"size": 1 << 20}],
                         integrity={"bytes": "3 * 4 * size"})
    run = run_runner(payload, runner_env)
    floor = _checks(run)["physical_floor"]
    assert floor.verdict == "fail" and "below the floor" in floor.detail
    assert not run.result.kitebench.passed and run.exit_code == 1
    assert "integrity check physical_floor failed" in run.result.error
    assert run.result.kitebench.score is None


def test_physical_floor_passes_real_times() -> None:
    p = _payload(sources={"eval.py": STUB}, integrity={"bytes": "12 * size"})
    res = {"benchmark.0.mean": "5e6"}  # 5 ms for 12 MB: slower than any memory
    check = integrity.physical_floor(p, res, [{"size": 1 << 20}])
    assert check is not None and check.verdict == "pass"


def test_physical_floor_reads_the_judges_raw_clock_only_from_the_judge() -> None:
    # a tiny kernel whose calibrated overhead ate its whole time: the judge's raw clock decides
    p = _payload(sources={"eval.py": STUB}, integrity={"bytes": "12 * size"})
    res = {"benchmark.0.mean": "1.0", "benchmark.0.raw_mean": "5e6"}
    judged = integrity.physical_floor(p, res, [{"size": 1 << 20}], judged=True)
    assert judged is not None and judged.verdict == "pass"
    # a foreign harness could write any raw_mean it likes: only its mean counts
    foreign = integrity.physical_floor(p, res, [{"size": 1 << 20}])
    assert foreign is not None and foreign.verdict == "fail"


def test_secret_recheck_catches_seed_keyed_answers(runner_env) -> None:
    payload = py_payload(
        STUB, files={"reference.py": REFERENCE, "submission.py": SEED_KEYED},
        mode="leaderboard", tests=[{"size": 127, "seed": 4242}],
        benchmarks=[{"size": 4096, "seed": 1}])
    run = run_runner(payload, runner_env)
    assert list(run.result.runs) == ["test", "benchmark", "leaderboard"]
    assert all(ev.run.passed for ev in run.result.runs.values())  # every run was fooled
    recheck = _checks(run)["secret_recheck"]
    assert recheck.verdict == "fail" and "mismatch" in recheck.detail
    assert not run.result.kitebench.passed


def test_honest_leaderboard_passes_every_check(runner_env) -> None:
    payload = py_payload(
        STUB, files={"reference.py": REFERENCE, "submission.py": CORRECT},
        mode="leaderboard", tests=[{"size": 127, "seed": 4242}],
        benchmarks=[{"size": 4096, "seed": 1}], integrity={"bytes": "3 * 4 * size"})
    run = run_runner(payload, runner_env)
    checks = _checks(run)
    assert run.result.kitebench.passed, (run.result.error, checks)
    assert {k: c.verdict for k, c in checks.items()} == {
        "static_scan": "pass", "physical_floor": "pass", "secret_recheck": "pass"}


#: A foreign harness that times honestly, in the submission's process (the field's way).
TIMING_EVAL = """
import os, sys, time
from reference import generate_input, ref_kernel
from submission import custom_kernel
import numpy as np
mode, path = sys.argv[1], sys.argv[2]
cases = [dict((k.strip(), int(v)) for k, v in (p.split(":") for p in l.split(";")))
         for l in open(path) if l.strip()]
fd = int(os.environ["POPCORN_FD"])
seed = int(os.environ.get("POPCORN_SEED", "0"))
kind = "test" if mode == "test" else "benchmark"
out = [f"{kind}-count: {len(cases)}"]
ok = True
for i, c in enumerate(cases):
    c["seed"] = c.get("seed", 0) + seed
    data = generate_input(**c)
    good = np.allclose(custom_kernel(data), ref_kernel(data), rtol=1e-5, atol=1e-5)
    ok = ok and good
    out.append(f"{kind}.{i}.status: {'pass' if good else 'fail'}")
    if kind == "benchmark":
        ts = []
        for _ in range(20):
            t0 = time.perf_counter_ns()
            custom_kernel(data)
            ts.append(time.perf_counter_ns() - t0)
        out.append(f"benchmark.{i}.mean: {sum(ts) / len(ts)}")
out.append(f"check: {'pass' if ok else 'fail'}")
os.write(fd, ("\\n".join(out) + "\\n").encode())
sys.exit(0 if ok else 112)
"""

#: Correct, but tells the foreign harness every call took a thousandth of its time.
CLOCK_DIVIDED = """
import time
_real = time.perf_counter_ns
time.perf_counter_ns = lambda: _real() // 1000

def custom_kernel(data):
    a, b = data
    return a + b
"""


def test_reference_ceiling_fails_a_patched_clock_in_a_foreign_harness(runner_env) -> None:
    payload = py_payload(
        TIMING_EVAL, files={"reference.py": REFERENCE, "submission.py": CLOCK_DIVIDED},
        mode="leaderboard", tests=[{"size": 127, "seed": 1}],
        benchmarks=[{"size": 1 << 18, "seed": 2}])
    run = run_runner(payload, runner_env)
    checks = _checks(run)
    assert all(ev.run.passed for ev in run.result.runs.values())  # the harness was fooled
    assert checks["reference_ceiling"].verdict == "fail", checks["reference_ceiling"].detail
    assert checks["static_scan"].verdict == "warn"
    assert not run.result.kitebench.passed


def test_reference_ceiling_passes_an_honest_foreign_run(runner_env) -> None:
    payload = py_payload(
        TIMING_EVAL, files={"reference.py": REFERENCE, "submission.py": CORRECT},
        mode="leaderboard", tests=[{"size": 127, "seed": 1}],
        benchmarks=[{"size": 1 << 18, "seed": 2}])
    run = run_runner(payload, runner_env)
    checks = _checks(run)
    assert run.result.kitebench.passed, (run.result.error, checks)
    assert checks["reference_ceiling"].verdict == "pass"
    assert checks["secret_recheck"].verdict == "pass"


def test_integrity_failures_reach_the_report_and_the_annotation() -> None:
    from contract.result import FullResult, IntegrityCheck, KitebenchInfo
    from host.publish import annotation
    from launcher.report import render_result as render

    result = FullResult(success=True, error="integrity check physical_floor failed: x",
                        kitebench=KitebenchInfo(integrity=[
                            IntegrityCheck(check="physical_floor", verdict="fail", detail="1 ns"),
                            IntegrityCheck(check="static_scan", verdict="pass")]))
    note = annotation(result)
    assert "| physical_floor | FAIL | 1 ns |" in note and "static_scan" not in note
    assert "integrity fail: physical_floor: 1 ns" in render(result)
