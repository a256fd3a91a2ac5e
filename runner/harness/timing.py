"""Timing: clocks, the field's stopping rule, statistics."""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from runner.harness.compare import _kind


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


class Clock(Protocol):
    """Times one call of ``fn(data)``: (nanoseconds, output)."""

    name: str

    def time(self, fn: Callable[[Any], Any], data: Any) -> tuple[float, Any]: ...

    def sync(self) -> None: ...


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
    fn: Callable[[Any], Any], data: Any, clock: Clock, opts: TimingOptions
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
    clock: Clock | None = None,
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

