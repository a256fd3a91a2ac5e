"""What the built-in harness's judge costs per call, on the CPU.

For a null kernel and for vectoradd (NumPy) at several sizes, in this process acting as the judge
(the same code as ``eval.py``'s ``main()``), with the worker in sandbox mode ``none`` (``KITEBENCH_BENCH_SANDBOX=env``: the mode
this machine's runner would choose):

- ``in-process``: the kernel timed in one process (the field's harness), median ns;
- ``judged raw``: the judge's clock around the call to the worker (send → reply), median ns;
- ``overhead``: the calibrated echo (same bytes moved, no kernel), median ns; what is subtracted;
- ``judged``: raw − overhead, the number the judge reports per call (median);
- ``wall/call``: everything the judge does per call (pause, inputs, output copy), mean µs.

- ``- floor``: judged raw minus the pause floor (below): what the judge's own code adds.

Two floors, measured in the same run (before and after the table: on a shared machine they move
with the load): a 1-byte ping-pong between two forked processes over a socket pair (any
two-process design), and the *pause floor*: the same round trip to a Python process with NumPy
imported (the worker's threads) that is paused between calls and resumed by the call, as the
judge does it (SIGSTOP, every thread seen stopped; then send, SIGCONT, blocking receive): no
judge that pauses its worker can do a call for less on this machine.

Run: ``python benchmarks/judge_overhead.py [calls] [--pin same|split]`` (``--pin``: judge and
worker on one CPU, or on two different ones; default: where the scheduler puts them). Figures
are printed, not asserted; on a loaded machine the medians are what to read.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from runner.harness.judge import RemoteKernel, calibrate  # noqa: E402
from runner.harness.workerproc import WorkerProcess  # noqa: E402
from runner.sandbox import Sandbox, from_env  # noqa: E402

#: ``KITEBENCH_BENCH_SANDBOX=env`` to measure with the job's sandbox instead.
SANDBOX = (from_env(os.environ) if os.environ.get("KITEBENCH_BENCH_SANDBOX") == "env"
           else Sandbox(mode="none"))

SUBMISSION = """
import numpy as np
_none = np.zeros(0, dtype=np.float32)
def custom_kernel(data):
    a, b = data
    return a + b
def null_kernel(data):
    return _none
"""


def in_process(fn, data, calls: int) -> float:  # type: ignore[no-untyped-def]
    samples = []
    for _ in range(calls):
        t0 = time.perf_counter_ns()
        fn(data)
        samples.append(time.perf_counter_ns() - t0)
    return statistics.median(samples)


def judged(remote: RemoteKernel, data, calls: int) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    raw = []
    w0 = time.perf_counter_ns()
    for _ in range(calls):
        remote.prepare(data)
        t0 = time.perf_counter_ns()
        remote.invoke()
        t1 = time.perf_counter_ns()
        remote.collect()
        raw.append(t1 - t0)
    wall = (time.perf_counter_ns() - w0) / calls
    return statistics.median(raw), wall


ECHO_CHILD = """
import os, socket, numpy
s = socket.socket(fileno=int(os.environ["FLOOR_FD"]))
buf = memoryview(bytearray(1 << 16))
while n := s.recv_into(buf):
    s.send(buf[:n])
"""


def pause_floor(calls: int, pin: str | None) -> float:
    """Median ns of a round trip to a paused Python process, resumed by the call as the judge
    resumes its worker (the request queued first, then SIGCONT, then a blocking receive)."""
    import signal
    import socket
    import subprocess

    from runner.harness.workerproc import Threads

    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    proc = subprocess.Popen([sys.executable, "-c", ECHO_CHILD], pass_fds=(b.fileno(),),
                            env={**os.environ, "FLOOR_FD": str(b.fileno())})
    b.close()
    a.send(b"x")
    a.recv(16)  # started, NumPy imported
    _pin(proc.pid, pin)
    threads = Threads(proc.pid)
    samples = []
    for _ in range(calls):
        os.kill(proc.pid, signal.SIGSTOP)
        while not threads.all_stopped():
            time.sleep(0)
        t0 = time.perf_counter_ns()
        a.send(b"x")
        os.kill(proc.pid, signal.SIGCONT)
        a.recv(16)
        samples.append(time.perf_counter_ns() - t0)
    threads.close()
    a.close()
    proc.wait()
    return statistics.median(samples)


def _pin(pid: int, pin: str | None) -> None:
    """Judge (this process) on the first allowed CPU, every thread of ``pid`` on the same one
    (``same``) or on another (``split``)."""
    if pin is None:
        return
    cpus = sorted(os.sched_getaffinity(0))
    mine = cpus[0]
    theirs = mine if pin == "same" or len(cpus) == 1 else cpus[1]
    os.sched_setaffinity(0, {mine})
    for tid in os.listdir(f"/proc/{pid}/task"):
        os.sched_setaffinity(int(tid), {theirs})


def ping_pong_floor(calls: int) -> float:
    """Median ns of a 1-byte round trip between two forked processes (no Python around it)."""
    import socket

    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    pid = os.fork()
    if pid == 0:
        a.close()
        while msg := b.recv(16):
            b.send(msg)
        os._exit(0)
    b.close()
    samples = []
    for _ in range(calls):
        t0 = time.perf_counter_ns()
        a.send(b"x")
        a.recv(16)
        samples.append(time.perf_counter_ns() - t0)
    a.close()
    os.waitpid(pid, 0)
    return statistics.median(samples)


def main() -> None:
    import numpy as np

    args = sys.argv[1:]
    pin = None
    if "--pin" in args:
        i = args.index("--pin")
        pin = args[i + 1]
        del args[i : i + 2]
    calls = int(args[0]) if args else 500
    floors = [(ping_pong_floor(calls), pause_floor(calls, pin))]
    sizes = [0, 4096, 65536, 262144]
    with tempfile.TemporaryDirectory() as d:
        Path(d, "submission.py").write_text(textwrap.dedent(SUBMISSION))
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
        sys.path.insert(0, d)
        import submission  # the same code in this process, for the in-process column

        rows = []
        for entry in ("null_kernel", "custom_kernel"):
            worker = WorkerProcess(SANDBOX, d, env)
            remote = RemoteKernel(worker)
            datas = {}
            for n in sizes:
                rng = np.random.default_rng(n)
                datas[n] = (rng.standard_normal(n, dtype=np.float32),
                            rng.standard_normal(n, dtype=np.float32))
            fn = getattr(submission, entry)
            # every thread of the worker, NumPy's included: they exist once it decoded inputs
            calibrate(remote, datas[0], fn(datas[0]), 1)
            _pin(worker.pid, pin)
            overheads = {n: calibrate(remote, datas[n], fn(datas[n]), calls) for n in sizes}
            worker.request({"op": "import", "module": "submission", "entry": entry})
            worker.freeze()
            for n in sizes:
                inproc = in_process(fn, datas[n], calls)
                raw, wall = judged(remote, datas[n], calls)
                rows.append((entry, n, inproc, raw, overheads[n], raw - overheads[n], wall))
            worker.stop()
    floors.append((ping_pong_floor(calls), pause_floor(calls, pin)))
    pong = [f[0] for f in floors]
    pause = statistics.median([f[1] for f in floors])
    print(f"two-process ping-pong floor: {min(pong) / 1e3:.1f}-{max(pong) / 1e3:.1f} µs; pause "
          f"floor (resume a paused NumPy process, round trip): "
          f"{floors[0][1] / 1e3:.1f} µs before, {floors[1][1] / 1e3:.1f} µs after the table")
    print(f"{'kernel':<14}{'size':>8}{'in-process':>12}{'judged raw':>12}{'overhead':>10}"
          f"{'judged':>10}{'- floor':>10}{'wall/call':>11}")
    for entry, n, inproc, raw, over, net, wall in rows:
        print(f"{entry:<14}{n:>8}{inproc / 1e3:>10.1f}µs{raw / 1e3:>10.1f}µs{over / 1e3:>8.1f}µs"
              f"{net / 1e3:>8.1f}µs{(raw - pause) / 1e3:>8.1f}µs{wall / 1e3:>9.1f}µs")


if __name__ == "__main__":
    main()
