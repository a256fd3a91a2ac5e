"""Small shared pieces of the model path: the stage error, log tails, phase timing."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import time
from pathlib import Path
from typing import Any

from contract.result import EvalResult, Phase, RunResult, Stage

TAIL_LINES = 40
TAIL_CHARS = 6000


class StageError(Exception):
    """A failure of one stage; ``internal`` marks the environment's fault, not the fork's."""

    def __init__(self, stage: Stage, message: str, *, internal: bool = False) -> None:
        super().__init__(message)
        self.stage: Stage = stage
        self.message = message
        self.internal = internal


def tail(text: str, lines: int = TAIL_LINES) -> str:
    out = "\n".join(text.rstrip().splitlines()[-lines:])
    return out[-TAIL_CHARS:]


def tail_file(path: Path | None, lines: int = TAIL_LINES) -> str:
    if path is None:
        return ""
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - 256 * 1024))
            return tail(f.read().decode("utf-8", "replace"), lines)
    except OSError:
        return ""


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class PhaseTimer:
    """Times one phase into a :class:`Phase` (success stays None until finished)."""

    def __init__(self, name: str, detail: str = "") -> None:
        self.phase = Phase(name=name, start=now(), detail=detail)
        self._t0 = time.monotonic()

    def finish(self, success: bool, detail: str | None = None) -> Phase:
        self.phase.end = now()
        self.phase.duration_s = round(time.monotonic() - self._t0, 3)
        self.phase.success = success
        if detail is not None:
            self.phase.detail = detail
        return self.phase


class PhaseCtx:
    """``with job._phase(name) as ph``: times the phase into ``phases``; an exception marks it
    failed."""

    def __init__(self, phases: list[Phase], name: str, detail: str) -> None:
        self.phases, self.name, self.detail = phases, name, detail
        self._failed: str | None = None

    def fail(self, detail: str) -> None:
        self._failed = detail

    def __enter__(self) -> PhaseCtx:
        self.timer = PhaseTimer(self.name, self.detail)
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        ok = exc_type is None and self._failed is None
        detail = self._failed or (
            exc.message.splitlines()[0][:500] if isinstance(exc, StageError) else self.detail
        )
        if exc_type is not None and not isinstance(exc, StageError):
            detail = f"{exc_type.__name__}: {exc}"[:500]
        self.phases.append(self.timer.finish(ok, detail))


#: How much of each log is copied next to result.json.
LOG_COPY_BYTES = 1 << 20


def copy_log_tails(work: Path, logs_dir: Path) -> None:
    """The tails of the install, server, reference server and bench logs (and the client's
    request records, the audit's evidence), next to result.json."""
    bench = work / "bench"
    sources = [
        work / "install.log",
        work / "server.log",
        work / "reference-server.log",
        *sorted(bench.glob("*/shape-*/bench.log")),
        *sorted(bench.glob("*/shape-*/result.json")),
        *sorted(bench.glob("*/shape-*/requests.jsonl")),
    ]
    for src in sources:
        if not src.is_file():
            continue
        rel = src.relative_to(work)
        dst = logs_dir / str(rel).replace(os.sep, "_")
        with contextlib.suppress(OSError):
            dst.parent.mkdir(parents=True, exist_ok=True)
            with open(src, "rb") as f:
                size = f.seek(0, 2)
                f.seek(max(0, size - LOG_COPY_BYTES))
                dst.write_bytes(f.read())


def eval_result(
    start: Any,
    passed: bool,
    command: str,
    keys: dict[str, str],
    *,
    stdout: str = "",
    stderr: str = "",
    exit_code: int,
    t0: float,
) -> EvalResult:
    """One run of a model job, kernelbot's shape (exit 112: a gate that judged "fail")."""
    run = RunResult(
        success=exit_code in (0, 112),
        passed=passed,
        command=command,
        stdout=stdout,
        stderr=stderr,
        exit_code=exit_code,
        duration=round(time.monotonic() - t0, 3),
        result=keys,
    )
    return EvalResult(start=start, end=now(), run=run)
