"""The judge: the trusted half of the built-in harness.

It owns what decides a verdict (the inputs, the expected outputs, the comparison, the clock, the
statistics and the POPCORN pipe) and never imports the submission. The submission runs in a
worker process (:mod:`runner.harness.worker`) started under the sandbox. One call:

1. with the worker paused (SIGSTOP, every thread stopped), the judge writes the inputs from its
   private copy into a shared memory region;
2. read the judge's clock, queue ``call``, resume the worker (SIGCONT: it wakes with the
   request already there, and nothing of it ran before the clock started);
3. the worker's reply arrives: read the clock again (the reply is parsed later);
4. pause the worker, copy the output out of the region, and check that copy.

So nothing of the submission runs while the judge writes inputs or reads the output, a kernel
cannot see the next inputs early, change them for the reference, or finish its work after it said
it was done. The per-call cost of steps 2-3 without any kernel is calibrated before the
submission is imported (a trusted echo of an output of the right size) and subtracted; it is
reported as ``benchmark.N.overhead``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from runner.harness import wire
from runner.harness.channel import MAX_MESSAGE, dump, load
from runner.harness.compare import clone
from runner.harness.modes import (
    CheckFailed,
    RemoteError,
    Task,
    fail_import,
    load_task,
    run_mode,
    start,
)
from runner.harness.protocol import EXIT_PIPE_FAILED, Case, mix_seed, secret_seed
from runner.harness.timing import TimingOptions
from runner.harness.workerproc import Region, WorkerGone, WorkerProcess, python_path
from runner.sandbox import Sandbox

#: The sandbox the runner chose for this job (JSON of :class:`Sandbox`'s fields).
ENV_SANDBOX = "KITEBENCH_JUDGE_SANDBOX"
#: Where the worker runs (the submission's work dir); default: the current dir.
ENV_WORKER_DIR = "KITEBENCH_JUDGE_WORKER_DIR"
#: Room for an output beyond its inputs (sparse: only bytes written take memory).
OUTPUT_SLACK = 256 * 1024 * 1024
#: Echo calls per benchmark case for the overhead calibration.
CALIBRATION_CALLS = 200
CLOCK_NAME = "judge_perf_counter_ns"


def sandbox_from_env(env: dict[str, str] | os._Environ[str]) -> Sandbox:
    raw = env.get(ENV_SANDBOX)
    if not raw:
        return Sandbox(mode="none")
    fields = json.loads(raw)
    fields["hidden"] = tuple(fields.get("hidden") or ())
    return Sandbox(**fields)


def sandbox_to_env(sb: Sandbox) -> str:
    return json.dumps(dataclasses.asdict(sb))


class RemoteKernel:
    """The submission's ``custom_kernel`` as the judge calls it: in the worker, through shared
    memory. ``prepare`` / ``invoke`` / ``collect`` are the untimed, timed and untimed parts."""

    def __init__(self, worker: WorkerProcess) -> None:
        self.w = worker
        self.region: Region | None = None
        self.out_off = 0
        self.cap = 0
        self.reply: dict[str, Any] = {}
        self.calls = 0
        self._last_msg: dict[str, Any] | None = None
        self._last_raw = b""
        self._raw_reply = b""
        self._last_reply_raw = b""

    def _ensure(self, need_in: int, need_out: int) -> Region:
        cap = max(need_out, 4 * need_in + OUTPUT_SLACK)
        if self.region is None or self.region.size < need_in + cap:
            if self.region is not None:
                self.region.close()
            self.region = Region(need_in + cap)
            self.w.thaw()
            reply = self.w.request({"op": "map", "size": self.region.size}, [self.region.fd])
            self.w.freeze()
            if not reply.get("ok"):
                raise WorkerGone(f"the worker could not map the region: {reply.get('error')}")
        self.out_off = wire._align(need_in)
        self.cap = self.region.size - self.out_off
        return self.region

    def prepare(self, data: Any, template: Any = None, op: str = "call") -> None:
        """Write ``data`` (and, for the ``echo`` calibration, an output ``template``) with the
        worker paused, and the request for :meth:`invoke` (the same bytes as the last call's
        when the layout did not change)."""
        if wire.has_cuda(data):
            raise CheckFailed("CUDA inputs cannot be judged through host shared memory yet")
        need_in = wire.nbytes(data) + wire.nbytes(template)
        region = self._ensure(need_in, 4 * wire.nbytes(template))
        if not self.w.frozen:
            self.w.freeze()
        in_meta, used = wire.encode(data, region.buf, 0, need_in)
        msg = {"op": op, "in": in_meta, "out": self.out_off, "cap": self.cap}
        if template is not None:
            msg["tmpl"], _ = wire.encode(template, region.buf, used, need_in - used)
        if msg != self._last_msg:
            raw = dump(msg)
            if len(raw) > MAX_MESSAGE:
                raise wire.WireError("the value has too many parts to describe in one message")
            self._last_msg, self._last_raw = msg, raw

    def invoke(self) -> None:
        """The timed part, nothing but the round trip (:meth:`WorkerProcess.call`): the reply
        is parsed after the clock has stopped."""
        self._raw_reply = self.w.call(self._last_raw)

    def _reply(self) -> dict[str, Any]:
        """The last reply, parsed (once per distinct reply: most calls repeat the last)."""
        raw = self._raw_reply
        if raw != self._last_reply_raw:
            try:
                self.reply = load(raw)
            except ValueError as e:  # not the worker's code talking any more
                self.w._gone(f"it sent a malformed reply ({e})")
            self._last_reply_raw = raw
        return self.reply

    def collect(self) -> Any:
        """Pause the worker, then decode a private copy of its output."""
        self.w.freeze()
        self.calls += 1
        reply = self._reply()
        if not reply.get("ok"):
            raise RemoteError(str(reply.get("error") or "the kernel failed"))
        assert self.region is not None
        try:
            return wire.decode(reply.get("out"), self.region.buf, copy=True)
        except wire.WireError as e:
            raise CheckFailed(f"the kernel's output could not be read: {e}") from None

    def __call__(self, data: Any) -> Any:
        self.prepare(data)
        self.invoke()
        return self.collect()

    def profile(self, _kernel: Callable[[Any], Any], data: Any) -> str:
        self.prepare(data, op="profile")
        self.invoke()
        self.w.freeze()
        reply = self._reply()
        if not reply.get("ok"):
            raise RemoteError(str(reply.get("error")))
        return str(reply.get("report", ""))


class JudgeClock:
    """The judge's ``perf_counter_ns`` around the worker's call, minus the calibrated cost of
    a call that does nothing but move the same bytes."""

    name = CLOCK_NAME

    def __init__(self, remote: RemoteKernel, overhead_ns: float) -> None:
        self.remote = remote
        self.overhead_ns = overhead_ns
        self.raw: list[float] = []
        self.checked = False

    def time(self, fn: Callable[[Any], Any], data: Any) -> tuple[float, Any]:
        r = self.remote
        if not self.checked:  # after warm-up: the timed calls must see the worker alone
            self._alone()
            self.checked = True
        r.prepare(data)
        t0 = time.perf_counter_ns()
        r.invoke()
        t1 = time.perf_counter_ns()
        out = r.collect()
        self.raw.append(float(t1 - t0))
        # floored at 1 ns: a mean of 0 would read as "no timing" to the score
        return max(float(t1 - t0) - self.overhead_ns, 1.0), out

    def sync(self) -> None:
        pass

    def _alone(self) -> None:
        others = self.remote.w.others()
        if others:
            raise CheckFailed(
                f"the submission runs other processes ({len(others)}) beside the worker while "
                "being timed: the judge could not pause them"
            )

    def finish(self) -> dict[str, str]:
        self._alone()
        raw_mean = statistics.fmean(self.raw) if self.raw else 0.0
        return {"overhead": f"{self.overhead_ns:.3f}", "raw_mean": f"{raw_mean:.3f}"}


def calibrate(remote: RemoteKernel, data: Any, template: Any, calls: int) -> float:
    """Median ns of ``calls`` echo round trips (inputs and an output of the real sizes, no
    kernel), each through the steps of a timed call (:meth:`JudgeClock.time`); run before the
    submission is imported, so it cannot slow them down to inflate what is subtracted."""
    samples = []
    for _ in range(calls):
        remote.prepare(data, template, op="echo")
        t0 = time.perf_counter_ns()
        remote.invoke()
        t1 = time.perf_counter_ns()
        try:  # what a timed call does after its clock stops, too
            remote.collect()
        except (RemoteError, CheckFailed):
            return 0.0
        samples.append(float(t1 - t0))
    return statistics.median(samples) if samples else 0.0


def calibrate_cases(remote: RemoteKernel, task: Task, cases: list[Case]) -> list[float]:
    secret = secret_seed()
    overheads = []
    for case in cases:
        data = task.generate_input(**mix_seed(case, secret))
        try:
            expected = task.reference(clone(data))
            overheads.append(calibrate(remote, data, expected, CALIBRATION_CALLS))
        except (wire.WireError, CheckFailed):
            overheads.append(0.0)
    return overheads


def judge(
    mode: str,
    cases: list[Case],
    task: Task,
    out: Any,
    *,
    sandbox: Sandbox,
    worker_dir: str,
    submission: str = "submission",
    entry: str = "custom_kernel",
    opts: TimingOptions | None = None,
    env: dict[str, str] | None = None,
) -> int:
    """Run one mode with the submission in a worker; returns the harness exit code."""
    worker = WorkerProcess(sandbox, worker_dir, dict(os.environ if env is None else env))
    try:
        remote = RemoteKernel(worker)
        overheads: list[float] = []
        if mode != "test":
            overheads = calibrate_cases(remote, task, cases)
        reply = worker.request({"op": "import", "module": submission, "entry": entry})
        if not reply.get("ok"):
            fail_import(out, f"{submission}.{entry}", str(reply.get("error")))
        worker.freeze()

        def clock_for_case(i: int, _data: Any) -> JudgeClock:
            return JudgeClock(remote, overheads[i] if i < len(overheads) else 0.0)

        return run_mode(mode, cases, task, remote, out, opts,
                        clock_for_case=clock_for_case, profiler=remote.profile)
    finally:
        worker.stop()


def relay_inprocess(mode: str, cases_path: str, out: Any, *, sandbox: Sandbox,
                    worker_dir: str) -> int:
    """CUDA inputs (until the CUDA IPC path exists): the whole in-process harness runs in the
    sandbox, as in the field, and its lines are passed on, marked as not judged."""
    import subprocess

    r, w = os.pipe()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KITEBENCH_")}
    env["POPCORN_FD"] = str(w)
    code = "from runner.harness.modes import main_inprocess; main_inprocess()"
    argv = sandbox.command([sys.executable, "-c", code, mode, cases_path], cwd=worker_dir,
                           readable=python_path(env))
    proc = subprocess.Popen(argv, cwd=worker_dir, env=env, stdin=subprocess.DEVNULL,
                            pass_fds=(w,), **sandbox.popen_kwargs())
    os.close(w)
    out.log("judge", "in-process: CUDA inputs are timed by the task harness in the "
            "submission's process (the judge's CUDA path is not built yet)")
    with os.fdopen(r, "rb") as f:
        for raw in f:
            key, sep, value = raw.decode("utf-8", "replace").rstrip("\n").partition(": ")
            if sep and key.strip() and not key.startswith(("judge", "kitebench")):
                out.log(key.strip(), value)
    rc = proc.wait()
    sandbox.kill_all()
    return rc


def main(
    argv: Sequence[str] | None = None,
    *,
    reference: str = "reference",
    submission: str = "submission",
    entry: str = "custom_kernel",
    opts: TimingOptions | None = None,
) -> NoReturn:
    """``eval.py <mode> <cases>`` as judge + worker (what the built-in stub runs)."""
    from runner.kernels.process import hide_from_same_user

    # the worker runs as the same uid where the sandbox has no uid of its own: it must not
    # ptrace this process or read its memory or descriptors (the POPCORN pipe)
    hide_from_same_user()
    mode, cases, out = start(argv)
    task = load_task(reference)
    sandbox = sandbox_from_env(os.environ)
    worker_dir = os.environ.get(ENV_WORKER_DIR) or os.getcwd()
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        if cases and wire.has_cuda(task.generate_input(**mix_seed(cases[0], secret_seed()))):
            code = relay_inprocess(mode, args[1], out, sandbox=sandbox, worker_dir=worker_dir)
        else:
            code = judge(mode, cases, task, out, sandbox=sandbox, worker_dir=worker_dir,
                         submission=submission, entry=entry, opts=opts)
    except BrokenPipeError:
        sys.exit(EXIT_PIPE_FAILED)
    except WorkerGone as e:
        out.log("error", f"judge: {e}")
        out.log("check", "fail")
        code = 112
    out.close()
    sys.exit(code)


if __name__ == "__main__":
    opts_raw = os.environ.get("KITEBENCH_JUDGE_OPTIONS")
    main(**(json.loads(opts_raw) if opts_raw else {}))
