"""The judge ↔ worker control channel: JSON messages on a ``SOCK_SEQPACKET`` socket pair (one
message per packet, so no framing to get wrong), descriptors passed with ``SCM_RIGHTS``."""

from __future__ import annotations

import array
import json
import os
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
        # One buffer for every message, allocated once: a MAX_MESSAGE-sized buffer per call
        # costs an allocation of megabytes, and peeking at the length first a second syscall.
        self._buf = bytearray(MAX_MESSAGE + 1)
        self._view = memoryview(self._buf)

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
            self.sock.send(data)  # one packet: a seqpacket send is all or nothing

    def recv(self, *, want_fds: int = 0) -> tuple[dict[str, Any], list[int]]:
        data, fds = self.recv_bytes(want_fds=want_fds)
        return load(data), fds

    def recv_bytes(self, *, want_fds: int = 0) -> tuple[bytes, list[int]]:
        """One message (one ``recvmsg``): a packet longer than the buffer is cut and reported
        as over the limit; descriptors beyond ``want_fds`` are closed by the kernel."""
        fds: list[int] = []
        if want_fds:
            n, anc, flags, _ = self.sock.recvmsg_into([self._view],
                                                      socket.CMSG_SPACE(want_fds * 4))
            for level, kind, cdata in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds += array.array("i", cdata[: len(cdata) - len(cdata) % 4])
        else:
            n, flags = self.sock.recv_into(self._view), 0
        if n > MAX_MESSAGE or flags & socket.MSG_TRUNC:
            for fd in fds:
                os.close(fd)
            raise ValueError("message over the size limit")
        if not n:
            raise ChannelClosed("the other side closed the channel")
        return bytes(self._view[:n]), fds

    def close(self) -> None:
        self.sock.close()
