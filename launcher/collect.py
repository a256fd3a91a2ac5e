"""A finished build → its FullResult: result.json when it has one, else why it has none.

After ANY terminal state the build's ``result.json`` artifact is downloaded (two-step redirect,
sha1-checked) and parsed with the contract; its own success/error are trusted. Without one, the
result is a failure naming the build/job state, ``exit_status``, ``signal_reason`` and the last
lines of the job log.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from contract.result import FullResult, RunnerExit
from contract.resultio import MAX_RESULT_BYTES, RESULT_NAME, ResultFileError, parse_result
from launcher.errors import InfraError, UsageError

if TYPE_CHECKING:
    from launcher.client import BuildkiteClient

LOG_TAIL_LINES = 50


class ResultCollector:
    """Downloads and parses results of finished builds through ``client``."""

    def __init__(self, client: BuildkiteClient, sleep: Callable[[float], None]) -> None:
        self.client = client
        self.sleep = sleep

    def collect(self, build: dict[str, Any], *, cancel_reason: str | None = None) -> FullResult:
        """The result of a terminal build (never raises: problems become failed results)."""
        number = int(build.get("number", 0))
        try:
            result = self.result_for(build)
        except Exception as e:  # noqa: BLE001 - errors are data here
            result = FullResult.failure(
                f"build #{number} {build.get('state')}: could not fetch {RESULT_NAME}: {error_text(e)}",
                "collect", RunnerExit.INTERNAL,
                details={"buildkite": facts(build, main_job(build))})
        if cancel_reason:
            result.kitebench.warnings.append(f"kitebench cancelled build #{number}: "
                                             f"{cancel_reason}")
        return result

    def result_for(self, build: dict[str, Any]) -> FullResult:
        """result.json of a finished build, or a failure that says why there is none."""
        number = int(build["number"])
        art = None
        for attempt in range(3):
            arts = self.client.list_artifacts(number)
            art = pick_result(arts, build)
            if art is None or art.get("state") == "finished":
                break
            # Listed but not uploaded yet: give the upload a moment.
            self.sleep(2.0 * (attempt + 1))
        if art is not None and art.get("state") == "finished":
            data = self.client.download_artifact(art, max_bytes=MAX_RESULT_BYTES)
            try:
                return parse_result(data)
            except ResultFileError as e:
                return FullResult.failure(
                    f"build #{number}: {e}", "collect", RunnerExit.INTERNAL,
                    details={"buildkite": facts(build, main_job(build))})
        return self.no_result(build)

    def no_result(self, build: dict[str, Any]) -> FullResult:
        number = int(build["number"])
        if "jobs" not in build:
            # A build from a webhook event has no job list; the job facts are worth one GET.
            with contextlib.suppress(InfraError, UsageError):
                build = {**build, **self.client.get_build(number)}
        job = main_job(build)
        found = facts(build, job)
        parts = [f"build #{number} {build.get('state')} without {RESULT_NAME}"]
        if job is not None:
            parts.append(f"job {job.get('state')}")
            parts.append(f"exit_status {job.get('exit_status')}")
            parts.append(f"signal_reason {job.get('signal_reason')}")
            if job.get("exit_status") == -1:
                parts.append("the agent was lost")
        else:
            parts.append("no job ran")
        tail = ""
        if job is not None and job.get("started_at"):
            try:
                text = self.client.job_log(number, str(job["id"]))
                tail = "\n".join(text.rstrip("\n").splitlines()[-LOG_TAIL_LINES:])
            except (InfraError, UsageError) as e:
                tail = f"(job log unavailable: {e.message})"
        msg = ", ".join(parts) + f" ({build.get('web_url')})"
        if tail:
            msg += f"\n--- last {LOG_TAIL_LINES} lines of the job log ---\n{tail}"
        canceled = build.get("state") == "canceled"
        return FullResult.failure(
            msg, "interrupted" if canceled else "internal",
            RunnerExit.INTERRUPTED if canceled else RunnerExit.INTERNAL,
            details={"buildkite": found, "log_tail": tail})


def main_job(build: dict[str, Any]) -> dict[str, Any] | None:
    """The job that ran the submission: the last script job that started (retries come later),
    else the last script job."""
    jobs = [j for j in build.get("jobs") or [] if j.get("type", "script") == "script"]
    started = [j for j in jobs if j.get("started_at")]
    return (started or jobs or [None])[-1]


def pick_result(arts: list[dict[str, Any]], build: dict[str, Any]) -> dict[str, Any] | None:
    cands = [a for a in arts if a.get("path") == RESULT_NAME
             or str(a.get("path", "")).endswith("/" + RESULT_NAME)]
    if not cands:
        return None
    order = {j.get("id"): i for i, j in enumerate(build.get("jobs") or [])}
    # Prefer finished uploads, then the latest job (a retry's result beats the first attempt's).
    cands.sort(key=lambda a: (a.get("state") == "finished", order.get(a.get("job_id"), -1),
                              a.get("path") == RESULT_NAME))
    return cands[-1]


def facts(build: dict[str, Any], job: dict[str, Any] | None) -> dict[str, Any]:
    out = {"build": build.get("number"), "state": build.get("state"),
           "web_url": build.get("web_url")}
    if job is not None:
        out.update(job_state=job.get("state"), exit_status=job.get("exit_status"),
                   signal=job.get("signal"), signal_reason=job.get("signal_reason"),
                   agent=(job.get("agent") or {}).get("name"))
    return out


def error_text(e: BaseException | None) -> str:
    if e is None:
        return "unknown error"
    return getattr(e, "message", None) or f"{type(e).__name__}: {e}"
