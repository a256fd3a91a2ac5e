"""kernelbot adapter: kitebench's Buildkite backend in the shape of a kernelbot launcher.

kernelbot's launchers implement ``async run_submission(config, gpu_type, status) -> FullResult``
where ``config`` is the run config dict (our payload), ``gpu_type`` a GPU enum member (its
``value``/``name`` is the GPU name, e.g. ``"H100"``) and ``status`` a progress reporter with
``async push(text)`` (a new line) and ``async update(text)`` (rewrite the last line).

    from launcher.kernelbot import BuildkiteKernelbotLauncher
    launcher = BuildkiteKernelbotLauncher(gpus=MyGpuEnum)       # settings from BUILDKITE_* env
    result = await launcher.run_submission(config, MyGpuEnum.H100, reporter)

Return value: :class:`contract.result.FullResult` (a pydantic model whose fields are kernelbot's
``FullResult`` field for field, plus the ``kitebench`` extension). Pass ``as_dict=True`` for
plain JSON data instead (``result.model_dump(mode="json")``), e.g. to build kernelbot's own
dataclasses. Problems never raise: a configuration or infrastructure error comes back as a result
with ``success=False`` and the reason in ``error``, as kernelbot's launchers do. If the calling
task is cancelled, the build is cancelled on Buildkite too.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from contract.result import FullResult, RunnerExit
from launcher.base import StatusEvent, SubmitOptions
from launcher.errors import KitebenchError, UsageError

#: How often an unchanged status line is refreshed (chat messages should not be edited too often).
REFRESH_S = 15.0


class Reporter(Protocol):
    async def push(self, content: Any) -> None: ...

    async def update(self, content: Any) -> None: ...


def gpu_name(gpu_type: Any) -> str:
    """``"H100"`` from a GPU enum member, a kernelbot GPU record, or a string."""
    if isinstance(gpu_type, str):
        return gpu_type
    value = getattr(gpu_type, "value", None)
    if isinstance(value, str):
        return value
    name = getattr(gpu_type, "name", None)
    if isinstance(name, str):
        return name
    raise UsageError(f"cannot tell the GPU name of {gpu_type!r}")


class BuildkiteKernelbotLauncher:
    """A kernelbot ``Launcher``: ``name``, ``gpus`` and ``async run_submission``."""

    def __init__(self, *, name: str = "Buildkite", gpus: type[enum.Enum] | None = None,
                 factory: Callable[[str], Any] | None = None, as_dict: bool = False,
                 gpus_file: Path | None = None) -> None:
        self.name = name
        self.gpus = gpus
        self.as_dict = as_dict
        self._factory = factory or (lambda gpu: _default_launcher(gpu, gpus_file))

    async def run_submission(self, config: dict[str, Any], gpu_type: Any,
                             status: Reporter) -> FullResult | dict[str, Any]:
        result = await _run(config, gpu_type, status, self._factory)
        return result.model_dump(mode="json") if self.as_dict else result


async def run_submission(config: dict[str, Any], gpu_type: Any, status: Reporter, *,
                         launcher: Any = None, as_dict: bool = False,
                         gpus_file: Path | None = None) -> FullResult | dict[str, Any]:
    """Module-level form of :meth:`BuildkiteKernelbotLauncher.run_submission`; ``launcher`` is a
    ready :class:`launcher.buildkite.BuildkiteLauncher` (default: from the environment)."""
    def factory(gpu: str) -> Any:
        return launcher if launcher is not None else _default_launcher(gpu, gpus_file)

    result = await _run(config, gpu_type, status, factory)
    return result.model_dump(mode="json") if as_dict else result


def _default_launcher(gpu: str, gpus_file: Path | None) -> Any:
    from launcher.buildkite import BuildkiteLauncher

    return BuildkiteLauncher.from_options(SubmitOptions(task_dir=Path("."), gpu=gpu,
                                                        gpus_file=gpus_file))


async def _run(config: dict[str, Any], gpu_type: Any, status: Reporter,
               factory: Callable[[str], Any]) -> FullResult:
    loop = asyncio.get_running_loop()
    try:
        name = gpu_name(gpu_type)
        launcher = factory(name)
    except KitebenchError as e:
        await status.push(f"Buildkite: cannot submit: {e.message}")
        return FullResult.failure(e.message, "internal", RunnerExit(e.exit_code))
    await status.push(f"Buildkite: submitting to {name} (queue {launcher.queue})")
    seen: dict[str, Any] = {"number": None, "state": None, "shown": 0.0}
    pending: list[asyncio.Future[Any]] = []

    def on_status(ev: StatusEvent) -> None:  # runs in the launcher's thread
        seen["number"] = ev.build_number or seen["number"]
        now = time.monotonic()
        if not ev.message and ev.state == seen["state"] and now - seen["shown"] < REFRESH_S:
            return
        seen["state"], seen["shown"] = ev.state, now
        text = f"Buildkite build #{ev.build_number}: {ev.state}"
        text += f" on {ev.agent}" if ev.agent else ""
        text += f" ({ev.elapsed_s:.0f}s)" + (f" {ev.url}" if ev.url else "")
        pending.append(asyncio.run_coroutine_threadsafe(status.update(text), loop))

    task = asyncio.ensure_future(asyncio.to_thread(launcher.run, config, on_status=on_status))
    try:
        result: FullResult = await asyncio.shield(task)
    except asyncio.CancelledError:
        # Our caller gave up: stop the build; the launcher thread then sees it end.
        if seen["number"] is not None:
            await asyncio.to_thread(launcher.cancel, seen["number"])
        raise
    except KitebenchError as e:
        result = FullResult.failure(e.message, "internal", RunnerExit(min(e.exit_code, 3)))
    for fut in pending:
        await asyncio.wrap_future(fut)
    verdict = "passed" if result.passed else ("ran" if result.success else "failed")
    await status.update(f"Buildkite build #{seen['number']}: {verdict}"
                        + (f": {result.error.splitlines()[0]}" if result.error else ""))
    return result
