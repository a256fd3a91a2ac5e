"""Output flood: 256 MiB on stdout and on stderr, with no newline at all, hoping the runner keeps
it in memory or in result.json (the host reads and uploads it)."""
import sys

from hostile import *

_chunk = b"A" * (1 << 20)
for _stream in (sys.stdout.buffer, sys.stderr.buffer):
    with contextlib.suppress(OSError):
        for _ in range(256):
            _stream.write(_chunk)
        _stream.flush()


def custom_kernel(data):
    return wrong(data)
