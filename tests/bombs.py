"""zlib bombs built incrementally (never holding the expanded bytes in memory)."""

from __future__ import annotations

import base64
import zlib


def zlib_bomb(expanded_bytes: int) -> bytes:
    """zlib stream of ``expanded_bytes`` spaces inside a JSON string (valid if it were small)."""
    c = zlib.compressobj(9)
    parts = [c.compress(b'{"lang": "py", "main": "')]
    block = b" " * (1 << 20)
    for _ in range(expanded_bytes // len(block)):
        parts.append(c.compress(block))
    parts.append(c.compress(b'"}'))
    parts.append(c.flush())
    return b"".join(parts)


def b64_bomb(expanded_bytes: int) -> str:
    return base64.b64encode(zlib_bomb(expanded_bytes)).decode()
