"""``--backend local --isolation docker``: the vendor host's job wrapper, on this machine.

The same code path as ``kitebench job`` (same image, same isolation), minus Buildkite: no
publishing, and no GPU unless ``KITEBENCH_GPU_UUID``/``KITEBENCH_GPU_INDEX`` says which one.
The image is ``KITEBENCH_IMAGE`` or :data:`DEFAULT_IMAGE` (build it as images/README.md shows);
it is never pulled.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from contract.result import FullResult
from host.settings import DEFAULT_IMAGE
from launcher.base import StatusCallback, StatusEvent
from launcher.errors import InfraError, UsageError

if TYPE_CHECKING:
    from contract.payload import AnyPayload


def docker_available(timeout_s: float = 5) -> bool:
    """True when the docker SDK is installed and an engine answers a ping."""
    from host.engine import EngineUnavailable, docker_client

    try:
        docker_client(timeout_s).close()
        return True
    except EngineUnavailable:  # no SDK, no socket, permission denied, engine down
        return False


def image_for(payload: AnyPayload, env: Mapping[str, str] | None = None) -> str | None:
    """The image a local docker run of ``payload`` would use; None when there is none for it
    (a model payload needs an image with vLLM: KITEBENCH_MODEL_IMAGE)."""
    env = os.environ if env is None else env
    if getattr(payload, "lang", None) == "model":
        return env.get("KITEBENCH_MODEL_IMAGE") or None
    return env.get("KITEBENCH_IMAGE") or DEFAULT_IMAGE


def image_present(image: str, timeout_s: float = 10) -> bool:
    from host.engine import docker_client

    try:
        client = docker_client(timeout_s)
        try:
            client.images.get(image)
            return True
        finally:
            client.close()
    except Exception:  # not found, or the engine went away: either way not usable
        return False


def run_payload_in_docker(
    payload: AnyPayload,
    *,
    output_dir: Path,
    on_status: StatusCallback | None = None,
    timeout_s: float | None = None,
    env: Mapping[str, str] | None = None,
) -> FullResult:
    """Run a validated payload in the runner image with the host wrapper's isolation; write
    ``output_dir/result.json`` and return it. Raises InfraError when docker itself fails."""
    from contract import codec
    from contract.resultio import write_result
    from host.job import HostExit, run_job
    from host.settings import HostSettings, SettingsError

    env = dict(os.environ if env is None else env)
    env.setdefault("KITEBENCH_IMAGE", DEFAULT_IMAGE)
    try:
        settings = HostSettings.from_env(env)
    except SettingsError as e:
        raise UsageError(str(e)) from None
    try:
        text = codec.encode(payload)
    except codec.PayloadTooLarge as e:
        raise UsageError(f"{e.message}; use --isolation process for payloads this large") from None

    t0 = time.monotonic()

    def status(state: str, message: str) -> None:
        if on_status is not None:
            on_status(StatusEvent(state=state, message=message, elapsed_s=time.monotonic() - t0))

    # The container sees only the payload and runner settings (never this shell's secrets).
    host_env = {k: v for k, v in env.items() if k.startswith("KITEBENCH_")}
    host_env["SUBMISSION_PAYLOAD"] = text
    outcome = run_job(text, settings, host_env=host_env, on_status=status, timeout_s=timeout_s)
    if outcome.exit_code in (HostExit.INFRA, HostExit.CONFIG):
        raise InfraError(f"docker isolation: {outcome.result.error}")
    write_result(outcome.result, output_dir)
    return outcome.result
