"""What a result means for a campaign: its attempt status and its CLI exit class.

Statuses: ``pending`` (planned), ``running`` (submitted), ``success``, ``partial`` (interrupted:
the result holds what finished, or the campaign stopped under it), ``failed``, ``skipped``.
"""

from __future__ import annotations

from typing import Any, Literal

from contract.result import FullResult

Status = Literal["pending", "running", "success", "partial", "failed", "skipped"]
STATUSES: tuple[str, ...] = ("pending", "running", "success", "partial", "failed", "skipped")
#: A cell whose latest attempt has one of these is done; a resumed run skips it.
TERMINAL: frozenset[str] = frozenset({"success", "failed", "skipped"})
#: failure_stage of an attempt whose launcher raised (no result came back)
INFRA_STAGE = "infrastructure"

#: RunnerExit → CLI exit code (an interrupted run is an infrastructure outcome for the CLI).
_EXIT = {0: 0, 1: 1, 2: 2, 3: 3, 4: 3}


def exit_class(result: FullResult) -> int:
    """The CLI exit code of one result: 0 passed, 1 failed, 2 bad input, 3 infrastructure."""
    from contract.resultio import exit_code_for

    return _EXIT.get(int(exit_code_for(result)), 3)


def status_of(result: FullResult) -> Status:
    if result.passed:
        return "success"
    if result.kitebench.interrupted or result.kitebench.stage == "interrupted":
        return "partial"  # a cancel, a timeout, a signal: what finished is all there is
    return "failed"


def result_fields(result: FullResult) -> dict[str, Any]:
    """The store columns a result fills."""
    info = result.kitebench
    status = status_of(result)
    return {
        "status": status,
        "failure_stage": None if status == "success" else (info.stage or "run"),
        "error": None if status == "success" else (result.error or "the submission did not pass"),
        "score": info.score,
        "metric": info.score_info.metric if info.score_info else ("time" if info.score else None),
        # a kernel score without score_info is a time in seconds (lower is better)
        "ascending": info.score_info.ascending if info.score_info else True,
        "exit_code": exit_class(result),
        "result_json": result.to_json(indent=None),
    }
