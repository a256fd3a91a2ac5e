"""The stand-in's webhook notification service: POSTs Buildkite events as builds change state.

Like Buildkite's: ``ping`` when a webhook is added, then ``build.scheduled``, ``build.running``,
``job.started``, ``job.finished`` and ``build.finished`` (the subscribed ones), each as soon as
simulated time passes the transition. Body ``{"event", "build" (no job list), "job" (job events
only), "pipeline", "sender"}``; headers ``X-Buildkite-Event`` and either ``X-Buildkite-Token`` or
``X-Buildkite-Signature: timestamp=T,signature=hex(HMAC-SHA256(token, "T.<body>"))``.
Deliveries go out from a small thread pool (so they can arrive out of order, as real ones can);
``lose`` drops chosen ones, and every attempt is recorded in :attr:`Notifier.deliveries`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import requests

if TYPE_CHECKING:
    from tests.bk_standin import StandIn

@dataclass
class Webhook:
    """One registered webhook (organisation notification service)."""

    url: str
    token: str | None = None
    secret: str | None = None
    events: frozenset[str] = frozenset({"build.finished", "job.finished"})
    #: ``lose(event_name, build_number) -> True`` drops that delivery (a lost POST)
    lose: Callable[[str, int | None], bool] | None = None
    delay_s: float = 0.0  #: real seconds each delivery takes to leave (Buildkite's latency)


@dataclass
class Delivery:
    event: str
    build: int | None
    status: int  #: the receiver's answer; 0 = lost or no answer
    t: float  #: simulated time it was sent


class Notifier:
    def __init__(self, standin: StandIn) -> None:
        self.bk = standin
        self.webhooks: list[Webhook] = []
        self.deliveries: list[Delivery] = []
        self._loop: threading.Thread | None = None
        self._senders: ThreadPoolExecutor | None = None
        self._stopping = threading.Event()

    def add(self, url: str, *, token: str | None = None, secret: str | None = None,
            events: tuple[str, ...] | None = None,
            lose: Callable[[str, int | None], bool] | None = None,
            delay_s: float = 0.0) -> Webhook:
        """Register a webhook; it is pinged at once, then sent the subscribed events."""
        hook = Webhook(url, token, secret, frozenset(events) if events else Webhook.events, lose,
                       delay_s)
        with self.bk.lock:
            self.webhooks.append(hook)
            if self._senders is None:
                self._senders = ThreadPoolExecutor(8, thread_name_prefix="standin-webhook")
                self._loop = threading.Thread(target=self._run, daemon=True,
                                              name="standin-notifier")
                self._loop.start()
        self._deliver(hook, "ping", {"event": "ping", "service": {"provider": "webhook"},
                                     "organization": {"slug": self.bk.org},
                                     "sender": {"name": "kitebench tests"}}, None)
        return hook

    def stop(self) -> None:
        self._stopping.set()
        if self._loop is not None:
            self._loop.join(timeout=5)
        if self._senders is not None:
            self._senders.shutdown(wait=True, cancel_futures=True)

    def _run(self) -> None:
        """Send each build's events when simulated time passes its transitions."""
        from tests.bk_standin import FINISHED  # a cycle at import time: bk_standin imports us

        bk = self.bk
        while not self._stopping.wait(0.01):
            due: list[tuple[str, int, dict[str, Any]]] = []
            with bk.lock:
                now = bk.clock.now()
                for b in bk.builds.values():
                    state = bk._state(b, now)
                    steps = ["build.scheduled"]
                    if state != "scheduled" and now >= b.start_at and (
                            b.cancel_at is None or b.cancel_at >= b.start_at):
                        steps += ["build.running", "job.started"]
                    if state in FINISHED:
                        steps += ["job.finished", "build.finished"]
                    for name in steps:
                        if name in b.notified:
                            continue
                        b.notified.add(name)
                        build = bk._build_json(b, now, jobs=False)
                        doc: dict[str, Any] = {"event": name, "build": build}
                        if name.startswith("job."):
                            doc["job"] = bk._job_json(b, now)
                            if name == "job.finished":
                                build["state"] = "running"  # the build ends after its job
                        due.append((name, b.number, doc))
                hooks = list(self.webhooks)
            for name, number, doc in due:
                doc.update(pipeline={"slug": bk.pipeline, "name": bk.pipeline},
                           sender={"id": "u-1", "name": "kitebench tests"})
                for hook in hooks:
                    if name in hook.events:
                        self._deliver(hook, name, doc, number)

    def _deliver(self, hook: Webhook, name: str, doc: dict[str, Any], number: int | None) -> None:
        t = self.bk.clock.now()
        if hook.lose is not None and hook.lose(name, number):
            with self.bk.lock:
                self.deliveries.append(Delivery(name, number, 0, t))
            return
        body = json.dumps(doc).encode()
        headers = {"Content-Type": "application/json", "User-Agent": "Buildkite-Request",
                   "X-Buildkite-Event": name}
        if hook.secret is not None:
            stamp = str(int(time.time()))
            sig = hmac.new(hook.secret.encode(), stamp.encode() + b"." + body,
                           hashlib.sha256).hexdigest()
            headers["X-Buildkite-Signature"] = f"timestamp={stamp},signature={sig}"
        elif hook.token is not None:
            headers["X-Buildkite-Token"] = hook.token

        def send() -> None:
            time.sleep(hook.delay_s)
            try:
                status = requests.post(hook.url, data=body, headers=headers, timeout=10).status_code
            except requests.RequestException:
                status = 0
            with self.bk.lock:
                self.deliveries.append(Delivery(name, number, status, t))

        assert self._senders is not None
        self._senders.submit(send)
