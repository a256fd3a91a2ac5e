"""The errors of the Buildkite REST client, and the one function that maps an answer to them.

All carry a message without the token::

    InfraError (launcher.errors, exit 3)
    ├── TransportError        no HTTP answer: connection refused/reset, timeout (``.ambiguous``
    │                         when a non-idempotent request may have reached the server)
    ├── ArtifactError         an artifact download failed or its sha1sum did not match
    └── ApiError              an HTTP error answer: ``.status``, ``.message``, ``.body``
        ├── ServerError       5xx (after retries for idempotent methods)
        ├── RateLimited       429 still there after the allowed waits
        ├── AuthError         401/403; also a UsageError (exit 2); ``.scope`` = the missing scope
        ├── NotFound          404; also a UsageError (wrong org/pipeline/build number)
        └── ValidationFailed  422 with Buildkite's message; also a UsageError
    ConfigError (UsageError, exit 2): no token / org / pipeline configured.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import requests

from launcher.errors import InfraError, UsageError


class ConfigError(UsageError):
    """The client is not configured (token, org or pipeline missing)."""


class TransportError(InfraError):
    """No HTTP answer arrived. ``ambiguous``: a non-idempotent request may have been processed."""

    def __init__(self, message: str, *, ambiguous: bool = False) -> None:
        super().__init__(message)
        self.ambiguous = ambiguous


class ArtifactError(InfraError):
    """An artifact could not be downloaded, or its content does not match its sha1sum."""


class ApiError(InfraError):
    """Buildkite answered with an HTTP error."""

    def __init__(self, status: int, message: str, body: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = body


class ServerError(ApiError):
    pass


class RateLimited(ApiError):
    pass


class AuthError(ApiError, UsageError):
    exit_code = 2

    def __init__(self, status: int, message: str, body: Any = None, scope: str | None = None):
        super().__init__(status, message, body)
        self.scope = scope


class NotFound(ApiError, UsageError):
    exit_code = 2


class ValidationFailed(ApiError, UsageError):
    exit_code = 2


_SCOPE_RE = re.compile(r"\b((?:read|write)_[a-z_]+)\b")


def error_for(resp: requests.Response, what: str, scrub: Callable[[str], str]) -> ApiError:
    """The typed error of a non-2xx answer; ``scrub`` removes the token from echoed text."""
    status = resp.status_code
    try:
        body: Any = resp.json()
    except ValueError:
        body = resp.text[:2000]
    server_msg = body.get("message") if isinstance(body, dict) else None
    server_msg = scrub(str(server_msg or resp.reason or "").strip())[:500]
    msg = f"{what}: HTTP {status}" + (f": {server_msg}" if server_msg else "")
    if status in (401, 403):
        m = _SCOPE_RE.search(server_msg)
        scope = m.group(1) if m else None
        hint = (f" (the API token lacks the {scope} scope)" if scope else
                " (check BUILDKITE_API_TOKEN and its scopes: write_builds, read_builds, "
                "read_artifacts, read_build_logs)")
        return AuthError(status, msg + hint, body, scope=scope)
    if status == 404:
        return NotFound(status, msg + " (check BUILDKITE_ORG, BUILDKITE_PIPELINE and the "
                        "build number; a token without access also gets 404)", body)
    if status == 422:
        return ValidationFailed(status, msg, body)
    if status == 429:
        return RateLimited(status, msg, body)
    if status >= 500:
        return ServerError(status, msg, body)
    return ApiError(status, msg, body)


def transport_kind(e: BaseException) -> str:
    """A short phrase for a requests exception (never its text: that may quote headers)."""
    if isinstance(e, requests.ConnectTimeout):
        return "connect timeout"
    if isinstance(e, requests.ReadTimeout):
        return "read timeout (no answer in time)"
    if isinstance(e, requests.ConnectionError):
        return "connection refused" if refused(e) else "connection failed or reset"
    return type(e).__name__


def refused(e: BaseException) -> bool:
    """Whether the connection was refused (the request never reached the server)."""
    seen = 0
    cur: BaseException | None = e
    while cur is not None and seen < 8:
        if isinstance(cur, ConnectionRefusedError):
            return True
        nxt = getattr(cur, "reason", None)
        if not isinstance(nxt, BaseException):
            nxt = cur.args[0] if cur.args and isinstance(cur.args[0], BaseException) else None
        cur = nxt if nxt is not None else cur.__context__
        seen += 1
    return False
