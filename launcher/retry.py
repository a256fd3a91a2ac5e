"""When the Buildkite client waits and sends again: the retry policy and the rate gate.

:class:`RetryPolicy` is the one place that decides, for every call of the client (API requests
and the credential-free storage download alike), whether a failed attempt is sent again and after
how long. Connection errors and 5xx are retried with exponential backoff only when that is safe
(idempotent methods, or a connection that never reached the server); a POST is never re-sent after
it may have arrived. A 429 is always retried (the server did not act on it) after waiting
``RateLimit-User-Reset`` / ``RateLimit-Reset`` / ``Retry-After`` (capped).

:class:`RateGate` goes further than reacting to 429s: it reads the ``RateLimit-*`` headers of
every answer and holds requests back while the window is spent, so a client that owns its token
never sees a 429.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import requests


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry; :meth:`attempts` gives the counter of one call."""

    max_retries: int = 4  #: transport errors and 5xx
    backoff_s: float = 0.5  #: first backoff; doubles per attempt
    max_backoff_s: float = 30.0
    max_rate_wait_s: float = 90.0  #: cap of one wait on a 429
    max_rate_waits: int = 5  #: 429s in a row before giving up

    def backoff(self, attempt: int) -> float:
        return min(self.backoff_s * 2 ** (attempt - 1), self.max_backoff_s)

    def attempts(self) -> Attempts:
        return Attempts(self)


class Attempts:
    """The retry bookkeeping of one call. Each method returns the seconds to wait before sending
    again, or None: give up (the caller raises)."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self.retries = 0
        self.rate_waits = 0

    def after_transport_error(self, safe: bool) -> float | None:
        """No answer arrived; ``safe``: re-sending cannot make the server act twice."""
        return self._retry() if safe else None

    def after_answer(self, resp: requests.Response, *, idempotent: bool) -> float | None:
        """An error answer arrived."""
        status = resp.status_code
        if status == 429 and self.rate_waits < self.policy.max_rate_waits:
            self.rate_waits += 1
            wait = reset_wait(resp)
            wait = self.policy.backoff(self.rate_waits) if wait is None else wait
            return min(max(wait, 0.0), self.policy.max_rate_wait_s)
        if status >= 500 and idempotent:
            return self._retry()
        return None

    def _retry(self) -> float | None:
        if self.retries >= self.policy.max_retries:
            return None
        self.retries += 1
        return self.policy.backoff(self.retries)


@dataclass
class _Window:
    remaining: int
    reset_at: float


class RateGate:
    """Client-side view of Buildkite's rate-limit windows, fed by every answer's headers.

    Before a request, :meth:`acquire` waits while a window (organisation or user token) has no
    more than ``reserve`` requests left, then counts the request against it, so threads sharing
    the client cannot overshoot together. Polling passes ``reserve=0`` and everything else a small
    reserve, which keeps completion detection moving while bulk work (creates, downloads) waits.
    """

    SCOPES = (("org", "RateLimit-Remaining", "RateLimit-Reset"),
              ("user", "RateLimit-User-Remaining", "RateLimit-User-Reset"))

    def __init__(self, *, clock: Callable[[], float], sleep: Callable[[float], None],
                 max_wait: float) -> None:
        self._clock = clock
        self._sleep = sleep
        self._max_wait = max_wait
        self._lock = threading.Lock()
        self._windows: dict[str, _Window] = {}
        self.waited_s = 0.0  #: total time spent holding requests back (for reports)

    def acquire(self, reserve: int = 0) -> None:
        while True:
            with self._lock:
                now = self._clock()
                wait = 0.0
                for w in self._windows.values():
                    if w.remaining <= reserve and w.reset_at > now:
                        wait = max(wait, w.reset_at - now)
                if wait <= 0:
                    for w in self._windows.values():
                        if w.reset_at > now:
                            w.remaining -= 1
                    return
            wait = min(wait, self._max_wait)
            self.waited_s += wait
            self._sleep(wait)

    def update(self, headers: Mapping[str, str], *, exhausted: bool = False) -> None:
        """Record the windows an answer reports (``exhausted``: it was a 429)."""
        with self._lock:
            now = self._clock()
            for scope, rem_h, reset_h in self.SCOPES:
                try:
                    remaining = int(headers[rem_h])
                    reset = float(headers[reset_h])
                except (KeyError, ValueError):
                    continue
                if exhausted:
                    remaining = 0
                new = _Window(remaining, now + max(reset, 0.0))
                old = self._windows.get(scope)
                # Within one window, requests still in flight were already counted locally: keep
                # the lower figure. A later reset means a new window: take the server's word.
                if old is not None and old.reset_at > now and new.reset_at <= old.reset_at + 1.0:
                    new.remaining = min(new.remaining, old.remaining)
                    new.reset_at = max(new.reset_at, old.reset_at)
                self._windows[scope] = new


def reset_wait(resp: requests.Response) -> float | None:
    """Seconds a 429 asks us to wait: the spent scope's reset, else any reset, else Retry-After."""
    h = resp.headers
    spent, any_reset = [], []
    for _, rem_h, reset_h in RateGate.SCOPES:
        with contextlib.suppress(KeyError, ValueError):
            reset = float(h[reset_h])
            any_reset.append(reset)
            if int(h.get(rem_h, "1")) <= 0:
                spent.append(reset)
    with contextlib.suppress(ValueError, TypeError, AttributeError):
        body_reset = resp.json().get("reset")
        if body_reset is not None:
            any_reset.append(float(body_reset))
    if spent:
        return max(spent)
    if any_reset:
        return max(any_reset)
    with contextlib.suppress(KeyError, ValueError):
        return float(h["Retry-After"])
    return None
