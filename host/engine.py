"""The one way kitebench reaches a Docker engine.

The docker SDK is imported here, lazily: the runner image does not install it, and ``kitebench
--help`` should not pay for it.
"""

from __future__ import annotations

from typing import Any

#: Seconds the SDK waits on one engine API call (pulls are never made; builds pass their own).
API_TIMEOUT_S = 120


class EngineUnavailable(Exception):
    """No engine to talk to. ``sdk_missing``: the docker SDK is not installed (a configuration
    problem of this machine, not an engine fault)."""

    def __init__(self, message: str, *, sdk_missing: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.sdk_missing = sdk_missing


def short(e: BaseException, limit: int = 300) -> str:
    """An exception's text on one line, at most ``limit`` characters."""
    text = " ".join(str(e).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def docker_client(timeout: float = API_TIMEOUT_S) -> Any:
    """A client from the environment (DOCKER_HOST, ...) whose engine answered a ping."""
    try:
        import docker
        from docker.errors import DockerException
    except ImportError:
        raise EngineUnavailable("the docker SDK is not installed (pip install docker)",
                                sdk_missing=True) from None
    try:
        client = docker.from_env(timeout=max(1, int(timeout)))
        client.ping()
    except DockerException as e:
        raise EngineUnavailable(f"docker engine unavailable: {short(e)}") from None
    return client
