"""The stand-in's simulated world: its clock, what a build does, faults and the request log."""

from __future__ import annotations

import datetime as dt
import json
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from contract.result import FullResult, KitebenchInfo, SystemInfo

#: Buildkite's ``state=finished`` filter.
FINISHED = ("passed", "failed", "blocked", "canceled")


class VirtualClock:
    """Simulated seconds since start; ``scale`` simulated seconds pass per real second."""

    def __init__(self, scale: float = 1.0) -> None:
        self.scale = scale
        self._t0 = time.monotonic()
        self._wall0 = dt.datetime.now(dt.UTC)

    def now(self) -> float:
        return (time.monotonic() - self._t0) * self.scale

    def sleep(self, seconds: float) -> None:
        time.sleep(max(0.0, seconds) / self.scale)

    def iso(self, t: float | None) -> str | None:
        if t is None:
            return None
        stamp = self._wall0 + dt.timedelta(seconds=t)
        return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def passing_result(**info: Any) -> dict[str, Any]:
    """A result.json document of a run that passed."""
    res = FullResult(success=True, system=SystemInfo(gpu="NVIDIA H100 80GB HBM3"),
                     kitebench=KitebenchInfo(passed=True, exit_code=0, **info))
    return json.loads(res.to_json())


@dataclass
class BuildPlan:
    """What one simulated build does (times in simulated seconds)."""

    state: str = "passed"  #: final build state when the job ends by itself
    queue_s: float = 1.0  #: scheduled → running
    run_s: float = 2.0  #: running → finished
    exit_status: int | None = 0
    signal: str | None = None
    signal_reason: str | None = None
    job_state: str | None = None  #: final job state (default: the build state)
    #: result.json content (dict → JSON, str/bytes as is); None → no artifact
    result: Any = field(default_factory=passing_result)
    #: result.json uploaded when the build is cancelled while running (None → none)
    result_on_cancel: Any = None
    log: str = "~~~ kitebench job\nrunning the submission\n"
    agent: str = "gpu-host-1-0"
    cancel_grace_s: float = 1.0
    corrupt_sha1: bool = False  #: advertise a wrong sha1sum for result.json


@dataclass
class Fault:
    method: str
    path: re.Pattern[str]
    kind: str  #: 500 | 500_after | drop | drop_after | slow | slow_after
    times: int = 1
    delay_s: float = 0.0  #: real seconds, for slow*


@dataclass
class SimBuild:
    number: int
    id: str
    body: dict[str, Any]
    plan: BuildPlan
    created: float
    job_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    cancel_at: float | None = None
    cancel_state_at: str | None = None  #: state when the cancel arrived
    artifacts: list[dict[str, Any]] = field(default_factory=list)
    finalized: bool = False
    notified: set[str] = field(default_factory=set)  #: webhook events already sent

    @property
    def start_at(self) -> float:
        return self.created + self.plan.queue_s

    @property
    def end_at(self) -> float:
        if self.cancel_at is not None:
            if self.cancel_state_at == "running":
                return min(self.cancel_at + self.plan.cancel_grace_s, self.natural_end)
            return self.cancel_at
        return self.natural_end

    @property
    def natural_end(self) -> float:
        return self.start_at + self.plan.run_s


@dataclass
class LogEntry:
    t: float
    token: str  #: a label, never the token itself ("token#1")
    method: str
    path: str
    status: int
