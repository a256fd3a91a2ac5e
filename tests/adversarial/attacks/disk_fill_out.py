"""Disk fill through the output bind mount: write as much as 128 MiB into the output dir (the
host's disk behind it) and leave a forged result.json for when the runner finds no space."""
from hostile import *

plant()
_chunk = b"\0" * (1 << 20)
for _d in out_dirs():
    with contextlib.suppress(OSError), open(os.path.join(_d, f"fill-{TOKEN}"), "wb") as _f:
        for _ in range(128):
            _f.write(_chunk)
say("filled the output dirs")


def custom_kernel(data):
    return wrong(data)
