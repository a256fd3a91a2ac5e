"""Read a running container's cgroup counters from the host (cgroup v1 and v2).

Docker reports OOM kills (``State.OOMKilled``) but not a process limit that was hit, so while the
container runs a small thread samples ``pids.events`` ("max N": N forks were refused). The cgroup
disappears when the container exits, hence sampling instead of one read at the end.
"""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path

from runner.system import CGROUP_ROOT, pids_events_paths, read_max_events


def pids_events_path(pid: int, root: Path = CGROUP_ROOT) -> Path | None:
    """The ``pids.events`` file of the cgroup that process ``pid`` is in, if readable."""
    return next((p for p in pids_events_paths(pid, root) if p.exists()), None)


class PidsWatch:
    """Samples ``pids.events`` of a container's cgroup until stopped; ``.max_events`` is the last
    count seen (forks refused by the pids limit), ``None`` when the file could not be read."""

    def __init__(self, pid: int, interval_s: float = 0.25) -> None:
        self.path = pids_events_path(pid) if pid > 0 else None
        self.max_events: int | None = None
        self._interval = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="kitebench-pids", daemon=True)

    def __enter__(self) -> PidsWatch:
        if self.path is not None:
            self._sample()
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        with contextlib.suppress(Exception):
            self._sample()  # one last read, in case the cgroup still exists

    def _sample(self) -> None:
        if self.path is None:
            return
        n = read_max_events(self.path)
        if n is not None:
            self.max_events = max(n, self.max_events or 0)

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            self._sample()
