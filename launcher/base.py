"""The launcher interface every backend implements, and the options of one submission.

A backend turns a validated payload into a :class:`contract.result.FullResult`. Backends are
looked up by name in :data:`BACKENDS` (lazily imported), so each lives in its own module:

    local       launcher.local      the runner on this machine (Docker when present, else a subprocess)
    buildkite   launcher.buildkite  a build on a per-GPU Buildkite queue
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from contract.result import FullResult
from launcher.errors import UsageError

if TYPE_CHECKING:
    from contract.payload import AnyPayload


@dataclass(frozen=True)
class StatusEvent:
    """A progress report from a launcher (shown as a live status line by the CLI)."""

    state: str  #: e.g. "scheduled", "running", "passed", or a local stage such as "compile"
    message: str = ""
    elapsed_s: float = 0.0
    url: str | None = None  #: build web URL (buildkite)
    agent: str | None = None  #: agent name once a job started (buildkite)
    build_number: int | None = None
    #: Which payload of a ``submit_many`` batch this is about (its position in the input).
    index: int | None = None


StatusCallback = Callable[[StatusEvent], None]


@dataclass
class SubmitOptions:
    """Everything `kitebench submit` (and :func:`launcher.api.submit`) can be told."""

    task_dir: Path
    submission: Path | None = None
    archive: Path | None = None  #: model tasks: the fork archive
    mode: str = "test"
    backend: str | None = None  #: None: buildkite when BUILDKITE_API_TOKEN is set, else local
    gpu: str | None = None  #: GPU name from the registry (buildkite)
    queue: str | None = None  #: explicit Buildkite queue (bypasses the registry)
    arch: str | None = None
    timeout_s: float | None = None  #: overall wait budget; None = from the payload's timeouts
    gpus_file: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)  #: backend-specific settings


class Launcher(Protocol):
    name: str

    def run(self, payload: AnyPayload, *, on_status: StatusCallback | None = None,
            timeout_s: float | None = None) -> FullResult:
        """Run one payload to a result. Infrastructure failures raise
        :class:`launcher.errors.InfraError`; everything about the submission is in the result."""
        ...


#: backend name → "module:Class"; each class has ``from_options(SubmitOptions) -> Launcher``.
BACKENDS: dict[str, str] = {
    "local": "launcher.local:LocalLauncher",
    "buildkite": "launcher.buildkite:BuildkiteLauncher",
}


def default_backend(env: dict[str, str] | None = None) -> str:
    env = dict(os.environ) if env is None else env
    return "buildkite" if env.get("BUILDKITE_API_TOKEN") else "local"


def make_launcher(opts: SubmitOptions) -> Launcher:
    name = opts.backend or default_backend()
    target = BACKENDS.get(name)
    if target is None:
        raise UsageError(f"unknown backend {name!r} (expected one of: {', '.join(BACKENDS)})")
    module, _, cls = target.partition(":")
    return getattr(importlib.import_module(module), cls).from_options(opts)
