"""kitebench's built-in task harness: the field's POPCORN protocol, correctness and timing.

A task's ``eval.py`` can be two lines::

    from runner.harness import main
    main()

``main()`` reads ``<mode> <cases_file>`` from argv and runs the mode as a *judge* (this process:
inputs, reference, comparison, clock, statistics, the POPCORN pipe) and a *worker* (a separate
process under the submission's sandbox, the only one that imports ``submission``), which trade
inputs and outputs through shared memory. The runner recognises that stub and starts the judge
itself, as the runner's user. Exit codes: 0 pass, 112 fail, 113 bad test spec, 111 no pipe.
``main(task=..., kernel=...)`` runs everything in one process instead (the field's way).
See docs/harness.md. The pieces: :mod:`.protocol`, :mod:`.compare`, :mod:`.timing`,
:mod:`.modes`, :mod:`.judge`, :mod:`.worker`, :mod:`.wire`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from runner.harness.compare import clone, compare
from runner.harness.modes import (
    RemoteError,
    Task,
    load_task,
    main_inprocess,
    run_benchmarks,
    run_mode,
    run_tests,
)
from runner.harness.protocol import (
    EXIT_CUDA_FAIL,
    EXIT_PASS,
    EXIT_PIPE_FAILED,
    EXIT_TEST_SPEC,
    EXIT_VALIDATE_FAIL,
    MODES,
    Case,
    PopcornOutput,
    case_spec,
    mix_seed,
    parse_case,
    read_cases,
    secret_seed,
)
from runner.harness.timing import (
    CheckFailed,
    Clock,
    CpuClock,
    CudaClock,
    Stats,
    TimingOptions,
    clock_for,
    measure,
    warm_up,
)

__all__ = [
    "EXIT_CUDA_FAIL", "EXIT_PASS", "EXIT_PIPE_FAILED", "EXIT_TEST_SPEC", "EXIT_VALIDATE_FAIL",
    "MODES", "Case", "CheckFailed", "Clock", "CpuClock", "CudaClock", "PopcornOutput",
    "RemoteError", "Stats", "Task", "TimingOptions", "case_spec", "clock_for", "clone",
    "compare", "load_task", "main", "main_inprocess", "measure", "mix_seed", "parse_case",
    "read_cases", "run_benchmarks", "run_mode", "run_tests", "secret_seed", "warm_up",
]


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
    """``eval.py <mode> <cases_file>``: judge + worker, or all in one process when ``task`` or
    ``kernel`` are given as objects (they cannot be sent to another process)."""
    if task is not None or kernel is not None:
        main_inprocess(argv, task=task, kernel=kernel, reference=reference,
                       submission=submission, entry=entry, opts=opts)
    from runner.harness.judge import main as judge_main

    judge_main(argv, reference=reference, submission=submission, entry=entry, opts=opts)
