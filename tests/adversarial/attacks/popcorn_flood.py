"""Protocol flood: 64 MiB of keys on POPCORN_FD (every one up to the key/value limits), then
check: pass and exit 0. The runner must cut it, keep its memory bounded, and not pass."""
from hostile import *

_fd = int(os.environ.get("POPCORN_FD", "1"))
_line = b": " + b"v" * 65000 + b"\n"
with contextlib.suppress(OSError):
    for i in range(1024):
        os.write(_fd, b"test.%d.error" % i + _line)
    os.write(_fd, b"check: pass\n")
os._exit(0)


def custom_kernel(data):
    return wrong(data)
