"""A thin client for Buildkite's REST API v2: one ``requests.Session``, one choke point.

Every call goes through :meth:`BuildkiteClient._request`, which builds the URL, applies the bearer
auth and a ``(connect, read)`` timeout, lets the :class:`~launcher.retry.RateGate` hold it back
while the token's window is spent, asks the :class:`~launcher.retry.RetryPolicy` whether a failure
is sent again, and turns non-2xx answers into the typed errors of :mod:`launcher.bk_errors`
(re-exported here). Endpoints are small methods returning Buildkite's JSON as plain dicts.
Policy (idempotent create, polling, batching) lives in :mod:`launcher.buildkite`, not here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter

from launcher.bk_errors import (
    ApiError,
    ArtifactError,
    AuthError,
    ConfigError,
    NotFound,
    RateLimited,
    ServerError,
    TransportError,
    ValidationFailed,
    error_for,
    refused,
    transport_kind,
)
from launcher.errors import InfraError
from launcher.events import TERMINAL_STATES, is_terminal
from launcher.retry import RateGate, RetryPolicy

__all__ = ["ApiError", "ArtifactError", "AuthError", "BuildkiteClient", "ConfigError", "NotFound",
           "RateLimited", "ServerError", "TransportError", "TERMINAL_STATES", "ValidationFailed",
           "is_terminal"]

log = logging.getLogger("kitebench.buildkite")

DEFAULT_API_URL = "https://api.buildkite.com/v2"
#: (connect, read) seconds, applied to every request.
DEFAULT_TIMEOUT: tuple[float, float] = (5.0, 30.0)
IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})

Timeout = tuple[float, float] | float | None


class _Default:
    def __repr__(self) -> str:
        return "USE_DEFAULT"


#: "use the client's default" (so ``None`` can still mean "no timeout").
USE_DEFAULT: Any = _Default()


class BearerAuth(requests.auth.AuthBase):
    """``Authorization: Bearer <token>``; the token never shows in repr or str."""

    def __init__(self, token: str) -> None:
        self._token = token

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        r.headers["Authorization"] = f"Bearer {self._token}"
        return r

    def __repr__(self) -> str:
        return "BearerAuth(<redacted>)"

    __str__ = __repr__

    def scrub(self, text: str) -> str:
        """``text`` with the token replaced (belt and braces for echoed server messages)."""
        return text.replace(self._token, "<redacted>") if self._token else text


# ---------------------------------------------------------------------------------------------
# The client
# ---------------------------------------------------------------------------------------------


class BuildkiteClient:
    """Buildkite REST API v2 for one organisation and pipeline. Use as a context manager or call
    :meth:`close`; a closed client refuses to send."""

    def __init__(
        self,
        token: str | None = None,
        *,
        org: str | None = None,
        pipeline: str | None = None,
        base_url: str | None = None,
        session: requests.Session | None = None,
        timeout: Timeout = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        max_retries: int | None = None,
        backoff_s: float | None = None,
        max_rate_wait_s: float | None = None,
        max_rate_waits: int | None = None,
        rate_gate: bool = True,
        reserve: int = 4,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        env: Mapping[str, str] | None = None,
    ) -> None:
        env = os.environ if env is None else env
        token = token if token is not None else env.get("BUILDKITE_API_TOKEN")
        if not token:
            raise ConfigError("BUILDKITE_API_TOKEN is not set (an API access token with "
                              "write_builds, read_builds, read_artifacts, read_build_logs)")
        # A token read from a file often ends in a newline; anything else that is not printable
        # would make requests raise an error that quotes the header, i.e. the token.
        token = token.strip()
        if not token or not token.isascii() or not token.isprintable() or " " in token:
            raise ConfigError("BUILDKITE_API_TOKEN contains whitespace, control or non-ASCII "
                              "characters (value not shown)")
        self._auth = BearerAuth(token)
        self.org = org or env.get("BUILDKITE_ORG") or None
        self.pipeline = pipeline or env.get("BUILDKITE_PIPELINE") or None
        self.base_url = (base_url or env.get("BUILDKITE_API_URL") or DEFAULT_API_URL).rstrip("/")
        if not self.base_url.startswith(("https://", "http://")):
            raise ConfigError(f"BUILDKITE_API_URL must be an http(s) URL, got {self.base_url!r}")
        self._own_session = session is None
        if session is None:
            session = requests.Session()
            # Enough pooled connections for the launcher's worker threads; no hidden retries
            # (urllib3 must never re-send a POST behind our back).
            adapter = HTTPAdapter(pool_connections=4, pool_maxsize=32, max_retries=0)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
        self._session = session
        self.timeout = timeout
        # Every call's retry decisions; the single keyword arguments override its defaults.
        overrides = {k: v for k, v in (("max_retries", max_retries), ("backoff_s", backoff_s),
                                       ("max_rate_wait_s", max_rate_wait_s),
                                       ("max_rate_waits", max_rate_waits)) if v is not None}
        self.retry = dataclasses.replace(retry or RetryPolicy(), **overrides)
        self.reserve = reserve
        self.clock = clock
        self.sleep = sleep
        self.gate = (RateGate(clock=clock, sleep=sleep, max_wait=self.retry.max_rate_wait_s)
                     if rate_gate else None)
        self._closed = False
        self._origin = _origin(self.base_url)

    @property
    def max_retries(self) -> int:
        return self.retry.max_retries

    def __repr__(self) -> str:
        return (f"BuildkiteClient(base_url={self.base_url!r}, org={self.org!r}, "
                f"pipeline={self.pipeline!r}, auth=<redacted>)")

    def __enter__(self) -> BuildkiteClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._closed = True
        if self._own_session:
            self._session.close()

    # -- the choke point ------------------------------------------------------------------------

    def _url(self, path: str) -> str:
        if path.startswith(("https://", "http://")):
            # Absolute URLs come from the server (Link headers, artifact URLs): the token may only
            # go back to the API's own origin.
            if _origin(path) != self._origin:
                raise InfraError(f"refusing to send the API token to {_origin(path)} "
                                 f"(API is {self._origin})")
            return path
        return f"{self.base_url}/{path.lstrip('/')}"

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: Any = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        timeout: Timeout = USE_DEFAULT,
        allow_redirects: bool = True,
        ok: tuple[int, ...] = (),
        priority: bool = False,
        stream: bool = False,
    ) -> requests.Response:
        """Send one API request; return the 2xx (or ``ok``-listed) response or raise typed."""
        if self._closed:
            raise InfraError("the Buildkite client is closed")
        method = method.upper()
        url = self._url(path)
        what = f"{method} {_display(url)}"
        timeout = self.timeout if timeout is USE_DEFAULT else timeout
        idempotent = method in IDEMPOTENT
        tries = self.retry.attempts()
        while True:
            if self.gate is not None:
                self.gate.acquire(0 if priority else self.reserve)
            try:
                resp = self._session.request(
                    method, url, params=params, json=json, headers=dict(headers or {}),
                    auth=self._auth, timeout=timeout, allow_redirects=allow_redirects,
                    stream=stream,
                )
            except requests.RequestException as e:
                kind = transport_kind(e)
                # A refused connection never reached the server: safe to retry even a POST.
                safe = idempotent or isinstance(e, requests.ConnectTimeout) or refused(e)
                wait = tries.after_transport_error(safe)
                if wait is None:
                    raise TransportError(f"{what}: {kind}", ambiguous=not safe) from None
                log.debug("%s: %s, retry %d", what, kind, tries.retries)
                self.sleep(wait)
                continue
            log.debug("%s -> %d", what, resp.status_code)
            if self.gate is not None:
                self.gate.update(resp.headers, exhausted=resp.status_code == 429)
            status = resp.status_code
            if status < 400 or status in ok:
                return resp
            wait = tries.after_answer(resp, idempotent=idempotent)
            if wait is None:
                raise error_for(resp, what, self._auth.scrub)
            log.log(logging.INFO if status == 429 else logging.DEBUG,
                    "%s: HTTP %d, waiting %.1fs", what, status, wait)
            resp.close()
            self.sleep(wait)

    # -- helpers ---------------------------------------------------------------------------------

    def _pipeline_path(self) -> str:
        if not self.org or not self.pipeline:
            raise ConfigError("Buildkite organisation and pipeline are not set "
                              "(BUILDKITE_ORG / BUILDKITE_PIPELINE or --org / --pipeline)")
        return f"organizations/{self.org}/pipelines/{self.pipeline}"

    def _builds_path(self, number: int | None = None) -> str:
        base = f"{self._pipeline_path()}/builds"
        return base if number is None else f"{base}/{int(number)}"

    def paginate(self, path: str, *, params: Any = None, max_pages: int | None = None,
                 priority: bool = False) -> Iterator[Any]:
        """Items of a list endpoint, following ``Link: <...>; rel="next"``."""
        url: str | None = path
        pages = 0
        while url is not None:
            resp = self._request("GET", url, params=params, priority=priority)
            params = None  # the next link carries the query
            data = resp.json()
            yield from data if isinstance(data, list) else [data]
            pages += 1
            url = resp.links.get("next", {}).get("url")
            if url is not None and max_pages is not None and pages >= max_pages:
                log.warning("GET %s: stopped after %d pages, more exist", _display(path), pages)
                return

    # -- endpoints -------------------------------------------------------------------------------

    def create_build(
        self,
        *,
        commit: str = "HEAD",
        branch: str = "main",
        message: str | None = None,
        env: Mapping[str, str] | None = None,
        meta_data: Mapping[str, str] | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        """``POST .../builds`` (not idempotent: see :mod:`launcher.buildkite`)."""
        body: dict[str, Any] = {"commit": commit, "branch": branch, **extra}
        if message is not None:
            body["message"] = message
        if env:
            body["env"] = dict(env)
        if meta_data:
            body["meta_data"] = dict(meta_data)
        return self._request("POST", self._builds_path(), json=body).json()

    def get_build(self, number: int, *, include_jobs: bool = True,
                  priority: bool = False) -> dict[str, Any]:
        params = {"exclude_pipeline": "true"}
        if not include_jobs:
            params["exclude_jobs"] = "true"
        return self._request("GET", self._builds_path(number), params=params,
                             priority=priority).json()

    def list_builds(
        self,
        *,
        meta_data: Mapping[str, str] | None = None,
        state: str | list[str] | tuple[str, ...] | None = None,
        branch: str | None = None,
        per_page: int = 100,
        include_jobs: bool = True,
        org_wide: bool = False,
        max_pages: int | None = None,
        priority: bool = False,
    ) -> list[dict[str, Any]]:
        """Builds of the pipeline (or the whole org) matching meta-data and state filters."""
        params: list[tuple[str, str]] = [("per_page", str(max(1, min(per_page, 100)))),
                                         ("exclude_pipeline", "true")]
        if not include_jobs:
            params.append(("exclude_jobs", "true"))
        for k, v in (meta_data or {}).items():
            params.append((f"meta_data[{k}]", str(v)))
        states = [state] if isinstance(state, str) else list(state or [])
        params += [("state[]", s) for s in states]
        if branch:
            params.append(("branch", branch))
        path = f"organizations/{self.org}/builds" if org_wide else self._builds_path()
        if org_wide and not self.org:
            raise ConfigError("Buildkite organisation is not set (BUILDKITE_ORG or --org)")
        return list(self.paginate(path, params=params, max_pages=max_pages, priority=priority))

    def cancel_build(self, number: int) -> dict[str, Any]:
        """``PUT .../builds/{n}/cancel``; 422 (ValidationFailed) when it is already finished."""
        return self._request("PUT", f"{self._builds_path(number)}/cancel").json()

    def list_artifacts(self, number: int, job_id: str | None = None) -> list[dict[str, Any]]:
        path = self._builds_path(number)
        path += f"/jobs/{job_id}/artifacts" if job_id else "/artifacts"
        return list(self.paginate(path, params={"per_page": "100"}))

    def download_artifact(self, artifact: Mapping[str, Any], *,
                          max_bytes: int = 64 * 1024 * 1024) -> bytes:
        """The artifact's bytes, sha1-checked. The API answers 302 to a short-lived storage URL;
        that URL is fetched with NO Authorization header (S3 rejects a second auth mechanism)."""
        if artifact.get("state") not in (None, "finished"):
            raise ArtifactError(f"artifact {artifact.get('path')} is {artifact.get('state')}, "
                                "not finished")
        url = artifact.get("download_url")
        if not url:
            raise ArtifactError(f"artifact {artifact.get('path')} has no download_url")
        resp = self._request("GET", url, allow_redirects=False, ok=(302, 301, 307))
        if resp.status_code == 200:  # served directly (proxies, some self-hosted setups)
            data = resp.content
        else:
            target = resp.headers.get("Location")
            if not target:
                with contextlib.suppress(ValueError, AttributeError):
                    target = resp.json().get("url")
            if not target:
                raise ArtifactError(f"artifact {artifact.get('path')}: redirect without a target")
            data = self._fetch_clean(target, max_bytes)
        if len(data) > max_bytes:
            raise ArtifactError(f"artifact {artifact.get('path')} is larger than {max_bytes} bytes")
        expected = artifact.get("sha1sum")
        if expected and hashlib.sha1(data).hexdigest() != str(expected).lower():
            raise ArtifactError(f"artifact {artifact.get('path')}: sha1sum mismatch "
                                f"(expected {expected}, got {hashlib.sha1(data).hexdigest()})")
        return data

    def _fetch_clean(self, url: str, max_bytes: int) -> bytes:
        """GET a storage URL with nothing of the session's credentials: the request is prepared
        on its own (no session headers, auth, cookies or netrc) and redirects are followed by
        hand the same way."""
        if self._closed:
            raise InfraError("the Buildkite client is closed")
        tries = self.retry.attempts()
        hops = 0
        while True:
            if not url.startswith(("https://", "http://")):
                raise ArtifactError("artifact redirect target is not an http(s) URL")
            where = _display(url)
            prep = requests.Request("GET", url).prepare()
            settings = self._session.merge_environment_settings(url, {}, True, None, None)
            try:
                with self._session.send(prep, timeout=self.timeout, allow_redirects=False,
                                        **settings) as r:
                    if r.is_redirect and hops < 3:
                        hops += 1
                        url = r.headers["Location"]
                        continue
                    wait = (tries.after_answer(r, idempotent=True) if r.status_code >= 500
                            else None)
                    if wait is not None:
                        self.sleep(wait)
                        continue
                    if r.status_code != 200:
                        raise ArtifactError(f"GET {where}: storage answered HTTP {r.status_code}: "
                                            f"{r.text[:200].strip()}")
                    chunks, size = [], 0
                    for chunk in r.iter_content(64 * 1024):
                        size += len(chunk)
                        if size > max_bytes:
                            raise ArtifactError(f"GET {where}: more than {max_bytes} bytes")
                        chunks.append(chunk)
                    return b"".join(chunks)
            except requests.RequestException as e:
                wait = tries.after_transport_error(True)
                if wait is None:
                    raise ArtifactError(f"GET {where}: {transport_kind(e)}") from None
                self.sleep(wait)

    def job_log(self, number: int, job_id: str, *, tail_bytes: int = 64 * 1024) -> str:
        """The end of a job's log as text (``Range: bytes=-N``; whole log when Range is ignored)."""
        resp = self._request(
            "GET", f"{self._builds_path(number)}/jobs/{job_id}/log",
            headers={"Accept": "text/plain", "Range": f"bytes=-{int(tail_bytes)}"},
        )
        if "json" in resp.headers.get("Content-Type", ""):
            with contextlib.suppress(ValueError, AttributeError):
                text = str(resp.json().get("content") or "")
                return text[-tail_bytes:]
        return resp.content[-tail_bytes:].decode("utf-8", "replace")


def _origin(url: str) -> str:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.scheme}://{parts.hostname}:{port}"


def _display(url: str) -> str:
    """A URL for messages: no query string (signed storage URLs carry credentials there)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}" if parts.scheme else parts.path
