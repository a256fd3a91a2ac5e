"""The built-in harness as judge + worker, through ``python -m runner`` (process isolation): the
cheat corpus (tests/judge_cheats.py) fails or gains nothing, honest submissions pass and rank by
their real speed, and the pieces (the stub detector, the wire format) refuse what they must."""

from __future__ import annotations

import mmap
from typing import Any

import pytest

from runner.harness import wire
from runner.harness.stub import stub_options
from tests.judge_cheats import CHEATS, CORRECT, REFERENCE, SLOW_3X, STUB
from tests.kernels_support import RunnerRun, py_payload, run_runner

np = pytest.importorskip("numpy")

TESTS = [{"size": 127, "seed": 4242}, {"size": 1024, "seed": 5236}]
BENCH = [{"size": 4096, "seed": 31232}]


def _run(env: dict[str, str], submission: str, *, mode: str = "leaderboard",
         benchmarks: list[dict[str, Any]] | None = None, **extra: Any) -> RunnerRun:
    payload = py_payload(
        STUB,
        files={"reference.py": REFERENCE, "submission.py": submission},
        mode=mode,
        tests=TESTS,
        benchmarks=benchmarks or BENCH,
        **extra,
    )
    return run_runner(payload, env, timeout=600)


def _bench(run: RunnerRun, name: str = "leaderboard") -> dict[str, str]:
    ev = run.result.runs[name]
    assert ev.run is not None
    return ev.run.result


# --- the cheat corpus -----------------------------------------------------------------------

#: cheats whose only hope is a pass they do not earn: the verdict must be a failure
FAILING = ["protocol_forge_exit", "comparison_patch", "input_mutation", "output_cache",
           "input_alias", "frame_gc_inspection", "helper_process", "late_output_thread"]
#: cheats that fake a time: the run may pass, but with the real time
TIMING = ["clock_patch", "statistics_patch", "overhead_inflation"]


@pytest.mark.parametrize("name", FAILING)
def test_cheat_fails(runner_env, name) -> None:
    run = _run(runner_env, CHEATS[name][0])
    assert not run.result.kitebench.passed, f"{name} passed: {CHEATS[name][1]}"
    assert run.exit_code == 1
    assert run.result.kitebench.score is None
    # nothing the cheat wrote reached the verdict
    for ev in run.result.runs.values():
        assert ev.run is not None
        assert ev.run.result.get("benchmark.0.mean") != "1"


@pytest.mark.parametrize("name", TIMING)
def test_timing_cheat_gains_nothing(runner_env, name) -> None:
    run = _run(runner_env, CHEATS[name][0], mode="benchmark")
    assert run.result.kitebench.passed, run.result.error
    res = _bench(run, "benchmark")
    assert res["benchmark.0.clock"] == "judge_perf_counter_ns"
    # the kernel really takes 4 ms a call: the judge's clock says so whatever it patched
    assert float(res["benchmark.0.raw_mean"]) >= 3.5e6
    # calibrated before the submission was imported: its slowness is not subtracted (on a
    # loaded machine the subtracted overhead can reach a millisecond; a win would be µs)
    overhead = float(res["benchmark.0.overhead"])
    assert overhead < 3.5e6
    assert float(res["benchmark.0.mean"]) + overhead >= 3.5e6
    assert float(res["benchmark.0.best"]) >= 2e6


def test_forged_exit_is_reported_as_the_worker_dying(runner_env) -> None:
    run = _run(runner_env, CHEATS["protocol_forge_exit"][0], mode="test")
    res = run.result.runs["test"].run.result
    assert res["check"] == "fail"
    assert "worker process exited" in res["test.0.error"]


def test_helper_process_is_named(runner_env) -> None:
    run = _run(runner_env, CHEATS["helper_process"][0], mode="benchmark")
    res = _bench(run, "benchmark")
    assert res["benchmark.0.status"] == "fail"
    assert "other processes" in res["benchmark.0.error"]


def test_cheats_fail_without_namespaces(runner_env) -> None:
    # sandbox mode none (no uid, no namespaces): weaker, but the judge still owns the verdict
    env = {**runner_env, "KITEBENCH_SANDBOX_NAMESPACES": "0"}
    for name in ("protocol_forge_exit", "comparison_patch", "output_cache"):
        run = _run(env, CHEATS[name][0])
        assert run.result.kitebench.isolation["sandbox"]["mode"] == "none"
        assert not run.result.kitebench.passed, name


# --- honest submissions ---------------------------------------------------------------------


def test_correct_passes_with_judge_keys(runner_env) -> None:
    run = _run(runner_env, CORRECT)
    assert run.exit_code == 0 and run.result.kitebench.passed, run.result.error
    res = _bench(run)
    assert res["benchmark.0.clock"] == "judge_perf_counter_ns"
    assert float(res["benchmark.0.overhead"]) > 0
    assert float(res["benchmark.0.raw_mean"]) >= float(res["benchmark.0.mean"])
    assert run.result.kitebench.score is not None


def test_slower_solution_passes_and_ranks_below(runner_env) -> None:
    big = [{"size": 1 << 21, "seed": 7}]  # large enough that the kernel, not the IPC, dominates
    fast = _run(runner_env, CORRECT, mode="benchmark", benchmarks=big)
    slow = _run(runner_env, SLOW_3X, mode="benchmark", benchmarks=big)
    assert fast.result.kitebench.passed and slow.result.kitebench.passed
    f = float(_bench(fast, "benchmark")["benchmark.0.median"])
    s = float(_bench(slow, "benchmark")["benchmark.0.median"])
    # three adds against one (plus an allocation each): clearly slower, by less than 3x
    assert s > 1.4 * f, (f, s)
    assert slow.result.kitebench.score > fast.result.kitebench.score


# --- the pieces -----------------------------------------------------------------------------


def test_stub_detection() -> None:
    assert stub_options(STUB) == {}
    assert stub_options('"""doc"""\nfrom runner.harness import main\nmain()\n') == {}
    assert stub_options("from runner.harness import main\nmain(submission='sub')\n") == {
        "submission": "sub"}
    guarded = "from runner.harness import main\nif __name__ == '__main__':\n    main()\n"
    assert stub_options(guarded) == {}
    for other in (
        "from runner.harness import main\nimport os\nmain()\n",  # more code: a foreign harness
        "from runner.harness import main\nmain(task=make())\n",
        "from runner.harness import main as m\nm()\n",
        "from runner.harness import main\nmain(submission=name)\n",
        "import runner.harness\nrunner.harness.main()\n",
        "not python(",
    ):
        assert stub_options(other) is None, other


def test_wire_round_trip_and_refusals() -> None:
    buf = memoryview(mmap.mmap(-1, 1 << 16))
    value = {"x": np.arange(6, dtype=np.float32).reshape(2, 3), "n": 3, "f": float("nan"),
             "s": [np.float64(2.5), True, None, "text", (1, 2)]}
    meta, used = wire.encode(value, buf, 0, 1 << 15)
    assert used == wire.nbytes(value)
    back = wire.decode(meta, buf, copy=True)
    assert np.array_equal(back["x"], value["x"]) and back["x"].dtype == np.float32
    assert back["n"] == 3 and back["f"] != back["f"] and back["s"][4] == (1, 2)
    assert isinstance(back["s"][0], np.float64)
    # what a hostile worker could describe
    bad = [
        {"t": "numpy", "dtype": "|O", "shape": [1], "off": 0, "n": 8},
        {"t": "numpy", "dtype": "<f4", "shape": [10], "off": len(buf) - 8, "n": 40},
        {"t": "numpy", "dtype": "<f4", "shape": [4], "off": 0, "n": 8},
        {"t": "numpy", "dtype": "<f4", "shape": [-1], "off": 0, "n": 4},
        {"t": "pickle", "v": "..."},
        {"t": "dict", "k": [1], "v": [{"t": "py", "v": 1}]},
    ]
    for m in bad:
        with pytest.raises(wire.WireError):
            wire.decode(m, buf, copy=True)
    with pytest.raises(wire.WireError):
        wire.encode(np.zeros(1 << 14), buf, 0, 1024)  # does not fit
    with pytest.raises(wire.WireError):
        wire.encode(object(), buf, 0, 1024)


def test_profile_mode_through_the_judge(runner_env) -> None:
    import base64

    run = _run(runner_env, CORRECT, mode="profile")
    assert run.result.kitebench.passed, run.result.error
    ev = run.result.runs["profile.0"]
    assert ev.profile is not None and ev.profile.trace
    # the worker profiled the submission's own function
    assert "custom_kernel" in base64.b64decode(ev.profile.trace).decode()


_THREADED = """
import ctypes, sys, threading, time
def spin():
    while True:
        pass
for _ in range(int(sys.argv[1])):
    threading.Thread(target=spin, daemon=True).start()
print("up", flush=True)
if sys.argv[2] == "leader-exits":  # the main thread leaves, the others keep running
    ctypes.CDLL(None).pthread_exit(None)
while True:
    time.sleep(0.001)
"""


def _wait_for(pred: Any, timeout: float = 10.0) -> bool:
    import time

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.001)
    return False


@pytest.mark.parametrize("how", ["normal", "leader-exits"])
def test_pause_check_sees_every_thread(how) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    from runner.harness.workerproc import Threads

    proc = subprocess.Popen([sys.executable, "-c", _THREADED, "3", how], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"up\n"
        time.sleep(0.05)  # the leader has left (or sleeps); the spinning threads run
        threads = Threads(proc.pid)
        for _ in range(20):  # however often it looks, a running thread is seen
            assert not threads.all_stopped()
        os.kill(proc.pid, signal.SIGSTOP)
        assert _wait_for(threads.all_stopped)
        assert len(threads.others) == 3  # it learnt every thread besides the leader
        os.kill(proc.pid, signal.SIGCONT)
        assert _wait_for(lambda: not threads.all_stopped())
        threads.close()
    finally:
        proc.kill()
        proc.wait()


def test_channel_refuses_an_oversized_message_and_passes_descriptors() -> None:
    import os
    import socket

    from runner.harness.channel import MAX_MESSAGE, Channel

    mine, theirs = Channel.pair()
    other = Channel(theirs)
    with pytest.raises(ValueError):
        mine.send_bytes(b"x" * (MAX_MESSAGE + 1))
    theirs.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 2 * MAX_MESSAGE + 4096)
    theirs.send(b"x" * (MAX_MESSAGE + 1))  # a hostile peer skips the sender's check
    with pytest.raises(ValueError):
        mine.recv_bytes()
    r, w = os.pipe()
    other.send_bytes(b"fd", [r])
    data, fds = mine.recv_bytes(want_fds=1)
    assert data == b"fd" and len(fds) == 1
    os.write(w, b"!")
    assert os.read(fds[0], 1) == b"!"  # the same pipe, through the channel
    for fd in (r, w, *fds):
        os.close(fd)
    other.send_bytes(b"again")
    assert mine.recv_bytes() == (b"again", [])
    mine.close()
    other.close()
