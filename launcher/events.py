"""BuildEvents: where webhook deliveries meet the waiter, inside one process.

The receiver (:mod:`launcher.webhook`, or your own code) calls :meth:`BuildEvents.publish` with a
Buildkite event; the waiter (:class:`launcher.follow.Follower`) asks :meth:`BuildEvents.build` for
the latest known state of the builds it follows and sleeps in :meth:`BuildEvents.wait`, which
returns as soon as anything new arrives. Builds are keyed by their UUID (``build.id``): build
numbers repeat across pipelines and one organisation webhook reports every pipeline.

Events may arrive out of order; a terminal build state is never replaced by an earlier one.
``job.*`` events carry the job, which is kept and handed out as the build's ``jobs`` (build
events carry no job list), so a finished build can be collected without another API request.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

#: The build states after which nothing changes (the one copy; the client re-exports it).
TERMINAL_STATES = frozenset({"passed", "failed", "canceled", "skipped", "not_run"})

Listener = Callable[[dict[str, Any]], None]


class BuildEvents:
    """Thread-safe latest-state-per-build store with a wake-up for waiters.

    ``time_scale``: simulated seconds per real second, for a waiter driven by a simulated clock
    (tests and benchmarks); 1 in real use.
    """

    def __init__(self, *, max_builds: int = 10_000, time_scale: float = 1.0) -> None:
        self._builds: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._jobs: dict[str, dict[str, dict[str, Any]]] = {}
        self._max = max_builds
        self._scale = time_scale
        self._cond = threading.Condition()
        self._listeners: list[Listener] = []
        self.seq = 0  #: number of events published (a waiter's "anything new?" marker)

    def subscribe(self, listener: Listener) -> None:
        """Also call ``listener(event)`` for every published event (e.g. to print it)."""
        self._listeners.append(listener)

    def publish(self, event: dict[str, Any]) -> None:
        build = event.get("build")
        if isinstance(build, dict) and build.get("id"):
            bid = str(build["id"])
            with self._cond:
                old = self._builds.get(bid)
                if old is None or old.get("state") not in TERMINAL_STATES:
                    self._builds[bid] = {k: v for k, v in build.items() if k != "jobs"}
                self._builds.move_to_end(bid)
                job = event.get("job")
                if isinstance(job, dict) and job.get("id"):
                    self._jobs.setdefault(bid, {})[str(job["id"])] = job
                while len(self._builds) > self._max:
                    gone, _ = self._builds.popitem(last=False)
                    self._jobs.pop(gone, None)
        with self._cond:
            self.seq += 1
            self._cond.notify_all()
        for listener in list(self._listeners):
            listener(event)

    def build(self, build_id: str | None) -> dict[str, Any] | None:
        """The build as the latest event told it, with ``jobs`` when job events came (absent
        otherwise: unknown, not empty); None when no event named it."""
        if not build_id:
            return None
        with self._cond:
            b = self._builds.get(build_id)
            if b is None:
                return None
            out = dict(b)
            jobs = self._jobs.get(build_id)
            if jobs:
                out["jobs"] = list(jobs.values())
            return out

    def wait(self, seen: int, timeout_s: float) -> int:
        """Block until an event newer than ``seen`` arrives or ``timeout_s`` pass; the new seq."""
        with self._cond:
            self._cond.wait_for(lambda: self.seq != seen, timeout=max(0.0, timeout_s) / self._scale)
            return self.seq


def is_terminal(build: dict[str, Any]) -> bool:
    return build.get("state") in TERMINAL_STATES
