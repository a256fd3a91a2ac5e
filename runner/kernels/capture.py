"""Bounded capture of a child's output pipes.

A submission can print without limit; the runner must neither block on a full pipe nor hold the
whole stream in memory. Each pipe is drained by its own thread into a buffer that keeps only the
last ``cap`` bytes (the tail is where errors are) and counts what it dropped.
"""

from __future__ import annotations

import collections
import contextlib
import os
import threading

#: Bytes kept of each of stdout and stderr per run.
DEFAULT_OUTPUT_CAP = 1024 * 1024
_READ_CHUNK = 64 * 1024


class TailBuffer:
    """Keeps the last ``cap`` bytes written to it; ``dropped`` counts the bytes it threw away."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.dropped = 0
        self._chunks: collections.deque[bytes] = collections.deque()
        self._size = 0

    def write(self, data: bytes) -> None:
        if len(data) >= self.cap:  # one huge chunk: keep its tail only
            self.dropped += self._size + len(data) - self.cap
            self._chunks.clear()
            self._chunks.append(data[-self.cap :])
            self._size = self.cap
            return
        self._chunks.append(data)
        self._size += len(data)
        while self._size > self.cap:
            head = self._chunks[0]
            excess = self._size - self.cap
            if len(head) <= excess:
                self._chunks.popleft()
                self._size -= len(head)
                self.dropped += len(head)
            else:
                self._chunks[0] = head[excess:]
                self._size -= excess
                self.dropped += excess

    def getvalue(self) -> bytes:
        return b"".join(self._chunks)

    def text(self, what: str = "output") -> str:
        """The kept bytes as text, prefixed with a note when bytes were dropped."""
        body = self.getvalue().decode("utf-8", errors="replace")
        if self.dropped:
            return (
                f"[kitebench: {self.dropped} bytes of {what} dropped; "
                f"the last {self._size} bytes follow]\n" + body
            )
        return body


class HeadBuffer:
    """Keeps the first ``cap`` bytes; ``overflowed`` says that more came (used for POPCORN_FD,
    where the harness's lines are read in order and a flood must not push them out)."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.overflowed = False
        self.dropped = 0
        self._buf = bytearray()

    def write(self, data: bytes) -> None:
        room = self.cap - len(self._buf)
        if len(data) > room:
            self.overflowed = True
            self.dropped += len(data) - max(room, 0)
            data = data[: max(room, 0)]
        self._buf += data

    def getvalue(self) -> bytes:
        return bytes(self._buf)


class PipeReader(threading.Thread):
    """Drains one pipe fd into a buffer until EOF; closes the fd when done."""

    def __init__(self, fd: int, sink: TailBuffer | HeadBuffer, name: str) -> None:
        super().__init__(name=f"kitebench-{name}", daemon=True)
        self.fd = fd
        self.sink = sink

    def run(self) -> None:
        try:
            while True:
                try:
                    data = os.read(self.fd, _READ_CHUNK)
                except InterruptedError:
                    continue
                except OSError:
                    break
                if not data:
                    break
                self.sink.write(data)
        finally:
            with contextlib.suppress(OSError):
                os.close(self.fd)
