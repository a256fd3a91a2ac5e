"""The Buildkite backend: payload → build on a per-GPU queue → result.json → FullResult.

Policy lives here; HTTP lives in :mod:`launcher.client` (this module never touches requests).

* **Create, idempotently.** Every submission gets a unique ``kitebench_id`` in the build's
  ``meta_data``. Buildkite's POST is not idempotent: after an ambiguous failure (timeout, reset,
  5xx) the build is looked up by ``meta_data[kitebench_id]`` before a second POST, and if the
  lookup itself fails we give up rather than risk two builds.
* **Wait, batched.** One loop follows every build of a :meth:`BuildkiteLauncher.submit_many` call
  with list requests filtered by the batch's ``meta_data[kitebench_batch]`` (``per_page=100``),
  not one GET per build per interval, and reports progress through :class:`StatusEvent`s (state
  changes, agent name, elapsed time, build URL). Polls go out with rate-limit priority; creates
  and downloads leave a small reserve of the window for them (see :class:`launcher.client.RateGate`).
* **Budget.** Each build has a deadline (``--timeout``, else the payload's timeouts + compile and
  queue margins). At the deadline, or on Ctrl-C, the build is cancelled (``PUT .../cancel``).
* **Result, always.** After ANY terminal state the build's ``result.json`` artifact is downloaded
  (two-step redirect, sha1-checked) and parsed with the contract; its own success/error are
  trusted. Without one, the result is a failure naming the build/job state, ``exit_status``,
  ``signal_reason`` and the last lines of the job log.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import uuid
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from contract import codec
from contract.budget import phases_s
from contract.models import FullResult, RunnerExit
from contract.resultio import MAX_RESULT_BYTES, RESULT_NAME, ResultFileError, parse_result
from host.settings import DEFAULT_MARGIN_S
from launcher.base import StatusCallback, StatusEvent, SubmitOptions
from launcher.client import (
    BuildkiteClient,
    ServerError,
    TransportError,
    ValidationFailed,
    is_terminal,
)
from launcher.errors import InfraError, KitebenchError, UsageError

log = logging.getLogger("kitebench.buildkite")

#: Added to the payload's run timeouts: queueing for an agent, image pull, setup, upload.
QUEUE_MARGIN_S = 600
#: Default budget for `kitebench wait` on a build whose payload cannot be read.
DEFAULT_WAIT_S = 3600
LOG_TAIL_LINES = 50


def budget_for(payload: Any) -> float:
    """Seconds to wait for a payload's build: every phase limit (contract.budget), then the host's
    default set-up margin and the queue margin on top."""
    return phases_s(payload) + DEFAULT_MARGIN_S + QUEUE_MARGIN_S


@dataclass
class _Item:
    """One submission being followed."""

    index: int
    kitebench_id: str | None = None
    encoded: str | None = None
    message: str = ""
    budget_s: float = DEFAULT_WAIT_S
    number: int | None = None
    build: dict[str, Any] | None = None
    started: float | None = None  #: clock() when created / when following started
    deadline: float | None = None
    state: str | None = None
    agent: str | None = None
    terminal: bool = False
    detected_at: float | None = None  #: clock() when the terminal state was first seen
    cancel_reason: str | None = None
    cancel_deadline: float | None = None
    fetching: bool = False
    error: BaseException | None = None  #: creation failed
    result: FullResult | None = None


@dataclass
class BuildStatus:
    """What `kitebench status` shows."""

    number: int
    state: str
    web_url: str
    message: str = ""
    kitebench_id: str | None = None
    created_at: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    jobs: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_build(cls, b: dict[str, Any]) -> BuildStatus:
        return cls(
            number=int(b["number"]), state=str(b.get("state")), web_url=str(b.get("web_url", "")),
            message=str(b.get("message") or ""),
            kitebench_id=(b.get("meta_data") or {}).get("kitebench_id"),
            created_at=b.get("created_at"), started_at=b.get("started_at"),
            finished_at=b.get("finished_at"),
            jobs=[{"name": j.get("name") or j.get("step_key") or j.get("id"),
                   "state": j.get("state"), "agent": (j.get("agent") or {}).get("name"),
                   "exit_status": j.get("exit_status"), "signal_reason": j.get("signal_reason")}
                  for j in b.get("jobs") or [] if j.get("type", "script") == "script"],
        )


class BuildkiteLauncher:
    """Runs payloads as builds of one Buildkite pipeline on one queue."""

    name = "buildkite"

    def __init__(
        self,
        client: BuildkiteClient,
        *,
        queue: str | None = None,
        gpu: str | None = None,
        arch: str | None = None,
        timeout_s: float | None = None,
        branch: str = "main",
        commit: str = "HEAD",
        poll_interval_s: float | None = None,
        cancel_grace_s: float = 120.0,
        lookup_delay_s: float = 2.0,
        create_attempts: int = 3,
        fetch_workers: int = 4,
        max_poll_failures: int = 10,
    ) -> None:
        self.client = client
        self.queue = queue
        self.gpu = gpu
        self.arch = arch
        self.timeout_s = timeout_s
        self.branch = branch
        self.commit = commit
        self.poll_interval_s = poll_interval_s
        self.cancel_grace_s = cancel_grace_s
        self.lookup_delay_s = lookup_delay_s
        self.create_attempts = create_attempts
        self.fetch_workers = fetch_workers
        self.max_poll_failures = max_poll_failures
        self.clock = client.clock
        self.sleep = client.sleep
        #: items of the last run/submit_many/wait (benchmarks read detection times from here)
        self.last_items: list[_Item] = []

    @classmethod
    def from_options(cls, opts: SubmitOptions) -> BuildkiteLauncher:
        """Queue from ``opts.queue`` or the GPU registry entry ``opts.gpu``; arch from the registry
        (used when the payload has none); ``opts.extra`` may hold org, pipeline, api_url, branch,
        commit (also ``KITEBENCH_BUILDKITE_BRANCH`` / ``KITEBENCH_BUILDKITE_COMMIT``)."""
        from launcher.gpus import load_registry

        registry = load_registry(opts.gpus_file)
        if opts.queue:
            spec = registry.by_queue(opts.queue)
            queue = opts.queue
        elif opts.gpu:
            spec = registry.resolve(opts.gpu)
            queue = spec.queue
        else:
            known = ", ".join(sorted(registry.gpus))
            raise UsageError(f"the buildkite backend needs --gpu NAME ({known}) or --queue QUEUE")
        extra = opts.extra or {}
        client = BuildkiteClient(org=extra.get("org"), pipeline=extra.get("pipeline"),
                                 base_url=extra.get("api_url"))
        return cls(
            client, queue=queue, gpu=spec.name if spec else None,
            arch=opts.arch or (spec.arch if spec else None), timeout_s=opts.timeout_s,
            branch=extra.get("branch") or os.environ.get("KITEBENCH_BUILDKITE_BRANCH") or "main",
            commit=extra.get("commit") or os.environ.get("KITEBENCH_BUILDKITE_COMMIT") or "HEAD",
        )

    # -- public API ------------------------------------------------------------------------------

    def run(self, payload: Any, *, on_status: StatusCallback | None = None,
            timeout_s: float | None = None) -> FullResult:
        """One payload to a result. Creation failures raise (InfraError / UsageError); everything
        after the build exists comes back as a result."""
        item = self._prepare(payload, 0, timeout_s)
        self._follow([item], batch=item.kitebench_id, on_status=on_status, create=True)
        if item.error is not None:
            raise item.error
        assert item.result is not None
        return item.result

    def submit_many(self, payloads: Sequence[Any], *, on_status: StatusCallback | None = None,
                    timeout_s: float | None = None) -> list[FullResult]:
        """Many payloads at once, followed together with batched list requests. Results come back
        in input order; a submission whose build could not be created gets a failed result (a
        configuration error that stops every create is raised instead)."""
        items = [self._prepare(p, i, timeout_s) for i, p in enumerate(payloads)]
        if not items:
            return []
        batch = uuid.uuid4().hex
        self._follow(items, batch=batch, on_status=on_status, create=True)
        if all(it.number is None for it in items) and isinstance(items[0].error, UsageError):
            raise items[0].error
        out = []
        for it in items:
            if it.result is None:
                err = it.error or InfraError("no result")
                it.result = FullResult.failure(f"could not create the build: {_msg(err)}",
                                               "internal", RunnerExit.INTERNAL)
            out.append(it.result)
        return out

    def wait(self, number: int, *, on_status: StatusCallback | None = None,
             timeout_s: float | None = None, cancel_on_timeout: bool = False) -> FullResult:
        """Follow an existing build (e.g. after the submitting process was killed) to a result.
        The build is left running on timeout or Ctrl-C unless ``cancel_on_timeout``."""
        build = self.client.get_build(number)
        budget = timeout_s or self.timeout_s or _budget_from_build(build)
        item = _Item(index=0, number=int(number), build=build, budget_s=budget,
                     kitebench_id=(build.get("meta_data") or {}).get("kitebench_id"))
        self._follow([item], batch=None, on_status=on_status, create=False,
                     cancel_on_timeout=cancel_on_timeout)
        assert item.result is not None
        return item.result

    def status(self, number: int) -> BuildStatus:
        return BuildStatus.from_build(self.client.get_build(number))

    def cancel(self, number: int) -> BuildStatus:
        """Cancel a build; a build that already finished is reported, not an error."""
        try:
            build = self.client.cancel_build(number)
        except ValidationFailed:
            build = self.client.get_build(number)
            if not is_terminal(build):
                raise
        return BuildStatus.from_build(build)

    # -- preparation and creation ----------------------------------------------------------------

    def _prepare(self, payload: Any, index: int, timeout_s: float | None) -> _Item:
        try:
            model = codec.validate(payload) if isinstance(payload, dict) else payload
            if getattr(model, "arch", None) is None and self.arch:
                model = codec.validate({**_dump(model), "arch": self.arch})
            encoded = codec.encode(model, limit=codec.INLINE_LIMIT)
        except codec.PayloadTooLarge as e:
            raise UsageError(
                f"the payload is too large to travel in the build's environment: {e.message} "
                "(shrink the submission, or for model tasks use archive_url)") from None
        except codec.PayloadError as e:
            raise UsageError(e.message) from None
        budget = timeout_s or self.timeout_s or budget_for(model)
        return _Item(index=index, kitebench_id=uuid.uuid4().hex, encoded=encoded,
                     message=self._message(model), budget_s=budget)

    def _message(self, model: Any) -> str:
        target = self.gpu or self.queue or "?"
        names = list(getattr(model, "sources", {}) or {})
        # The submitted file is usually submission.*; main is often the task's harness.
        what = next((n for n in names if n.startswith("submission")), None)
        what = what or getattr(model, "main", None) or (names[0] if names else "")
        if model.lang == "model":
            what = model.model_cfg.model_name
        return f"kitebench {model.lang} {model.mode}: {what} on {target}".strip()

    def _create(self, item: _Item, batch: str | None) -> dict[str, Any]:
        if not self.queue:
            raise UsageError("no Buildkite queue: pass --gpu NAME or --queue QUEUE")
        assert item.kitebench_id and item.encoded
        meta = {"kitebench_id": item.kitebench_id, "kitebench_queue": self.queue}
        if batch:
            meta["kitebench_batch"] = batch
        if self.gpu:
            meta["kitebench_gpu"] = self.gpu
        body = dict(commit=self.commit, branch=self.branch, message=item.message,
                    env={"SUBMISSION_PAYLOAD": item.encoded, "GPU_QUEUE": self.queue,
                         "KITEBENCH_ID": item.kitebench_id},
                    meta_data=meta)
        last: KitebenchError | None = None
        for attempt in range(1, self.create_attempts + 1):
            try:
                return self.client.create_build(**body)
            except (TransportError, ServerError) as e:
                if isinstance(e, TransportError) and not e.ambiguous:
                    raise  # never reached the server, and the client already retried it
                last = e
                log.info("create %s: %s; looking it up before trying again", item.kitebench_id,
                         e.message)
            found = self._lookup(item.kitebench_id)
            if found is not None:
                return found
            if attempt < self.create_attempts:
                self.sleep(self.lookup_delay_s * attempt)
        raise InfraError(f"could not create the build after {self.create_attempts} attempts: "
                         f"{_msg(last)}")

    def _lookup(self, kid: str) -> dict[str, Any] | None:
        """The build carrying ``meta_data[kitebench_id]=kid``, if the server made one. A failed
        lookup raises: creating again without knowing could make a second build."""
        for i in range(2):
            self.sleep(self.lookup_delay_s)
            try:
                found = self.client.list_builds(meta_data={"kitebench_id": kid}, per_page=5,
                                                max_pages=1, priority=True)
            except InfraError as e:
                if i == 1:
                    raise InfraError(f"build creation may have failed and the lookup by "
                                     f"kitebench_id={kid} failed too ({e.message}); not creating "
                                     "a second build") from None
                continue
            if found:
                return found[0]
        return None

    # -- following -------------------------------------------------------------------------------

    def _follow(self, items: list[_Item], *, batch: str | None,
                on_status: StatusCallback | None, create: bool,
                cancel_on_timeout: bool = True) -> None:
        """Create (optionally) and follow ``items`` to results; ``cancel_on_timeout`` also covers
        Ctrl-C (`kitebench wait` only watches a build unless told to cancel it)."""
        self.last_items = items
        lock = threading.Lock()
        stop = threading.Event()
        t0 = self.clock()
        for it in items:
            if it.number is not None:
                it.started = t0
                it.deadline = t0 + it.budget_s
        creator: threading.Thread | None = None
        if create:
            def create_all() -> None:
                fatal: BaseException | None = None
                for it in items:
                    if stop.is_set():
                        return
                    if fatal is not None:
                        it.error = fatal
                        continue
                    try:
                        build = self._create(it, batch)
                    except BaseException as e:  # noqa: BLE001 - handed to the caller
                        it.error = e
                        if isinstance(e, UsageError):
                            fatal = e  # every later create would fail the same way
                        continue
                    with lock:
                        it.number, it.build = int(build["number"]), build
                        it.started = self.clock()
                        it.deadline = it.started + it.budget_s

            if len(items) == 1:
                create_all()  # nothing to overlap with
            else:
                creator = threading.Thread(target=create_all, name="kitebench-create",
                                           daemon=True)
                creator.start()

        interval = self.poll_interval_s or (5.0 if len(items) == 1 else 10.0)
        step = min(1.0, interval)
        pool = ThreadPoolExecutor(self.fetch_workers, thread_name_prefix="kitebench-fetch")
        futures: dict[Future[FullResult], _Item] = {}
        announced: set[int] = set()
        next_poll = self.clock()
        failures = 0
        try:
            while True:
                with lock:
                    for fut in [f for f in futures if f.done()]:
                        it = futures.pop(fut)
                        it.result = fut.result()  # _collect never raises
                    for it in items:
                        if it.number is not None and it.index not in announced:
                            announced.add(it.index)
                            it.state = (it.build or {}).get("state") or it.state
                            self._emit(on_status, it, it.build or {}, "created")
                    pending = [it for it in items if it.result is None and it.error is None]
                if not pending and (creator is None or not creator.is_alive()):
                    break
                now = self.clock()
                active = [it for it in pending if it.number is not None and not it.terminal]
                if active and now >= next_poll:
                    next_poll = now + interval
                    try:
                        builds = self._poll(active, batch)
                        failures = 0
                    except UsageError:
                        raise
                    except InfraError as e:
                        failures += 1
                        log.warning("polling failed (%d in a row): %s", failures, e.message)
                        if failures >= self.max_poll_failures:
                            raise
                        builds = {}
                    for it in active:
                        b = builds.get(it.number)
                        if b is not None:
                            self._update(it, b, on_status)
                        if it.terminal and not it.fetching:
                            it.fetching = True
                            futures[pool.submit(self._collect, it, it.build or b or {})] = it
                now = self.clock()
                for it in active:
                    if it.terminal:
                        continue
                    if it.cancel_reason is None and it.deadline is not None and now > it.deadline:
                        if cancel_on_timeout:
                            b, note = self._cancel(it, f"no result within {it.budget_s:.0f}s")
                            self._emit(on_status, it, b, None, note)
                        else:
                            it.result = self._gave_up(it)
                    elif it.cancel_deadline is not None and now > it.cancel_deadline:
                        it.result = self._gave_up(it)
                self.sleep(step)
        except KeyboardInterrupt:
            stop.set()
            if creator is not None:
                creator.join(timeout=30)
            live = [it for it in items if cancel_on_timeout and it.number is not None
                    and not it.terminal and it.cancel_reason is None]
            # Cancel everything first: a callback that raises again must not leave builds running.
            notes = [(it, self._cancel(it, "interrupted (Ctrl-C)")) for it in live]
            for it, (b, note) in notes:
                with contextlib.suppress(Exception, KeyboardInterrupt):
                    self._emit(on_status, it, b, None, note)
            raise
        except InfraError as e:
            running = [it.number for it in items if it.number is not None and not it.terminal]
            if running and not isinstance(e, UsageError):
                nums = ", ".join(f"#{n}" for n in running)
                raise InfraError(f"{e.message}; build(s) {nums} may still be running "
                                 f"(`kitebench wait {running[0]}` picks one up again)") from None
            raise
        finally:
            stop.set()
            pool.shutdown(wait=True, cancel_futures=True)

    def _poll(self, active: list[_Item], batch: str | None) -> dict[int, dict[str, Any]]:
        """Current builds of ``active``: one list request per 100 builds of a batch, else GETs."""
        if batch is not None:
            builds = self.client.list_builds(meta_data={"kitebench_batch": batch}, per_page=100,
                                             priority=True)
            return {int(b["number"]): b for b in builds}
        return {it.number: self.client.get_build(it.number, priority=True)
                for it in active if it.number is not None}

    def _update(self, it: _Item, b: dict[str, Any], on_status: StatusCallback | None) -> None:
        it.build = b
        job = _main_job(b)
        agent = ((job or {}).get("agent") or {}).get("name")
        state = str(b.get("state"))
        changed = state != it.state or (agent and agent != it.agent)
        it.state, it.agent = state, agent or it.agent
        if is_terminal(b):
            it.terminal = True
            it.detected_at = self.clock()
        self._emit(on_status, it, b, state if changed else None)

    def _emit(self, on_status: StatusCallback | None, it: _Item, b: dict[str, Any],
              change: str | None, message: str | None = None) -> None:
        if on_status is None:
            return
        if message is None:
            if change == "created":
                message = f"build #{it.number} created"
            elif change:
                message = f"build #{it.number} {change}" + (f" on {it.agent}" if it.agent else "")
            else:
                message = ""
        on_status(StatusEvent(
            state=str(b.get("state") or it.state or "creating"), message=message,
            elapsed_s=max(0.0, self.clock() - (it.started or self.clock())),
            url=b.get("web_url"), agent=it.agent, build_number=it.number))

    def _cancel(self, it: _Item, reason: str) -> tuple[dict[str, Any], str]:
        """Ask Buildkite to cancel; return the build as it answered and a line saying so."""
        it.cancel_reason = reason
        it.cancel_deadline = self.clock() + self.cancel_grace_s
        assert it.number is not None
        try:
            b = self.client.cancel_build(it.number)
            note = f"build #{it.number} cancelled: {reason}"
        except ValidationFailed:
            b = it.build or {}
            note = f"build #{it.number} had already finished when cancelling ({reason})"
        except (InfraError, UsageError) as e:
            b = it.build or {}
            note = f"could not cancel build #{it.number} ({reason}): {e.message}"
        log.info("%s", note)
        return {**(it.build or {}), **b}, note

    def _gave_up(self, it: _Item) -> FullResult:
        b = it.build or {}
        if it.cancel_reason:
            msg = (f"build #{it.number} was cancelled ({it.cancel_reason}) but is still "
                   f"{it.state} after {self.cancel_grace_s:.0f}s; see {b.get('web_url')}")
        else:
            msg = (f"gave up waiting after {it.budget_s:.0f}s: build #{it.number} is still "
                   f"{it.state} (not cancelled; `kitebench cancel {it.number}` stops it)")
        return FullResult.failure(msg, "interrupted", RunnerExit.INTERRUPTED,
                                  details={"buildkite": _facts(b, _main_job(b))})

    # -- results ---------------------------------------------------------------------------------

    def _collect(self, it: _Item, build: dict[str, Any]) -> FullResult:
        """The result of a terminal build (never raises: problems become failed results)."""
        number = int(build.get("number", it.number or 0))
        try:
            result = self.result_for(build)
        except Exception as e:  # noqa: BLE001 - errors are data here
            result = FullResult.failure(
                f"build #{number} {build.get('state')}: could not fetch {RESULT_NAME}: {_msg(e)}",
                "collect", RunnerExit.INTERNAL,
                details={"buildkite": _facts(build, _main_job(build))})
        if it.cancel_reason:
            result.kitebench.warnings.append(f"kitebench cancelled build #{number}: "
                                             f"{it.cancel_reason}")
        return result

    def result_for(self, build: dict[str, Any]) -> FullResult:
        """result.json of a finished build, or a failure that says why there is none."""
        number = int(build["number"])
        art = None
        for attempt in range(3):
            arts = self.client.list_artifacts(number)
            art = _pick_result(arts, build)
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
                    details={"buildkite": _facts(build, _main_job(build))})
        return self._no_result(build)

    def _no_result(self, build: dict[str, Any]) -> FullResult:
        number = int(build["number"])
        job = _main_job(build)
        facts = _facts(build, job)
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
            details={"buildkite": facts, "log_tail": tail})


def _main_job(build: dict[str, Any]) -> dict[str, Any] | None:
    """The job that ran the submission: the last script job that started (retries come later),
    else the last script job."""
    jobs = [j for j in build.get("jobs") or [] if j.get("type", "script") == "script"]
    started = [j for j in jobs if j.get("started_at")]
    return (started or jobs or [None])[-1]


def _pick_result(arts: list[dict[str, Any]], build: dict[str, Any]) -> dict[str, Any] | None:
    cands = [a for a in arts if a.get("path") == RESULT_NAME
             or str(a.get("path", "")).endswith("/" + RESULT_NAME)]
    if not cands:
        return None
    order = {j.get("id"): i for i, j in enumerate(build.get("jobs") or [])}
    # Prefer finished uploads, then the latest job (a retry's result beats the first attempt's).
    cands.sort(key=lambda a: (a.get("state") == "finished", order.get(a.get("job_id"), -1),
                              a.get("path") == RESULT_NAME))
    return cands[-1]


def _facts(build: dict[str, Any], job: dict[str, Any] | None) -> dict[str, Any]:
    facts = {"build": build.get("number"), "state": build.get("state"),
             "web_url": build.get("web_url")}
    if job is not None:
        facts.update(job_state=job.get("state"), exit_status=job.get("exit_status"),
                     signal=job.get("signal"), signal_reason=job.get("signal_reason"),
                     agent=(job.get("agent") or {}).get("name"))
    return facts


def _budget_from_build(build: dict[str, Any]) -> float:
    with contextlib.suppress(codec.PayloadError, TypeError, AttributeError):
        return budget_for(codec.decode((build.get("env") or {}).get("SUBMISSION_PAYLOAD")))
    return DEFAULT_WAIT_S


def _dump(model: Any) -> dict[str, Any]:
    from contract.models import dump_payload

    return dump_payload(model)


def _msg(e: BaseException | None) -> str:
    if e is None:
        return "unknown error"
    return getattr(e, "message", None) or f"{type(e).__name__}: {e}"


def from_env(**client_kwargs: Any) -> BuildkiteLauncher:
    """A launcher for existing builds (wait/status/cancel): client settings from the environment
    (BUILDKITE_API_TOKEN, BUILDKITE_API_URL, BUILDKITE_ORG, BUILDKITE_PIPELINE) or arguments."""
    return BuildkiteLauncher(BuildkiteClient(**client_kwargs))


def wait_build(number: int, *, on_status: StatusCallback | None = None,
               timeout_s: float | None = None, **client_kwargs: Any) -> FullResult:
    """Follow build ``number`` to its result (see :meth:`BuildkiteLauncher.wait`)."""
    with BuildkiteClient(**client_kwargs) as client:
        return BuildkiteLauncher(client).wait(number, on_status=on_status, timeout_s=timeout_s)


def build_status(number: int, **client_kwargs: Any) -> BuildStatus:
    with BuildkiteClient(**client_kwargs) as client:
        return BuildkiteLauncher(client).status(number)


def cancel_build(number: int, **client_kwargs: Any) -> BuildStatus:
    with BuildkiteClient(**client_kwargs) as client:
        return BuildkiteLauncher(client).cancel(number)
