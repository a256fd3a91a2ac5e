"""kitebench's built-in task harness: the field's POPCORN protocol, correctness and timing.

A task's ``eval.py`` can be two lines::

    from runner.harness import main
    main()

``main()`` reads ``<mode> <cases_file>`` from argv, imports ``reference`` (``generate_input``,
``ref_kernel``, optional ``check_implementation``, optional ``RTOL``/``ATOL``) and ``submission``
(``custom_kernel``), runs the mode and exits with the field's exit code (0 pass, 112 fail,
113 bad test spec, 111 no pipe). ``python -m runner.harness <mode> <cases>`` does the same in the
current directory. Everything is also usable piecemeal (:func:`compare`, :func:`measure`,
:class:`PopcornOutput`). See docs/harness.md.

Timing: CUDA events with a 256 MiB L2 flush before each timed call when the inputs live on a CUDA
device, ``perf_counter_ns`` otherwise. Each benchmark case is checked, then warmed up, then timed
until the relative standard error of the mean is below 0.1 % (at least 3 runs) or the run/time cap
is hit. Leaderboard mode generates fresh inputs (a new seed) for every timed call and checks each
output. torch is imported only when the data holds torch tensors.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import dataclasses
import importlib
import io
import math
import os
import statistics
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

EXIT_PASS = 0
EXIT_CUDA_FAIL = 110
EXIT_PIPE_FAILED = 111
EXIT_VALIDATE_FAIL = 112
EXIT_TEST_SPEC = 113

MODES = ("test", "benchmark", "leaderboard", "profile")
Case = dict[str, Any]

# ---------------------------------------------------------------------------------------------
# protocol
# ---------------------------------------------------------------------------------------------


class PopcornOutput:
    """Writes ``key: value`` lines to ``POPCORN_FD`` (stdout when it is not set, for running a
    harness by hand). Newlines in values are escaped so each key stays on one line."""

    def __init__(self, fd: int | None = None) -> None:
        if fd is None:
            raw = os.environ.get("POPCORN_FD")
            fd = int(raw) if raw else None
        if fd is None:
            self._file: io.TextIOBase = sys.stdout  # type: ignore[assignment]
            self._own = False
        else:
            self._file = os.fdopen(fd, "w", buffering=1, encoding="utf-8", errors="replace")
            self._own = True

    def log(self, key: str, value: Any) -> None:
        text = str(value).replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")
        self._file.write(f"{key}: {text}\n")
        self._file.flush()

    def close(self) -> None:
        if self._own:
            with contextlib.suppress(OSError):
                self._file.close()


def parse_case(line: str) -> Case:
    """``size: 1024; seed: 42`` → ``{"size": 1024, "seed": 42}`` (ints and floats converted)."""
    case: Case = {}
    for part in line.split(";"):
        if not part.strip():
            continue
        key, sep, value = part.partition(":")
        if not sep or not key.strip():
            raise ValueError(f"bad test spec {line!r}: expected 'key: value; key: value'")
        case[key.strip()] = _convert(value.strip())
    return case


def _convert(value: str) -> Any:
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    return value


def case_spec(case: Case) -> str:
    return "; ".join(
        f"{k}: {str(v).lower() if isinstance(v, bool) else v}" for k, v in case.items()
    )


def read_cases(path: str) -> list[Case]:
    with open(path, encoding="utf-8") as f:
        return [parse_case(line) for line in f if line.strip()]


def secret_seed() -> int | None:
    raw = os.environ.get("POPCORN_SEED")
    return int(raw) if raw else None


def mix_seed(case: Case, secret: int | None, offset: int = 0) -> Case:
    """The case with its ``seed`` moved by the secret seed (and ``offset`` for fresh inputs)."""
    if "seed" not in case or not isinstance(case["seed"], int):
        return dict(case)
    out = dict(case)
    out["seed"] = (case["seed"] + (secret or 0) + offset) % (2**31 - 1)
    return out


# ---------------------------------------------------------------------------------------------
# correctness
# ---------------------------------------------------------------------------------------------


def _kind(x: Any) -> str:
    mod = type(x).__module__.split(".", 1)[0]
    if mod == "torch" and hasattr(x, "shape"):
        return "torch"
    if mod == "numpy" and hasattr(x, "shape"):
        return "numpy"
    return "py"


def compare(output: Any, expected: Any, *, rtol: float, atol: float, limit: int = 3) -> str | None:
    """None when ``output`` matches ``expected`` within ``|out - exp| <= atol + rtol * |exp|``
    elementwise, else a description of the mismatch. NaN must meet NaN and inf the same inf:
    a NaN or inf where the reference has none (or the reverse) is a mismatch."""
    ko, ke = _kind(output), _kind(expected)
    if ke != "py" or ko != "py":
        if ko != ke:
            return f"expected a {ke} array, got {type(output).__name__}"
        if tuple(output.shape) != tuple(expected.shape):
            return f"shape mismatch: got {tuple(output.shape)}, expected {tuple(expected.shape)}"
        return (
            _compare_torch(output, expected, rtol, atol, limit)
            if ke == "torch"
            else (_compare_numpy(output, expected, rtol, atol, limit))
        )
    if isinstance(expected, (list, tuple)):
        if not isinstance(output, (list, tuple)) or len(output) != len(expected):
            return f"expected a sequence of {len(expected)} items, got {_describe(output)}"
        bad = []
        for i, (o, e) in enumerate(zip(output, expected, strict=True)):
            err = compare(o, e, rtol=rtol, atol=atol, limit=limit)
            if err:
                bad.append(f"[{i}]: {err}")
                if len(bad) >= limit:
                    break
        return "; ".join(bad) or None
    if isinstance(expected, dict):
        if not isinstance(output, dict) or set(output) != set(expected):
            return f"expected a dict with keys {sorted(expected)}, got {_describe(output)}"
        for key in expected:
            err = compare(output[key], expected[key], rtol=rtol, atol=atol, limit=limit)
            if err:
                return f"[{key!r}]: {err}"
        return None
    if isinstance(expected, (int, float)) and not isinstance(expected, bool):
        if not isinstance(output, (int, float)) or isinstance(output, bool):
            return f"expected a number, got {_describe(output)}"
        return (
            None
            if _close(float(output), float(expected), rtol, atol)
            else (f"got {output!r}, expected {expected!r}")
        )
    return (
        None if output == expected else f"got {_describe(output)}, expected {_describe(expected)}"
    )


def _describe(x: Any) -> str:
    r = repr(x)
    return r if len(r) <= 80 else type(x).__name__


def _close(o: float, e: float, rtol: float, atol: float) -> bool:
    if math.isnan(o) or math.isnan(e):
        return math.isnan(o) and math.isnan(e)
    if math.isinf(o) or math.isinf(e):
        return o == e
    return abs(o - e) <= atol + rtol * abs(e)


def _compare_torch(out: Any, exp: Any, rtol: float, atol: float, limit: int) -> str | None:
    import torch

    o = out.detach().to(exp.device).to(torch.float64)
    e = exp.detach().to(torch.float64)
    nan_o, nan_e = torch.isnan(o), torch.isnan(e)
    inf_o, inf_e = torch.isinf(o), torch.isinf(e)
    finite = ~(nan_o | nan_e | inf_o | inf_e)
    close = (o - e).abs() <= atol + rtol * e.abs()
    bad = (nan_o != nan_e) | ((inf_o | inf_e) & (o != e) & ~(nan_o | nan_e)) | (finite & ~close)
    count = int(bad.sum().item())
    if not count:
        return None
    idx = torch.nonzero(bad)[:limit].tolist()
    items = [
        f"at {tuple(i)}: got {o[tuple(i)].item()!r}, expected {e[tuple(i)].item()!r}" for i in idx
    ]
    return f"{count} of {bad.numel()} elements mismatch (rtol={rtol}, atol={atol}); " + "; ".join(
        items
    )


def _compare_numpy(out: Any, exp: Any, rtol: float, atol: float, limit: int) -> str | None:
    import numpy as np

    o = np.asarray(out, dtype=np.float64)
    e = np.asarray(exp, dtype=np.float64)
    nan_o, nan_e = np.isnan(o), np.isnan(e)
    inf_o, inf_e = np.isinf(o), np.isinf(e)
    finite = ~(nan_o | nan_e | inf_o | inf_e)
    with np.errstate(invalid="ignore", over="ignore"):
        close = np.abs(o - e) <= atol + rtol * np.abs(e)
        bad = (nan_o != nan_e) | ((inf_o | inf_e) & (o != e) & ~(nan_o | nan_e)) | (finite & ~close)
    count = int(bad.sum())
    if not count:
        return None
    idx = np.argwhere(bad)[:limit].tolist()
    items = [
        f"at {tuple(i)}: got {float(o[tuple(i)]):.7g}, expected {float(e[tuple(i)]):.7g}"
        for i in idx
    ]
    return f"{count} of {bad.size} elements mismatch (rtol={rtol}, atol={atol}); " + "; ".join(
        items
    )


def clone(data: Any) -> Any:
    """A deep copy of inputs (tensors and arrays cloned), so a kernel that writes into its inputs
    cannot change what the reference sees."""
    kind = _kind(data)
    if kind == "torch":
        return data.clone()
    if kind == "numpy":
        return data.copy()
    if isinstance(data, tuple):
        return tuple(clone(x) for x in data)
    if isinstance(data, list):
        return [clone(x) for x in data]
    if isinstance(data, dict):
        return {k: clone(v) for k, v in data.items()}
    return copy.deepcopy(data)


# ---------------------------------------------------------------------------------------------
# timing
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Stats:
    """Durations in nanoseconds."""

    runs: int
    mean: float
    std: float
    err: float  #: standard error of the mean
    best: float
    worst: float
    median: float

    @classmethod
    def of(cls, durations: Sequence[float]) -> Stats:
        n = len(durations)
        mean = statistics.fmean(durations)
        std = statistics.stdev(durations) if n > 1 else 0.0
        return cls(
            runs=n,
            mean=mean,
            std=std,
            err=std / math.sqrt(n),
            best=min(durations),
            worst=max(durations),
            median=statistics.median(durations),
        )


def _uses_cuda(data: Any) -> bool:
    if _kind(data) == "torch":
        return bool(data.is_cuda)
    if isinstance(data, (list, tuple)):
        return any(_uses_cuda(x) for x in data)
    if isinstance(data, dict):
        return any(_uses_cuda(x) for x in data.values())
    return False


class CpuClock:
    name = "perf_counter_ns"

    def time(self, fn: Callable[[Any], Any], data: Any) -> tuple[float, Any]:
        t0 = time.perf_counter_ns()
        out = fn(data)
        return float(time.perf_counter_ns() - t0), out

    def sync(self) -> None:
        pass


class CudaClock:
    """CUDA events around one call, after flushing L2 by writing a 256 MiB buffer."""

    name = "cuda_events"
    FLUSH_BYTES = 256 * 1024 * 1024

    def __init__(self) -> None:
        import torch

        self.torch = torch
        self.flush = torch.empty(self.FLUSH_BYTES, dtype=torch.int8, device="cuda")

    def time(self, fn: Callable[[Any], Any], data: Any) -> tuple[float, Any]:
        torch = self.torch
        self.flush.zero_()
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        out = fn(data)
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end) * 1e6, out

    def sync(self) -> None:
        self.torch.cuda.synchronize()


_cuda_clock: CudaClock | None = None


def clock_for(data: Any) -> CpuClock | CudaClock:
    """The clock for inputs: CUDA events when they live on a GPU (one flush buffer per process)."""
    global _cuda_clock
    if not _uses_cuda(data):
        return CpuClock()
    if _cuda_clock is None:
        _cuda_clock = CudaClock()
    return _cuda_clock


@dataclasses.dataclass
class TimingOptions:
    max_repeats: int = 100
    max_time_s: float = 10.0
    min_runs: int = 3
    target_rse: float = 0.001  #: stop when err / mean drops below this (0.1 %)
    warmup_calls: int = 3
    warmup_time_s: float = 0.025


class CheckFailed(Exception):
    pass


def warm_up(
    fn: Callable[[Any], Any], data: Any, clock: CpuClock | CudaClock, opts: TimingOptions
) -> None:
    """At least ``warmup_calls`` calls and ``warmup_time_s`` of them (first-call costs such as
    lazy loading, autotuning and allocator growth stay out of the timed runs)."""
    t0 = time.perf_counter()
    calls = 0
    while calls < opts.warmup_calls or (
        time.perf_counter() - t0 < opts.warmup_time_s and calls < 10_000
    ):
        fn(data)
        calls += 1
    clock.sync()


def measure(
    fn: Callable[[Any], Any],
    data: Any,
    *,
    opts: TimingOptions | None = None,
    fresh: Callable[[int], tuple[Any, Callable[[Any], str | None]]] | None = None,
    clock: CpuClock | CudaClock | None = None,
) -> Stats:
    """Time ``fn(data)`` with the field's stopping rule. With ``fresh``, every timed call gets new
    inputs from ``fresh(i)`` (which also returns a check for that call's output; a failing check
    raises :class:`CheckFailed`)."""
    opts = opts or TimingOptions()
    clock = clock or clock_for(data)
    durations: list[float] = []
    deadline = time.perf_counter_ns() + opts.max_time_s * 1e9
    for i in range(opts.max_repeats):
        check = None
        if fresh is not None:
            data, check = fresh(i)
            clock.sync()
        ns, out = clock.time(fn, data)
        if check is not None:
            err = check(out)
            if err:
                raise CheckFailed(f"timed run {i} with fresh inputs: {err}")
        durations.append(ns)
        if len(durations) >= opts.min_runs:
            st = Stats.of(durations)
            if st.mean > 0 and st.err / st.mean < opts.target_rse:
                break
            if time.perf_counter_ns() > deadline:
                break
    return Stats.of(durations)


# ---------------------------------------------------------------------------------------------
# a task and the modes
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Task:
    """What the harness needs from a task. ``check(data, output)`` replaces the rtol/atol
    comparison with ``reference(data)`` when given; it returns an error text ("" or None = ok),
    a bool, or the field's ``(ok, message)``."""

    generate_input: Callable[..., Any]
    reference: Callable[[Any], Any]
    rtol: float = 1e-5
    atol: float = 1e-8
    check: Callable[[Any, Any], Any] | None = None

    def verify(self, pristine: Any, output: Any) -> str | None:
        if self.check is not None:
            verdict = self.check(clone(pristine), output)
            if isinstance(verdict, tuple):
                ok, msg = verdict[0], (verdict[1] if len(verdict) > 1 else "")
                return None if ok else (str(msg) or "check_implementation failed")
            if isinstance(verdict, bool):
                return None if verdict else "check_implementation failed"
            return str(verdict) if verdict else None
        expected = self.reference(clone(pristine))
        return compare(output, expected, rtol=self.rtol, atol=self.atol)


def _error_text(e: BaseException) -> str:
    text = f"{type(e).__name__}: {e}"
    return text if len(text) <= 2000 else text[:2000] + "..."


def run_tests(
    task: Task, kernel: Callable[[Any], Any], cases: list[Case], out: PopcornOutput
) -> bool:
    secret = secret_seed()
    out.log("test-count", len(cases))
    ok_all = bool(cases)
    for i, case in enumerate(cases):
        out.log(f"test.{i}.spec", case_spec(case))
        try:
            data = task.generate_input(**mix_seed(case, secret))
            pristine = clone(data)
            output = kernel(data)
            err = task.verify(pristine, output)
        except Exception as e:
            traceback.print_exc()
            err = _error_text(e)
        if err:
            ok_all = False
            out.log(f"test.{i}.status", "fail")
            out.log(f"test.{i}.error", err)
        else:
            out.log(f"test.{i}.status", "pass")
    if not cases:
        out.log("test.error", "no test cases: nothing was checked")
    return ok_all


def run_benchmarks(
    task: Task,
    kernel: Callable[[Any], Any],
    cases: list[Case],
    out: PopcornOutput,
    *,
    recheck: bool,
    opts: TimingOptions,
    profile: bool = False,
) -> bool:
    secret = secret_seed()
    out.log("benchmark-count", len(cases))
    ok_all = bool(cases)
    for i, case in enumerate(cases):
        out.log(f"benchmark.{i}.spec", case_spec(case))
        try:
            data = task.generate_input(**mix_seed(case, secret))
            pristine = clone(data)
            err = task.verify(pristine, kernel(data))  # correctness first; also the first warm-up
            if err:
                raise CheckFailed(err)
            clock = clock_for(data)
            warm_up(kernel, data, clock, opts)
            fresh = _fresh_inputs(task, case, secret) if recheck else None
            stats = measure(kernel, data, opts=opts, fresh=fresh, clock=clock)
            if profile:
                out.log(f"benchmark.{i}.report", _profile_report(kernel, data))
        except Exception as e:
            if not isinstance(e, CheckFailed):
                traceback.print_exc()
            ok_all = False
            out.log(f"benchmark.{i}.status", "fail")
            out.log(
                f"benchmark.{i}.error", _error_text(e) if not isinstance(e, CheckFailed) else str(e)
            )
            continue
        out.log(f"benchmark.{i}.status", "pass")
        out.log(f"benchmark.{i}.runs", stats.runs)
        for key in ("mean", "std", "err", "best", "worst", "median"):
            out.log(f"benchmark.{i}.{key}", f"{getattr(stats, key):.3f}")
        out.log(f"benchmark.{i}.clock", clock.name)
    if not cases:
        out.log("benchmark.error", "no benchmark cases: nothing was timed")
    return ok_all


def _fresh_inputs(
    task: Task, case: Case, secret: int | None
) -> Callable[[int], tuple[Any, Callable[[Any], str | None]]]:
    def fresh(i: int) -> tuple[Any, Callable[[Any], str | None]]:
        data = task.generate_input(**mix_seed(case, secret, offset=i + 1))
        pristine = clone(data)
        return data, lambda output: task.verify(pristine, output)

    return fresh


def _profile_report(kernel: Callable[[Any], Any], data: Any, calls: int = 10) -> str:
    """A profiler table (torch.profiler for torch inputs, cProfile otherwise), base64-encoded so
    it travels as one protocol line (the field's convention for ``benchmark.N.report``)."""
    if _kind(data) == "torch" or (
        isinstance(data, (list, tuple)) and any(_kind(x) == "torch" for x in data)
    ):
        import torch
        from torch.profiler import ProfilerActivity, profile

        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if _uses_cuda(data) else [])
        with profile(activities=acts) as prof:
            for _ in range(calls):
                kernel(data)
            if _uses_cuda(data):
                torch.cuda.synchronize()
        sort = "cuda_time_total" if _uses_cuda(data) else "cpu_time_total"
        text = prof.key_averages().table(sort_by=sort, row_limit=20)
    else:
        import cProfile
        import pstats

        prof = cProfile.Profile()
        prof.enable()
        for _ in range(calls):
            kernel(data)
        prof.disable()
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(20)
        text = buf.getvalue()
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def run_mode(
    mode: str,
    cases: list[Case],
    task: Task,
    kernel: Callable[[Any], Any],
    out: PopcornOutput,
    opts: TimingOptions | None = None,
) -> int:
    """Run one mode, write the verdict (``check``), return the exit code."""
    opts = opts or TimingOptions()
    if mode == "test":
        ok = run_tests(task, kernel, cases, out)
    elif mode in ("benchmark", "leaderboard"):
        ok = run_benchmarks(task, kernel, cases, out, recheck=mode == "leaderboard", opts=opts)
    elif mode == "profile":
        short = dataclasses.replace(opts, max_repeats=min(opts.max_repeats, 10))
        ok = run_benchmarks(task, kernel, cases, out, recheck=False, opts=short, profile=True)
    else:
        raise ValueError(f"unknown mode {mode!r} (expected one of {', '.join(MODES)})")
    out.log("check", "pass" if ok else "fail")
    return EXIT_PASS if ok else EXIT_VALIDATE_FAIL


def load_task(module: str = "reference") -> Task:
    """A :class:`Task` from a reference module following reference-kernels' names."""
    ref = importlib.import_module(module)
    return Task(
        generate_input=ref.generate_input,
        reference=ref.ref_kernel,
        rtol=float(getattr(ref, "RTOL", getattr(ref, "rtol", 1e-5))),
        atol=float(getattr(ref, "ATOL", getattr(ref, "atol", 1e-8))),
        check=getattr(ref, "check_implementation", None),
    )


def main(
    argv: Sequence[str] | None = None,
    *,
    task: Task | None = None,
    kernel: Callable[[Any], Any] | None = None,
    reference: str = "reference",
    submission: str = "submission",
    entry: str = "custom_kernel",
    opts: TimingOptions | None = None,
) -> NoReturn:
    """``eval.py <mode> <cases_file>``: run and exit with the field's exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2 or args[0] not in MODES:
        print(f"usage: eval.py {{{'|'.join(MODES)}}} CASES_FILE", file=sys.stderr)
        sys.exit(EXIT_TEST_SPEC)
    mode, path = args
    try:
        out = PopcornOutput()
    except (OSError, ValueError) as e:
        print(f"cannot open POPCORN_FD: {e}", file=sys.stderr)
        sys.exit(EXIT_PIPE_FAILED)
    try:
        cases = read_cases(path)
    except (OSError, ValueError) as e:
        print(f"cannot read the cases file: {e}", file=sys.stderr)
        out.log("check", "fail")
        sys.exit(EXIT_TEST_SPEC)
    if cwd := os.getcwd():
        with contextlib.suppress(ValueError):
            sys.path.remove(cwd)
        sys.path.insert(0, cwd)
    task = task or load_task(reference)
    if kernel is None:
        try:
            kernel = getattr(importlib.import_module(submission), entry)
        except Exception as e:  # the submission failed to import: that is its verdict
            traceback.print_exc()
            out.log("error", f"cannot load {submission}.{entry}: {_error_text(e)}")
            out.log("check", "fail")
            sys.exit(EXIT_VALIDATE_FAIL)
    try:
        code = run_mode(mode, cases, task, kernel, out, opts)
    except BrokenPipeError:
        sys.exit(EXIT_PIPE_FAILED)
    out.close()
    sys.exit(code)


if __name__ == "__main__":
    main()
