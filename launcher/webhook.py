"""Buildkite webhooks in: verify each delivery, hand its build to the waiter through BuildEvents.

Buildkite (organisation settings → notification services → webhook) POSTs JSON events such as
``build.finished`` and ``job.finished`` to a URL. Each delivery is authenticated one of two ways,
as the webhook is configured:

* token: ``X-Buildkite-Token: <token>``, compared with ``KITEBENCH_WEBHOOK_TOKEN``;
* signature: ``X-Buildkite-Signature: timestamp=T,signature=S`` where S is the hex HMAC-SHA256 of
  ``"T.<raw body>"`` keyed with ``KITEBENCH_WEBHOOK_SECRET``. A T older (or newer) than
  ``window_s`` is refused, so a captured delivery cannot be replayed later; a copy inside the
  window is answered 200 but not passed on twice.

Comparisons are constant-time (:func:`hmac.compare_digest`). Token mode has no timestamp: anyone
who sees one delivery can replay it, which only repeats a true event; signature mode is the one to
use over an untrusted network. Neither secret is ever logged or echoed.

:class:`WebhookApp` is a plain WSGI application (mount it in an existing web service, any path);
:class:`WebhookServer` runs it on a port in a background thread (``kitebench webhook serve``, and
``kitebench submit/wait --webhook-port`` for the length of one wait).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from launcher.errors import UsageError
from launcher.events import BuildEvents

log = logging.getLogger("kitebench.webhook")

#: Where a receiver listens unless told otherwise: loopback (a TLS proxy in front faces Buildkite).
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8787
TOKEN_ENV = "KITEBENCH_WEBHOOK_TOKEN"
SECRET_ENV = "KITEBENCH_WEBHOOK_SECRET"
#: Seconds a signed delivery's timestamp may be away from our clock.
DEFAULT_WINDOW_S = 300.0
#: Bigger bodies are refused before they are read (Buildkite's build events are a few KiB).
MAX_BODY_BYTES = 1024 * 1024

WSGIEnviron = Mapping[str, Any]
StartResponse = Callable[..., Any]


class WebhookConfigError(UsageError):
    """The receiver cannot be set up (no or two secrets, the port is taken)."""


class WebhookRefused(Exception):
    """A delivery failed authentication; ``reason`` is safe to log (it holds no secret)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class WebhookAuth:
    """Checks one delivery's token or signature. Exactly one of ``token`` / ``secret``."""

    def __init__(self, *, token: str | None = None, secret: str | None = None,
                 window_s: float = DEFAULT_WINDOW_S,
                 clock: Callable[[], float] = time.time) -> None:
        if bool(token) == bool(secret):
            raise WebhookConfigError(f"webhook: set exactly one of {TOKEN_ENV} (token mode) "
                                     f"or {SECRET_ENV} (signature mode)")
        self.mode = "token" if token else "signature"
        self._key = (token or secret or "").encode()
        self.window_s = window_s
        self._clock = clock
        self._seen: dict[str, float] = {}  #: signature → its timestamp, inside the window
        self._lock = threading.Lock()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> WebhookAuth:
        env = os.environ if env is None else env
        return cls(token=env.get(TOKEN_ENV, "").strip() or None,
                   secret=env.get(SECRET_ENV, "").strip() or None)

    def __repr__(self) -> str:
        return f"WebhookAuth(mode={self.mode!r}, key=<redacted>)"

    def verify(self, headers: Mapping[str, str], body: bytes) -> bool:
        """Raise :class:`WebhookRefused`, or return whether the delivery is new (False: a copy of
        one already accepted, inside the window)."""
        h = {k.lower(): v for k, v in headers.items()}
        if self.mode == "token":
            got = h.get("x-buildkite-token")
            if got is None:
                raise WebhookRefused("no X-Buildkite-Token header")
            if not hmac.compare_digest(got.strip().encode(), self._key):
                raise WebhookRefused("wrong X-Buildkite-Token")
            return True
        raw = h.get("x-buildkite-signature")
        if raw is None:
            raise WebhookRefused("no X-Buildkite-Signature header")
        fields = dict(part.strip().partition("=")[::2] for part in raw.split(","))
        stamp, sig = fields.get("timestamp", ""), fields.get("signature", "").strip().lower()
        if not stamp.isdigit() or not sig:
            raise WebhookRefused("malformed X-Buildkite-Signature (timestamp=T,signature=S)")
        expected = hmac.new(self._key, stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected.encode(), sig.encode()):
            raise WebhookRefused("bad signature")
        # Checked after the signature so the answer says nothing about an unsigned timestamp.
        now, ts = self._clock(), float(stamp)
        if abs(now - ts) > self.window_s:
            raise WebhookRefused(f"timestamp {now - ts:.0f}s away from now (window "
                                 f"{self.window_s:.0f}s): a replay or a wrong clock")
        with self._lock:
            self._seen = {s: t for s, t in self._seen.items() if abs(now - t) <= self.window_s}
            if sig in self._seen:
                return False
            self._seen[sig] = ts
        return True


class WebhookApp:
    """WSGI app: POST a Buildkite event → 200 and ``events.publish``; 401 when authentication
    fails, 400 for a body that is not a JSON event, 405 / 413 for other methods / huge bodies."""

    def __init__(self, auth: WebhookAuth, events: BuildEvents) -> None:
        self.auth = auth
        self.events = events
        self.refused = 0  #: deliveries refused so far (reports, tests)

    def __call__(self, environ: WSGIEnviron, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") != "POST":
            return _reply(start_response, 405, {"error": "POST only"}, [("Allow", "POST")])
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY_BYTES:
            return _reply(start_response, 413, {"error": "body too large or length unknown"})
        body = environ["wsgi.input"].read(length) if length else b""
        headers = {k[5:].replace("_", "-"): str(v) for k, v in environ.items()
                   if k.startswith("HTTP_")}
        try:
            new = self.auth.verify(headers, body)
        except WebhookRefused as e:
            self.refused += 1
            log.warning("webhook delivery from %s refused: %s", environ.get("REMOTE_ADDR"),
                        e.reason)
            return _reply(start_response, 401, {"error": e.reason})
        try:
            event = json.loads(body)
        except ValueError:
            event = None
        if not isinstance(event, dict):
            return _reply(start_response, 400, {"error": "body is not a JSON object"})
        event.setdefault("event", headers.get("X-BUILDKITE-EVENT", ""))
        if new:
            self.events.publish(event)
        return _reply(start_response, 200, {"ok": True, "duplicate": not new})


def _reply(start_response: StartResponse, status: int, doc: dict[str, Any],
           headers: list[tuple[str, str]] | None = None) -> list[bytes]:
    reasons = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 405: "Method Not Allowed",
               413: "Payload Too Large"}
    data = json.dumps(doc).encode()
    start_response(f"{status} {reasons[status]}",
                   [("Content-Type", "application/json"), ("Content-Length", str(len(data))),
                    *(headers or [])])
    return [data]


@dataclass(frozen=True)
class WebhookSettings:
    """Where to listen and how deliveries authenticate (``kitebench ... --webhook-port``)."""

    port: int = DEFAULT_PORT
    host: str = DEFAULT_HOST
    auth: WebhookAuth | None = None  #: None: from the environment when the server starts


class WebhookServer:
    """:class:`WebhookApp` on ``host:port`` in a background thread; a context manager."""

    def __init__(self, settings: WebhookSettings, events: BuildEvents) -> None:
        self.settings = settings
        self.app = WebhookApp(settings.auth or WebhookAuth.from_env(), events)
        self.events = events
        self._srv: Any = None

    def start(self) -> WebhookServer:
        # Imported here: http.server and friends cost tens of ms that CLI start-up need not pay.
        from socketserver import ThreadingMixIn
        from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

        class Server(ThreadingMixIn, WSGIServer):
            daemon_threads = True

        class QuietHandler(WSGIRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                log.debug("%s " + format, self.address_string(), *args)

        try:
            self._srv = make_server(self.settings.host, self.settings.port, self.app,
                                    server_class=Server, handler_class=QuietHandler)
        except OSError as e:
            raise WebhookConfigError(f"webhook: cannot listen on {self.settings.host}:"
                                     f"{self.settings.port}: {e.strerror or e}") from None
        threading.Thread(target=self._srv.serve_forever, args=(0.05,), daemon=True,
                         name="kitebench-webhook").start()
        log.info("webhook receiver on %s (%s mode)", self.url, self.app.auth.mode)
        return self

    @property
    def port(self) -> int:
        assert self._srv is not None
        return int(self._srv.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{self.settings.host}:{self.port}/"

    def stop(self) -> None:
        if self._srv is not None:
            self._srv.shutdown()
            self._srv.server_close()
            self._srv = None

    def __enter__(self) -> WebhookServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
