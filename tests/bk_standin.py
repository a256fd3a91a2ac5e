"""A stand-in for Buildkite's REST API v2 and its artifact storage, over real HTTP on 127.0.0.1.

Buildkite SaaS cannot run here, so tests and ``benchmarks/launcher_api.py`` talk to this instead.
It behaves like the real API where kitebench depends on it (see the Buildkite reference notes):

* create / get / list (``meta_data[k]``, ``state[]``/``state=finished``, ``per_page`` ≤ 100,
  ``page``, ``Link`` header with next/prev/first/last) / cancel (422 once finished) / artifacts /
  artifact download (``302`` with ``Location`` and ``{"url": ...}`` to a SEPARATE storage server,
  which answers ``400 InvalidArgument`` when an Authorization header arrives and logs every request)
  / job log (JSON, or text with ``Range: bytes=-N`` → 206);
* bearer tokens with scopes (401 unknown token, 403 naming the missing scope);
* a fixed-window rate limit per token (50/min) and per organisation (200/min) with the real
  ``RateLimit-*`` / ``RateLimit-User-*`` headers and the 429 body ``{message, scope, limit,
  current, reset}``;
* injectable faults: ``500``, ``500_after`` (acts, then answers 500), ``drop`` / ``drop_after``
  (closes the connection without an answer), ``slow`` / ``slow_after`` (delays the answer);
* simulated builds: scheduled → running (agent assigned) → passed/failed, or canceling → canceled,
  driven by a :class:`VirtualClock` whose ``scale`` speeds simulated time up (the benchmark runs
  minutes of API traffic in seconds; tests keep scale 1 or speed it up);
* webhooks (:meth:`StandIn.add_webhook`, sent by :mod:`tests.bk_webhooks`): real HTTP POSTs at
  the moment a build changes state, signed or with a token, as Buildkite's notification service
  sends them.

What each build does is decided by ``planner(create_body) -> BuildPlan``.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from http.server import ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from tests.bk_endpoints import ApiHandler, Endpoints, StoreHandler, serve
from tests.bk_sim import (
    FINISHED,
    BuildPlan,
    Fault,
    LogEntry,
    SimBuild,
    VirtualClock,
    passing_result,
)
from tests.bk_webhooks import Delivery, Notifier, Webhook

__all__ = ["ALL_SCOPES", "FINISHED", "BuildPlan", "Delivery", "Fault", "LogEntry", "StandIn",
           "VirtualClock", "Webhook", "passing_result"]

ALL_SCOPES = frozenset({"read_builds", "write_builds", "read_artifacts", "read_build_logs",
                        "read_agents"})



class StandIn(Endpoints):
    """Both servers; use as a context manager (``with StandIn() as bk:``)."""

    def __init__(
        self,
        *,
        org: str = "acme",
        pipeline: str = "gpu-bench",
        tokens: dict[str, frozenset[str] | set[str]] | None = None,
        user_limit: int = 50,
        org_limit: int = 200,
        window_s: float = 60.0,
        time_scale: float = 1.0,
        planner: Callable[[dict[str, Any]], BuildPlan] | None = None,
    ) -> None:
        self.org = org
        self.pipeline = pipeline
        self.token = "bkua_" + secrets.token_hex(20)
        self.tokens: dict[str, frozenset[str]] = (
            {k: frozenset(v) for k, v in tokens.items()} if tokens
            else {self.token: frozenset(ALL_SCOPES)})
        self._labels = {tok: f"token#{i + 1}" for i, tok in enumerate(self.tokens)}
        self.user_limit = user_limit
        self.org_limit = org_limit
        self.window_s = window_s
        self.clock = VirtualClock(time_scale)
        self.planner = planner or (lambda body: BuildPlan())
        self.lock = threading.RLock()
        self.builds: dict[int, SimBuild] = {}
        self.log: list[LogEntry] = []
        self.store_log: list[dict[str, Any]] = []
        self.faults: list[Fault] = []
        self._blobs: dict[str, bytes] = {}
        self._counts: dict[tuple[str, int], int] = {}
        self._next_number = 1
        self._api: ThreadingHTTPServer | None = None
        self._store: ThreadingHTTPServer | None = None
        self.notifier = Notifier(self)

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> StandIn:
        self._api = serve(ApiHandler, self)
        self._store = serve(StoreHandler, self)
        return self

    def stop(self) -> None:
        self.notifier.stop()
        for srv in (self._api, self._store):
            if srv is not None:
                srv.shutdown()
                srv.server_close()

    def __enter__(self) -> StandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def api_url(self) -> str:
        assert self._api is not None
        return f"http://127.0.0.1:{self._api.server_address[1]}/v2"

    @property
    def store_url(self) -> str:
        assert self._store is not None
        return f"http://127.0.0.1:{self._store.server_address[1]}"

    def env(self) -> dict[str, str]:
        """Environment variables pointing a client at this server."""
        return {"BUILDKITE_API_TOKEN": self.token, "BUILDKITE_API_URL": self.api_url,
                "BUILDKITE_ORG": self.org, "BUILDKITE_PIPELINE": self.pipeline}

    # -- test helpers ----------------------------------------------------------------------------

    def add_fault(self, method: str, path: str, kind: str, *, times: int = 1,
                  delay_s: float = 0.0) -> None:
        """Inject a fault for requests whose path (after /v2) matches the regex ``path``."""
        with self.lock:
            self.faults.append(Fault(method.upper(), re.compile(path), kind, times, delay_s))

    def count(self, *, status: int | None = None, method: str | None = None,
              token: str | None = None) -> int:
        label = self._labels.get(token) if token else None
        with self.lock:
            return sum(1 for e in self.log
                       if (status is None or e.status == status)
                       and (method is None or e.method == method)
                       and (label is None or e.token == label))

    def max_per_window(self, token: str | None = None, *, window_s: float | None = None) -> int:
        """Most served (non-429) requests of a token in any sliding window of ``window_s``."""
        label = self._labels[token or self.token]
        w = window_s or self.window_s
        with self.lock:
            times = sorted(e.t for e in self.log if e.token == label and e.status != 429)
        best, lo = 0, 0
        for hi, t in enumerate(times):
            while times[lo] <= t - w:
                lo += 1
            best = max(best, hi - lo + 1)
        return best

    def state_of(self, number: int) -> str:
        with self.lock:
            return self._state(self.builds[number], self.clock.now())

    def finished_at(self, number: int) -> float | None:
        """Simulated time the build reached its terminal state (None: not yet)."""
        with self.lock:
            b = self.builds[number]
            return b.end_at if self.clock.now() >= b.end_at else None

    # -- build simulation (under self.lock) ------------------------------------------------------

    def _state(self, b: SimBuild, now: float) -> str:
        if now >= b.end_at:
            self._finalize(b)
            if b.cancel_at is not None and b.end_at < b.natural_end:
                return "canceled"
            return b.plan.state
        if b.cancel_at is not None:
            return "canceling"
        return "running" if now >= b.start_at else "scheduled"

    def _finalize(self, b: SimBuild) -> None:
        if b.finalized:
            return
        b.finalized = True
        canceled = b.cancel_at is not None and b.end_at < b.natural_end
        doc = b.plan.result_on_cancel if canceled else b.plan.result
        if canceled and b.cancel_state_at != "running":
            doc = None  # never started: nothing uploaded
        if doc is None:
            return
        data = doc if isinstance(doc, bytes) else (
            doc.encode() if isinstance(doc, str) else json.dumps(doc).encode())
        key = secrets.token_hex(12)
        self._blobs[key] = data
        sha1 = hashlib.sha1(data).hexdigest()
        if b.plan.corrupt_sha1:
            sha1 = hashlib.sha1(data + b"x").hexdigest()
        art_id = str(uuid.uuid4())
        base = f"{self.api_url}{self._pipe_path()}/builds/{b.number}/jobs/{b.job_id}/artifacts"
        b.artifacts.append({
            "id": art_id, "job_id": b.job_id, "url": f"{base}/{art_id}",
            "download_url": f"{base}/{art_id}/download", "state": "finished",
            "path": "result.json", "dirname": ".", "filename": "result.json",
            "mime_type": "application/json", "file_size": len(data), "sha1sum": sha1,
            "_key": key,
        })

    def _job_json(self, b: SimBuild, now: float) -> dict[str, Any]:
        state = self._state(b, now)
        started = now >= b.start_at and not (b.cancel_at is not None and b.cancel_at < b.start_at)
        job: dict[str, Any] = {
            "id": b.job_id, "type": "script", "name": "kitebench", "step_key": "kitebench",
            "agent_query_rules": [f"queue={b.body.get('env', {}).get('GPU_QUEUE', 'default')}"],
            "state": state, "web_url": f"{self._web(b)}#{b.job_id}",
            "log_url": f"{self.api_url}{self._pipe_path()}/builds/{b.number}/jobs/{b.job_id}/log",
            "created_at": self.clock.iso(b.created), "scheduled_at": self.clock.iso(b.created),
            "started_at": self.clock.iso(b.start_at) if started else None,
            "finished_at": None, "exit_status": None, "signal": None, "signal_reason": None,
            "agent": ({"id": "agent-" + b.plan.agent, "name": b.plan.agent,
                       "hostname": b.plan.agent.rsplit("-", 1)[0]} if started else None),
        }
        if state in ("passed", "failed", "canceled"):
            job["finished_at"] = self.clock.iso(b.end_at)
            if state == "canceled":
                job["state"] = "canceled"
                if started:
                    job.update(exit_status=-1, signal="SIGTERM", signal_reason="cancel")
            else:
                job.update(state=b.plan.job_state or state, exit_status=b.plan.exit_status,
                           signal=b.plan.signal, signal_reason=b.plan.signal_reason)
        return job

    def _build_json(self, b: SimBuild, now: float, jobs: bool = True) -> dict[str, Any]:
        state = self._state(b, now)
        out = {
            "id": b.id, "number": b.number, "state": state, "blocked": False,
            "url": f"{self.api_url}{self._pipe_path()}/builds/{b.number}",
            "web_url": self._web(b), "message": b.body.get("message") or "",
            "commit": b.body.get("commit"), "branch": b.body.get("branch"),
            "env": b.body.get("env") or {}, "meta_data": b.body.get("meta_data") or {},
            "source": "api", "created_at": self.clock.iso(b.created),
            "scheduled_at": self.clock.iso(b.created),
            "started_at": self.clock.iso(b.start_at) if now >= b.start_at else None,
            "finished_at": self.clock.iso(b.end_at) if state in FINISHED else None,
        }
        if jobs:
            out["jobs"] = [self._job_json(b, now)]
        return out

    def _web(self, b: SimBuild) -> str:
        return f"https://buildkite.com/{self.org}/{self.pipeline}/builds/{b.number}"

    def _pipe_path(self) -> str:
        return f"/organizations/{self.org}/pipelines/{self.pipeline}"

    # -- webhooks (sent by bk_webhooks.Notifier) ---------------------------------------------

    def add_webhook(self, url: str, **kw: Any) -> Webhook:
        """Register a webhook (see :meth:`bk_webhooks.Notifier.add`)."""
        return self.notifier.add(url, **kw)

    @property
    def deliveries(self) -> list[Delivery]:
        return self.notifier.deliveries

    # -- rate limit ------------------------------------------------------------------------------

    def _rate(self, token: str, now: float) -> tuple[dict[str, str], dict[str, Any] | None]:
        """Count one request; return the headers and, when over a limit, the 429 body."""
        idx = int(now // self.window_s)
        reset = max(1, math.ceil((idx + 1) * self.window_s - now))
        ukey, okey = (token, idx), ("__org__", idx)
        used_u, used_o = self._counts.get(ukey, 0), self._counts.get(okey, 0)
        over = None
        if used_u >= self.user_limit:
            over = ("user", self.user_limit, used_u)
        elif used_o >= self.org_limit:
            over = ("organization", self.org_limit, used_o)
        if over is None:
            used_u += 1
            used_o += 1
            self._counts[ukey], self._counts[okey] = used_u, used_o
        headers = {
            "RateLimit-Limit": str(self.org_limit),
            "RateLimit-Remaining": str(max(0, self.org_limit - used_o)),
            "RateLimit-Reset": str(reset),
            "RateLimit-User-Limit": str(self.user_limit),
            "RateLimit-User-Remaining": str(max(0, self.user_limit - used_u)),
            "RateLimit-User-Reset": str(reset),
        }
        if over is None:
            return headers, None
        scope, limit, current = over
        return headers, {"message": "You have exceeded your API rate limit. Please wait "
                                    f"{reset} seconds before making more requests.",
                         "scope": scope, "limit": limit, "current": current + 1, "reset": reset}

    # -- request handling ------------------------------------------------------------------------

    def handle(self, h: ApiHandler, method: str) -> None:
        parts = urlsplit(h.path)
        path = parts.path[3:] if parts.path.startswith("/v2") else parts.path
        query = parse_qsl(parts.query, keep_blank_values=True)
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length else b""
        auth = h.headers.get("Authorization", "")
        token = auth[7:] if auth.startswith("Bearer ") else ""
        with self.lock:
            now = self.clock.now()
            label = self._labels.get(token, "anonymous")
            if token not in self.tokens:
                self.log.append(LogEntry(now, label, method, path, 401))
                h.reply(401, {"message": "Authentication required. Please supply a valid API "
                                         "Access Token"})
                return
            headers, over = self._rate(token, now)
            if over is not None:
                self.log.append(LogEntry(now, label, method, path, 429))
                h.reply(429, over, headers)
                return
            fault = self._take_fault(method, path)
        if fault is not None and fault.kind == "500":
            self._record(label, method, path, 500)
            h.reply(500, {"message": "Internal Server Error"}, headers)
            return
        if fault is not None and fault.kind == "drop":
            self._record(label, method, path, 0)
            h.drop()
            return
        if fault is not None and fault.kind == "slow":
            time.sleep(fault.delay_s)
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = None
        status, payload, extra = self._route(method, path, query, body, token, h)
        self._record(label, method, path, status if fault is None or "after" not in fault.kind
                     else (500 if fault.kind == "500_after" else 0))
        if fault is not None and fault.kind == "500_after":
            h.reply(500, {"message": "Internal Server Error"}, headers)
            return
        if fault is not None and fault.kind == "drop_after":
            h.drop()
            return
        if fault is not None and fault.kind == "slow_after":
            time.sleep(fault.delay_s)
        h.reply(status, payload, {**headers, **extra})

    def _record(self, label: str, method: str, path: str, status: int) -> None:
        with self.lock:
            self.log.append(LogEntry(self.clock.now(), label, method, path, status))

    def _take_fault(self, method: str, path: str) -> Fault | None:
        for f in self.faults:
            if f.times > 0 and f.method == method and f.path.search(path):
                f.times -= 1
                return f
        return None
