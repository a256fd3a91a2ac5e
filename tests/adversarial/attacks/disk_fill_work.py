"""Disk fill through the work dir and /tmp: up to 128 MiB in each (bounded, to spare the test
machine), hoping to fill the host's /tmp or leave the bytes behind after the run."""
from hostile import *

_chunk = b"\1" * (1 << 20)
for _where in (os.getcwd(), "/tmp", os.environ.get("TMPDIR", "/tmp"), "/dev/shm"):
    with contextlib.suppress(OSError), open(os.path.join(_where, f"kbadv-fill-{TOKEN}"), "wb") as _f:
        for _ in range(128):
            _f.write(_chunk)


def custom_kernel(data):
    return wrong(data)
