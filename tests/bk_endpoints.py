"""The stand-in's REST endpoints and artifact storage, and the HTTP servers they run on.

:class:`Endpoints` is mixed into :class:`tests.bk_standin.StandIn`: the routes below read and
change its builds under its lock, the way Buildkite's API would answer.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import secrets
import socket
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit

from tests.bk_sim import FINISHED, SimBuild

if TYPE_CHECKING:
    from tests.bk_standin import StandIn


class Endpoints:
    """Routes of the API (``_route``) and of the storage server (``handle_store``)."""

    def _route(self, method: str, path: str, query: list[tuple[str, str]], body: Any,
               token: str, h: ApiHandler) -> tuple[int, Any, dict[str, str]]:
        scopes = self.tokens[token]

        def need(scope: str) -> tuple[int, Any, dict[str, str]] | None:
            if scope in scopes:
                return None
            return 403, {"message": f"Forbidden: your API access token is missing the "
                                    f"`{scope}` scope"}, {}

        pipe = re.escape(self._pipe_path())
        org = re.escape(f"/organizations/{self.org}")
        m_build = re.fullmatch(pipe + r"/builds/(\d+)(/.*)?", path)
        with self.lock:
            now = self.clock.now()
            if re.fullmatch(pipe + r"/builds/?", path) or re.fullmatch(org + r"/builds/?", path):
                if method == "POST" and "/pipelines/" in path:
                    return need("write_builds") or self._create(body, now)
                if method == "GET":
                    return need("read_builds") or self._list(path, query, now)
            if m_build:
                b = self.builds.get(int(m_build.group(1)))
                rest = m_build.group(2) or ""
                if b is None:
                    return 404, {"message": "No build found"}, {}
                if method == "GET" and rest == "":
                    jobs = dict(query).get("exclude_jobs") != "true"
                    return need("read_builds") or (200, self._build_json(b, now, jobs), {})
                if method == "PUT" and rest == "/cancel":
                    return need("write_builds") or self._cancel(b, now)
                if method == "GET" and rest == "/artifacts":
                    return need("read_artifacts") or self._page(
                        path, query, self._artifacts(b, now))
                m = re.fullmatch(r"/jobs/([\w-]+)/artifacts(?:/([\w-]+)/download)?", rest)
                if method == "GET" and m and m.group(1) == b.job_id:
                    denied = need("read_artifacts")
                    if denied:
                        return denied
                    arts = self._artifacts(b, now)
                    if m.group(2) is None:
                        return self._page(path, query, arts)
                    art = next((a for a in arts if a["id"] == m.group(2)), None)
                    if art is None:
                        return 404, {"message": "No artifact found"}, {}
                    url = (f"{self.store_url}/objects/{art['_key']}?X-Amz-Algorithm=AWS4-HMAC"
                           f"&X-Amz-Expires=60&X-Amz-Signature={secrets.token_hex(16)}")
                    return 302, {"url": url}, {"Location": url}
                m = re.fullmatch(r"/jobs/([\w-]+)/log(\.txt)?", rest)
                if method == "GET" and m and m.group(1) == b.job_id:
                    return need("read_build_logs") or self._log(b, now, bool(m.group(2)), h)
        return 404, {"message": "Not Found"}, {}

    def _create(self, body: Any, now: float) -> tuple[int, Any, dict[str, str]]:
        if not isinstance(body, dict):
            return 400, {"message": "Problems parsing JSON"}, {}
        missing = [k for k in ("commit", "branch") if not body.get(k)]
        if missing:
            return 422, {"message": "Validation failed: " + ", ".join(
                f"{k.capitalize()} can't be blank" for k in missing)}, {}
        for key in ("env", "meta_data"):
            val = body.get(key, {})
            if not isinstance(val, dict) or not all(isinstance(v, str) for v in val.values()):
                return 422, {"message": f"Validation failed: {key} must be a map of strings"}, {}
        for v in (body.get("meta_data") or {}).values():
            if len(v.encode()) > 100 * 1024:
                return 422, {"message": "Validation failed: meta-data value is too large"}, {}
        number = self._next_number
        self._next_number += 1
        b = SimBuild(number, str(uuid.uuid4()), body, self.planner(body), now)
        self.builds[number] = b
        return 201, self._build_json(b, now), {}

    def _list(self, path: str, query: list[tuple[str, str]], now: float):
        states: set[str] = set()
        meta: dict[str, str] = {}
        branch = None
        for k, v in query:
            if k in ("state[]", "state"):
                states |= set(FINISHED) if v == "finished" else {v}
            elif k.startswith("meta_data[") and k.endswith("]"):
                meta[k[10:-1]] = v
            elif k == "branch":
                branch = v
        jobs = dict(query).get("exclude_jobs") != "true"
        out = []
        for b in sorted(self.builds.values(), key=lambda b: -b.number):
            md = b.body.get("meta_data") or {}
            if any(md.get(k) != v for k, v in meta.items()):
                continue
            if branch and b.body.get("branch") != branch:
                continue
            if states and self._state(b, now) not in states:
                continue
            out.append(self._build_json(b, now, jobs))
        return self._page(path, query, out)

    def _page(self, path: str, query: list[tuple[str, str]], items: list[dict[str, Any]]):
        q = dict(query)
        try:
            per_page = max(1, min(100, int(q.get("per_page", 30))))
            page = max(1, int(q.get("page", 1)))
        except ValueError:
            return 400, {"message": "Invalid page"}, {}
        last = max(1, math.ceil(len(items) / per_page))
        chunk = [{k: v for k, v in it.items() if not k.startswith("_")}
                 for it in items[(page - 1) * per_page: page * per_page]]
        rest = [(k, v) for k, v in query if k != "page"]

        def link(p: int, rel: str) -> str:
            return f'<{self.api_url}{path}?{urlencode(rest + [("page", str(p))])}>; rel="{rel}"'

        links = []
        if page < last:
            links += [link(page + 1, "next"), link(last, "last")]
        if page > 1:
            links += [link(1, "first"), link(page - 1, "prev")]
        return 200, chunk, ({"Link": ", ".join(links)} if links else {})

    def _artifacts(self, b: SimBuild, now: float) -> list[dict[str, Any]]:
        self._state(b, now)  # finalizes a finished build (uploads its result.json)
        return list(b.artifacts)

    def _cancel(self, b: SimBuild, now: float):
        state = self._state(b, now)
        if state not in ("scheduled", "running", "failing"):
            return 422, {"message": f"Build can't be canceled because it's {state}"}, {}
        b.cancel_at = now
        b.cancel_state_at = state
        return 200, self._build_json(b, now), {}

    def _log(self, b: SimBuild, now: float, txt: bool, h: ApiHandler):
        text = b.plan.log if now >= b.start_at else ""
        data = text.encode()
        if txt or "text/plain" in (h.headers.get("Accept") or ""):
            rng = re.fullmatch(r"bytes=-(\d+)", h.headers.get("Range") or "")
            if rng and data:
                n = min(int(rng.group(1)), len(data))
                return 206, data[-n:], {"Content-Type": "text/plain",
                                        "Content-Range": f"bytes {len(data) - n}-{len(data) - 1}"
                                                         f"/{len(data)}"}
            return 200, data, {"Content-Type": "text/plain"}
        return 200, {"url": f"{self.api_url}{self._pipe_path()}/builds/{b.number}/jobs/"
                            f"{b.job_id}/log", "content": text, "size": len(data),
                     "header_times": []}, {}

    # -- storage ---------------------------------------------------------------------------------

    def handle_store(self, h: StoreHandler) -> None:
        parts = urlsplit(h.path)
        auth = h.headers.get("Authorization")
        with self.lock:
            self.store_log.append({"path": parts.path, "authorization": auth,
                                   "headers": dict(h.headers.items())})
            m = re.fullmatch(r"/objects/(\w+)", parts.path)
            blob = self._blobs.get(m.group(1)) if m else None
        if auth is not None:
            h.reply(400, b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>InvalidArgument"
                         b"</Code><Message>Only one auth mechanism allowed; only the X-Amz-Algorithm"
                         b" query parameter, Signature query string parameter or the Authorization "
                         b"header should be specified</Message></Error>",
                    {"Content-Type": "application/xml"})
            return
        if blob is None or "X-Amz-Signature=" not in parts.query:
            h.reply(403, b"<Error><Code>AccessDenied</Code></Error>",
                    {"Content-Type": "application/xml"})
            return
        h.reply(200, blob, {"Content-Type": "application/octet-stream"})




class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    standin: StandIn

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def reply(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        headers = dict(headers or {})
        if isinstance(payload, bytes):
            data = payload
        else:
            data = json.dumps(payload).encode()
            headers.setdefault("Content-Type", "application/json; charset=utf-8")
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def drop(self) -> None:
        """Close the connection without an answer (a reset, as the client sees it)."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)


class ApiHandler(_Handler):
    def do_GET(self) -> None:
        self.standin.handle(self, "GET")

    def do_POST(self) -> None:
        self.standin.handle(self, "POST")

    def do_PUT(self) -> None:
        self.standin.handle(self, "PUT")


class StoreHandler(_Handler):
    def do_GET(self) -> None:
        self.standin.handle_store(self)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 512  # listen() backlog: a hundred clients may connect at once


def serve(handler: type[_Handler], standin: StandIn) -> ThreadingHTTPServer:
    cls = type(handler.__name__, (handler,), {"standin": standin})
    srv = _Server(("127.0.0.1", 0), cls)
    threading.Thread(target=srv.serve_forever, args=(0.05,), name=f"standin-{handler.__name__}",
                     daemon=True).start()
    return srv
