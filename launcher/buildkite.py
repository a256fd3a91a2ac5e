"""The Buildkite backend: payload → build on a per-GPU queue → result.json → FullResult.

Policy lives here; HTTP lives in :mod:`launcher.client` (this module never touches requests).

* **Create, idempotently.** Every submission gets a unique ``kitebench_id`` in the build's
  ``meta_data``. Buildkite's POST is not idempotent: after an ambiguous failure (timeout, reset,
  5xx) the build is looked up by ``meta_data[kitebench_id]`` before a second POST, and if the
  lookup itself fails we give up rather than risk two builds.
* **Wait, batched or pushed.** :class:`launcher.follow.Follower` follows every build of a call
  with list requests filtered by the batch's ``meta_data[kitebench_batch]`` (``per_page=100``),
  not one GET per build per interval, or, given webhook events (``events=`` or ``webhook=``),
  wakes on Buildkite's ``build.finished`` and polls only as a slow safety net. Progress comes
  through :class:`StatusEvent`s (state changes, agent name, elapsed time, build URL). Polls go out
  with rate-limit priority; creates and downloads leave a small reserve of the window for them
  (see :class:`launcher.retry.RateGate`).
* **Budget.** Each build has a deadline (``--timeout``, else the payload's timeouts + compile and
  queue margins). At the deadline, or on Ctrl-C, the build is cancelled (``PUT .../cancel``).
* **Result, always** (:mod:`launcher.collect`): after ANY terminal state ``result.json`` is
  downloaded and parsed; without one, the result is a failure that says why.
"""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from contract import codec
from contract.budget import phases_s
from contract.result import FullResult, RunnerExit
from host.settings import DEFAULT_MARGIN_S
from launcher.base import StatusCallback, SubmitOptions
from launcher.client import (
    BuildkiteClient,
    ServerError,
    TransportError,
    ValidationFailed,
    is_terminal,
)
from launcher.collect import ResultCollector, error_text
from launcher.errors import InfraError, KitebenchError, UsageError
from launcher.events import BuildEvents
from launcher.follow import DEFAULT_WAIT_S, Follower, Item
from launcher.webhook import DEFAULT_HOST, WebhookAuth, WebhookServer, WebhookSettings

if TYPE_CHECKING:
    from contract.payload import AnyPayload

log = logging.getLogger("kitebench.buildkite")

#: Added to the payload's run timeouts: queueing for an agent, image pull, setup, upload.
QUEUE_MARGIN_S = 600
#: With webhook events, polling is only a safety net for lost deliveries.
SAFETY_INTERVAL_S = 120.0
#: How late a delivery may be (after a poll saw the build finish) before it counts as lost.
WEBHOOK_GRACE_S = 30.0


def budget_for(payload: AnyPayload) -> float:
    """Seconds to wait for a payload's build: every phase limit (contract.budget), then the host's
    default set-up margin and the queue margin on top."""
    return phases_s(payload) + DEFAULT_MARGIN_S + QUEUE_MARGIN_S


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
        events: BuildEvents | None = None,
        webhook: WebhookSettings | None = None,
        safety_interval_s: float = SAFETY_INTERVAL_S,
        webhook_grace_s: float = WEBHOOK_GRACE_S,
    ) -> None:
        """``events``: webhook events fed by a receiver you run (e.g. :class:`WebhookApp`
        mounted in your service); ``webhook``: run a receiver on this port while waiting."""
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
        self.events = events
        self.webhook = webhook
        self.safety_interval_s = safety_interval_s
        self.webhook_grace_s = webhook_grace_s
        self.clock = client.clock
        self.sleep = client.sleep
        self.collector = ResultCollector(client, client.sleep)

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
        port = extra.get("webhook_port")
        webhook = (WebhookSettings(port=int(port), host=extra.get("webhook_host") or DEFAULT_HOST,
                                   auth=WebhookAuth.from_env())
                   if port is not None else None)
        return cls(
            client, queue=queue, gpu=spec.name if spec else None,
            arch=opts.arch or (spec.arch if spec else None), timeout_s=opts.timeout_s,
            branch=extra.get("branch") or os.environ.get("KITEBENCH_BUILDKITE_BRANCH") or "main",
            commit=extra.get("commit") or os.environ.get("KITEBENCH_BUILDKITE_COMMIT") or "HEAD",
            webhook=webhook,
        )

    # -- public API ------------------------------------------------------------------------------

    def run(self, payload: AnyPayload | dict[str, Any], *, on_status: StatusCallback | None = None,
            timeout_s: float | None = None) -> FullResult:
        """One payload to a result. Creation failures raise (InfraError / UsageError); everything
        after the build exists comes back as a result."""
        item = self._prepare(payload, 0, timeout_s)
        self._follow([item], batch=item.kitebench_id, on_status=on_status, create=True)
        if item.error is not None:
            raise item.error
        assert item.result is not None
        return item.result

    def submit_many(self, payloads: Sequence[AnyPayload | dict[str, Any]], *, on_status: StatusCallback | None = None,
                    timeout_s: float | None = None,
                    ids: Sequence[str] | None = None) -> list[FullResult]:
        """Many payloads at once, followed together with batched list requests. Results come back
        in input order; a submission whose build could not be created gets a failed result (a
        configuration error that stops every create is raised instead).

        ``ids``: the caller's idempotency key per payload (stored as ``meta_data[kitebench_id]``;
        unique across the organization), so a caller killed before it learnt a build's number
        can find the build again with :meth:`find` instead of submitting twice."""
        if ids is not None and len(ids) != len(payloads):
            raise UsageError(f"{len(ids)} ids for {len(payloads)} payloads")
        items = [self._prepare(p, i, timeout_s, ids[i] if ids is not None else None)
                 for i, p in enumerate(payloads)]
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
                it.result = FullResult.failure(f"could not create the build: {error_text(err)}",
                                               "internal", RunnerExit.INTERNAL)
            out.append(it.result)
        return out

    def wait(self, number: int, *, on_status: StatusCallback | None = None,
             timeout_s: float | None = None, cancel_on_timeout: bool = False) -> FullResult:
        """Follow an existing build (e.g. after the submitting process was killed) to a result.
        The build is left running on timeout or Ctrl-C unless ``cancel_on_timeout``."""
        build = self.client.get_build(number)
        budget = timeout_s or self.timeout_s or _budget_from_build(build)
        item = Item(index=0, number=int(number), build=build, budget_s=budget,
                    build_id=build.get("id"),
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

    def find(self, kitebench_id: str) -> int | None:
        """The number of the build made for idempotency key ``kitebench_id``, or None."""
        found = self.client.list_builds(meta_data={"kitebench_id": kitebench_id}, per_page=5,
                                        max_pages=1, priority=True)
        return int(found[0]["number"]) if found else None

    def _prepare(self, payload: AnyPayload | dict[str, Any], index: int, timeout_s: float | None,
                 kitebench_id: str | None = None) -> Item:
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
        return Item(index=index, kitebench_id=kitebench_id or uuid.uuid4().hex, encoded=encoded,
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

    def _create(self, item: Item, batch: str | None) -> dict[str, Any]:
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
                         f"{error_text(last)}")

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

    def _follow(self, items: list[Item], *, batch: str | None,
                on_status: StatusCallback | None, create: bool,
                cancel_on_timeout: bool = True) -> None:
        """Create (optionally) and follow ``items`` to results; ``cancel_on_timeout`` also covers
        Ctrl-C (`kitebench wait` only watches a build unless told to cancel it)."""
        with self._event_source() as events:
            Follower(self, items, batch=batch, on_status=on_status, create=create,
                     cancel_on_timeout=cancel_on_timeout, events=events).run()

    @contextlib.contextmanager
    def _event_source(self) -> Iterator[BuildEvents | None]:
        """The given events, or a receiver on the webhook port for the length of one wait."""
        if self.events is not None or self.webhook is None:
            yield self.events
            return
        events = BuildEvents()
        with WebhookServer(self.webhook, events):
            yield events

    # -- results ---------------------------------------------------------------------------------

    def _collect(self, it: Item, build: dict[str, Any]) -> FullResult:
        return self.collector.collect(build or {"number": it.number},
                                      cancel_reason=it.cancel_reason)

    def result_for(self, build: dict[str, Any]) -> FullResult:
        """result.json of a finished build, or a failure that says why there is none."""
        return self.collector.result_for(build)


def _budget_from_build(build: dict[str, Any]) -> float:
    with contextlib.suppress(codec.PayloadError, TypeError, AttributeError):
        return budget_for(codec.decode((build.get("env") or {}).get("SUBMISSION_PAYLOAD")))
    return DEFAULT_WAIT_S


def _dump(model: Any) -> dict[str, Any]:
    from contract.payload import dump_payload

    return dump_payload(model)


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
