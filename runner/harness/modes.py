"""A task and the modes (test, benchmark, leaderboard, profile), run against any kernel callable:
the submission's function itself (in-process) or the judge's proxy for its worker process."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import importlib
import io
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from runner.harness.compare import _kind, clone, compare
from runner.harness.protocol import (
    EXIT_PASS,
    EXIT_PIPE_FAILED,
    EXIT_TEST_SPEC,
    EXIT_VALIDATE_FAIL,
    MODES,
    Case,
    PopcornOutput,
    case_spec,
    mix_seed,
    read_cases,
    secret_seed,
)
from runner.harness.timing import (
    CheckFailed,
    Clock,
    TimingOptions,
    _uses_cuda,
    clock_for,
    measure,
    warm_up,
)


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


class RemoteError(Exception):
    """An error the worker reported (its text is already the kernel's exception)."""


#: ``clock_for_case(index, data)``: the clock for one benchmark case (the judge's own).
ClockForCase = Callable[[int, Any], Clock]
#: ``profiler(kernel, data)``: the base64 report of profile mode.
Profiler = Callable[[Callable[[Any], Any], Any], str]


def _error_text(e: BaseException) -> str:
    if isinstance(e, RemoteError):
        return str(e)[:2000]
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
    clock_for_case: ClockForCase | None = None,
    profiler: Profiler | None = None,
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
            clock = clock_for_case(i, data) if clock_for_case else clock_for(data)
            warm_up(kernel, data, clock, opts)
            fresh = _fresh_inputs(task, case, secret) if recheck else None
            stats = measure(kernel, data, opts=opts, fresh=fresh, clock=clock)
            if profile:
                out.log(f"benchmark.{i}.report", (profiler or _profile_report)(kernel, data))
            for key, value in getattr(clock, "finish", dict)().items():
                out.log(f"benchmark.{i}.{key}", value)
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
    *,
    clock_for_case: ClockForCase | None = None,
    profiler: Profiler | None = None,
) -> int:
    """Run one mode, write the verdict (``check``), return the exit code."""
    opts = opts or TimingOptions()
    if mode == "test":
        ok = run_tests(task, kernel, cases, out)
    elif mode in ("benchmark", "leaderboard"):
        ok = run_benchmarks(
            task, kernel, cases, out, recheck=mode == "leaderboard", opts=opts,
            clock_for_case=clock_for_case,
        )
    elif mode == "profile":
        short = dataclasses.replace(opts, max_repeats=min(opts.max_repeats, 10))
        ok = run_benchmarks(
            task, kernel, cases, out, recheck=False, opts=short, profile=True,
            clock_for_case=clock_for_case, profiler=profiler,
        )
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


def start(argv: Sequence[str] | None) -> tuple[str, list[Case], PopcornOutput]:
    """argv → (mode, cases, protocol output); exits with the field's code on bad usage. The
    current dir goes first on ``sys.path`` (the task's modules live there)."""
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
    return mode, cases, out


def fail_import(out: PopcornOutput, what: str, text: str) -> NoReturn:
    out.log("error", f"cannot load {what}: {text}")
    out.log("check", "fail")
    out.close()
    sys.exit(EXIT_VALIDATE_FAIL)


def main_inprocess(
    argv: Sequence[str] | None = None,
    *,
    task: Task | None = None,
    kernel: Callable[[Any], Any] | None = None,
    reference: str = "reference",
    submission: str = "submission",
    entry: str = "custom_kernel",
    opts: TimingOptions | None = None,
) -> NoReturn:
    """The harness and the submission in ONE process (the field's way; what ``main(task=...,
    kernel=...)`` does): the submission can reach everything the harness owns."""
    mode, cases, out = start(argv)
    task = task or load_task(reference)
    if kernel is None:
        try:
            kernel = getattr(importlib.import_module(submission), entry)
        except Exception as e:  # the submission failed to import: that is its verdict
            traceback.print_exc()
            fail_import(out, f"{submission}.{entry}", _error_text(e))
    try:
        code = run_mode(mode, cases, task, kernel, out, opts)
    except BrokenPipeError:
        sys.exit(EXIT_PIPE_FAILED)
    out.close()
    sys.exit(code)
