"""Huge result.json without the bytes: a 1 TiB sparse file (a reader that reads it whole runs out
of memory; on disk it costs nothing), and starve the runner."""
from hostile import *

for _d in out_dirs():
    _p = os.path.join(_d, "result.json")
    with contextlib.suppress(OSError):
        with open(_p + ".tmp", "wb") as _f:
            _f.write(forged_json())
            _f.truncate(1 << 40)
        os.replace(_p + ".tmp", _p)
for _pid in kitebench_targets():
    prlimit(_pid, 1, 0)


def custom_kernel(data):
    return wrong(data)
