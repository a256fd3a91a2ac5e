"""Following builds to results: the waiter of :class:`launcher.buildkite.BuildkiteLauncher`.

One :class:`Follower` runs one ``run``/``submit_many``/``wait`` call: it creates the builds (in a
thread, so polling starts while later creates wait for the rate limit), detects terminal states,
hands finished builds to a small pool that downloads their results, and enforces each build's
deadline (cancel, then give up after a grace period).

Detection has two sources:

* **polling**: one list request per poll for a whole batch (``meta_data[kitebench_batch]``,
  ``per_page=100``), GETs for builds outside a batch; every ``poll_interval_s`` (default 5 s for
  one build, 10 s for many);
* **webhook events** (when the launcher has :class:`launcher.events.BuildEvents`): the loop wakes
  as soon as an event arrives, and polling becomes a slow safety net (``safety_interval_s``). When
  a safety poll finds a finished build whose event has still not come ``webhook_grace_s`` later
  (a poll just after the end may beat a delivery), deliveries are evidently not arriving: the
  follower says so once and goes back to normal polling for the rest of the call.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from contract.result import FullResult, RunnerExit
from launcher.base import StatusCallback, StatusEvent
from launcher.bk_errors import ValidationFailed
from launcher.collect import facts, main_job
from launcher.errors import InfraError, UsageError
from launcher.events import BuildEvents, is_terminal

if TYPE_CHECKING:
    from launcher.buildkite import BuildkiteLauncher

log = logging.getLogger("kitebench.buildkite")

#: Default budget for `kitebench wait` on a build whose payload cannot be read.
DEFAULT_WAIT_S = 3600


@dataclass
class Item:
    """One submission being followed."""

    index: int
    kitebench_id: str | None = None
    encoded: str | None = None
    message: str = ""
    budget_s: float = DEFAULT_WAIT_S
    number: int | None = None
    build_id: str | None = None  #: the build's UUID (webhook events name builds by it)
    build: dict[str, Any] | None = None
    started: float | None = None  #: clock() when created / when following started
    deadline: float | None = None
    state: str | None = None
    agent: str | None = None
    terminal: bool = False
    detected_at: float | None = None  #: clock() when the terminal state was first seen
    detected_by: str | None = None  #: "poll" or "webhook"
    cancel_reason: str | None = None
    cancel_deadline: float | None = None
    fetching: bool = False
    error: BaseException | None = None  #: creation failed
    result: FullResult | None = None

    def created(self, build: dict[str, Any], now: float) -> None:
        self.number, self.build = int(build["number"]), build
        self.build_id = str(build.get("id") or "") or None
        self.started = now
        self.deadline = now + self.budget_s


class Follower:
    """Creates (optionally) and follows ``items`` to results; see the module docstring."""

    def __init__(self, launcher: BuildkiteLauncher, items: list[Item], *, batch: str | None,
                 on_status: StatusCallback | None, create: bool, cancel_on_timeout: bool,
                 events: BuildEvents | None = None) -> None:
        self.bk = launcher
        self.client = launcher.client
        self.clock: Callable[[], float] = launcher.clock
        self.items = items
        self.batch = batch
        self.on_status = on_status
        self.create = create
        self.cancel_on_timeout = cancel_on_timeout
        self.events = events
        #: True once the webhook evidently missed a build: poll normally from then on
        self.fallen_back = False
        #: builds a poll found finished before their event came, and when (events may be late)
        self.suspects: list[tuple[Item, float]] = []
        self.next_poll = 0.0
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.creator: threading.Thread | None = None
        self.pool = ThreadPoolExecutor(launcher.fetch_workers, thread_name_prefix="kitebench-fetch")
        self.futures: dict[Future[FullResult], Item] = {}
        self.announced: set[int] = set()

    # -- the loop --------------------------------------------------------------------------------

    def run(self) -> None:
        t0 = self.clock()
        for it in self.items:
            if it.number is not None:
                it.started, it.deadline = t0, t0 + it.budget_s
        if self.create:
            if len(self.items) == 1:
                self._create_all()  # nothing to overlap with
            else:
                self.creator = threading.Thread(target=self._create_all, daemon=True,
                                                name="kitebench-create")
                self.creator.start()
        self.next_poll = self.clock()
        failures = 0
        seen = self.events.seq if self.events is not None else 0
        try:
            while True:
                pending = self._harvest()
                if not pending and (self.creator is None or not self.creator.is_alive()):
                    break
                active = [it for it in pending if it.number is not None and not it.terminal]
                if self.events is not None:
                    self._apply_events(active)
                    self._check_suspects()
                now = self.clock()
                if active and now >= self.next_poll:
                    self.next_poll = now + self._interval()
                    try:
                        builds = self._poll(active)
                        failures = 0
                    except UsageError:
                        raise
                    except InfraError as e:
                        failures += 1
                        log.warning("polling failed (%d in a row): %s", failures, e.message)
                        if failures >= self.bk.max_poll_failures:
                            raise
                        builds = {}
                    if self.events is not None:
                        self._apply_events(active)  # what arrived during the poll came first
                    for it in active:
                        b = builds.get(it.number or 0)
                        if b is not None and not it.terminal:
                            self._update(it, b, "poll")
                self._deadlines(active)
                step = min(1.0, self._interval())
                if self.events is not None:
                    seen = self.events.wait(seen, step)
                else:
                    self.bk.sleep(step)
        except KeyboardInterrupt:
            self._interrupted()
            raise
        except InfraError as e:
            running = [it.number for it in self.items if it.number is not None
                       and not it.terminal]
            if running and not isinstance(e, UsageError):
                nums = ", ".join(f"#{n}" for n in running)
                raise InfraError(f"{e.message}; build(s) {nums} may still be running "
                                 f"(`kitebench wait {running[0]}` picks one up again)") from None
            raise
        finally:
            self.stop.set()
            self.pool.shutdown(wait=True, cancel_futures=True)

    def _interval(self) -> float:
        if self.events is not None and not self.fallen_back:
            return self.bk.safety_interval_s
        return self.bk.poll_interval_s or (5.0 if len(self.items) == 1 else 10.0)

    def _harvest(self) -> list[Item]:
        """Take finished downloads, announce new builds; the items still without a result."""
        with self.lock:
            for fut in [f for f in self.futures if f.done()]:
                self.futures.pop(fut).result = fut.result()  # collect never raises
            for it in self.items:
                if it.number is not None and it.index not in self.announced:
                    self.announced.add(it.index)
                    it.state = (it.build or {}).get("state") or it.state
                    self._emit(it, it.build or {}, "created")
            return [it for it in self.items if it.result is None and it.error is None]

    def _create_all(self) -> None:
        fatal: BaseException | None = None
        for it in self.items:
            if self.stop.is_set():
                return
            if fatal is not None:
                it.error = fatal
                continue
            try:
                build = self.bk._create(it, self.batch)
            except BaseException as e:  # noqa: BLE001 - handed to the caller
                it.error = e
                if isinstance(e, UsageError):
                    fatal = e  # every later create would fail the same way
                continue
            with self.lock:
                it.created(build, self.clock())

    # -- detection -------------------------------------------------------------------------------

    def _apply_events(self, active: list[Item]) -> None:
        assert self.events is not None
        for it in active:
            b = self.events.build(it.build_id)
            if b is None:
                continue
            agent = ((main_job(b) or {}).get("agent") or {}).get("name")
            if b.get("state") != it.state or (agent and agent != it.agent) or is_terminal(b):
                # An event's build has no jobs unless job events came: keep what we knew.
                if "jobs" not in b and it.build and "jobs" in it.build:
                    b = {**b, "jobs": it.build["jobs"]}
                self._update(it, b, "webhook")

    def _check_suspects(self) -> None:
        """A build a poll found finished is a missed delivery only if its event has still not
        come ``webhook_grace_s`` later (a poll right after the end beats any delivery)."""
        assert self.events is not None
        now = self.clock()
        for it, t in list(self.suspects):
            if is_terminal(self.events.build(it.build_id) or {}):
                self.suspects.remove((it, t))  # late, not lost
            elif now - t >= self.bk.webhook_grace_s and not self.fallen_back:
                self.fallen_back = True
                self.suspects.clear()
                self.next_poll = min(self.next_poll, now + self._interval())
                log.warning("no webhook event for finished build #%s: polling every %.0fs "
                            "again (check the webhook's URL, events and token)", it.number,
                            self._interval())

    def _poll(self, active: list[Item]) -> dict[int, dict[str, Any]]:
        """Current builds of ``active``: one list request per 100 builds of a batch, else GETs."""
        client = self.client
        if self.batch is not None:
            builds = client.list_builds(meta_data={"kitebench_batch": self.batch}, per_page=100,
                                        priority=True)
            return {int(b["number"]): b for b in builds}
        return {it.number: client.get_build(it.number, priority=True)
                for it in active if it.number is not None}

    def _update(self, it: Item, b: dict[str, Any], source: str) -> None:
        it.build = b
        agent = ((main_job(b) or {}).get("agent") or {}).get("name")
        state = str(b.get("state"))
        changed = state != it.state or (agent and agent != it.agent)
        it.state, it.agent = state, agent or it.agent
        if is_terminal(b):
            it.terminal = True
            it.detected_at = self.clock()
            it.detected_by = source
            if source == "poll" and self.events is not None and not self.fallen_back:
                self.suspects.append((it, self.clock()))
        self._emit(it, b, state if changed else None)
        if it.terminal and not it.fetching:
            it.fetching = True
            self.futures[self.pool.submit(self.bk._collect, it, b)] = it

    # -- deadlines, cancel, Ctrl-C ---------------------------------------------------------------

    def _deadlines(self, active: list[Item]) -> None:
        now = self.clock()
        for it in active:
            if it.terminal:
                continue
            if it.cancel_reason is None and it.deadline is not None and now > it.deadline:
                if self.cancel_on_timeout:
                    b, note = self._cancel(it, f"no result within {it.budget_s:.0f}s")
                    self._emit(it, b, None, note)
                else:
                    it.result = self._gave_up(it)
            elif it.cancel_deadline is not None and now > it.cancel_deadline:
                it.result = self._gave_up(it)

    def _interrupted(self) -> None:
        self.stop.set()
        if self.creator is not None:
            self.creator.join(timeout=30)
        live = [it for it in self.items if self.cancel_on_timeout and it.number is not None
                and not it.terminal and it.cancel_reason is None]
        # Cancel everything first: a callback that raises again must not leave builds running.
        notes = [(it, self._cancel(it, "interrupted (Ctrl-C)")) for it in live]
        for it, (b, note) in notes:
            with contextlib.suppress(Exception, KeyboardInterrupt):
                self._emit(it, b, None, note)

    def _cancel(self, it: Item, reason: str) -> tuple[dict[str, Any], str]:
        """Ask Buildkite to cancel; return the build as it answered and a line saying so."""
        it.cancel_reason = reason
        it.cancel_deadline = self.clock() + self.bk.cancel_grace_s
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

    def _gave_up(self, it: Item) -> FullResult:
        b = it.build or {}
        if it.cancel_reason:
            msg = (f"build #{it.number} was cancelled ({it.cancel_reason}) but is still "
                   f"{it.state} after {self.bk.cancel_grace_s:.0f}s; see {b.get('web_url')}")
        else:
            msg = (f"gave up waiting after {it.budget_s:.0f}s: build #{it.number} is still "
                   f"{it.state} (not cancelled; `kitebench cancel {it.number}` stops it)")
        return FullResult.failure(msg, "interrupted", RunnerExit.INTERRUPTED,
                                  details={"buildkite": facts(b, main_job(b))})

    def _emit(self, it: Item, b: dict[str, Any], change: str | None,
              message: str | None = None) -> None:
        if self.on_status is None:
            return
        if message is None:
            if change == "created":
                message = f"build #{it.number} created"
            elif change:
                message = f"build #{it.number} {change}" + (f" on {it.agent}" if it.agent else "")
            else:
                message = ""
        self.on_status(StatusEvent(
            state=str(b.get("state") or it.state or "creating"), message=message,
            elapsed_s=max(0.0, self.clock() - (it.started or self.clock())),
            url=b.get("web_url"), agent=it.agent, build_number=it.number, index=it.index))
