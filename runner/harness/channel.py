"""The judge ↔ worker control channel: JSON messages on a ``SOCK_SEQPACKET`` socket pair (one
message per packet, so no framing to get wrong), descriptors passed with ``SCM_RIGHTS``."""

from __future__ import annotations

import json
import socket
from typing import Any

#: One message at most (the structure of a value; array bytes go through shared memory).
MAX_MESSAGE = 4 * 1024 * 1024
#: The descriptor number the worker finds its end of the channel on.
WORKER_FD_ENV = "KITEBENCH_WORKER_FD"


class ChannelClosed(EOFError):
    """The other side is gone."""


def dump(msg: dict[str, Any]) -> bytes:
    return json.dumps(msg, separators=(",", ":")).encode()


def load(data: bytes) -> dict[str, Any]:
    try:
        msg = json.loads(data)
    except (ValueError, RecursionError) as e:
        raise ValueError(f"malformed message: {e}") from None
    if not isinstance(msg, dict):
        raise ValueError("malformed message: not an object")
    return msg


class Channel:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._peek = bytearray(1)

    @classmethod
    def pair(cls) -> tuple[Channel, socket.socket]:
        """(the judge's channel, the worker's socket to pass down)."""
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        return cls(mine), theirs

    def send(self, msg: dict[str, Any], fds: list[int] | None = None) -> None:
        self.send_bytes(dump(msg), fds)

    def send_bytes(self, data: bytes, fds: list[int] | None = None) -> None:
        if len(data) > MAX_MESSAGE:
            raise ValueError(f"message of {len(data)} bytes is over the limit of {MAX_MESSAGE}")
        if fds:
            socket.send_fds(self.sock, [data], fds)
        else:
            self.sock.sendall(data)

    def recv(self, *, want_fds: int = 0) -> tuple[dict[str, Any], list[int]]:
        data, fds = self.recv_bytes(want_fds=want_fds)
        return load(data), fds

    def recv_bytes(self, *, want_fds: int = 0) -> tuple[bytes, list[int]]:
        # Peek at the packet's real length first: a MAX_MESSAGE-sized buffer per call costs an
        # allocation of megabytes, most of a round trip's time.
        size = self.sock.recv_into(self._peek, 1, socket.MSG_PEEK | socket.MSG_TRUNC)
        size = max(min(size, MAX_MESSAGE + 1), 1)
        if want_fds:
            data, fds, flags, _ = socket.recv_fds(self.sock, size, want_fds)
        else:
            data, fds, flags = self.sock.recv(size), [], 0
        if not data:
            raise ChannelClosed("the other side closed the channel")
        if len(data) > MAX_MESSAGE or flags & socket.MSG_TRUNC:
            raise ValueError("message over the size limit")
        return data, list(fds)

    def close(self) -> None:
        self.sock.close()
