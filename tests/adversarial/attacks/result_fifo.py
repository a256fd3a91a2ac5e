"""Odd result.json: make result.json a FIFO (a reader that opens it blocks forever) and starve
the runner so it cannot replace it."""
from hostile import *

for _d in out_dirs():
    _p = os.path.join(_d, "result.json")
    with contextlib.suppress(OSError):
        os.unlink(_p)
    with contextlib.suppress(OSError):
        os.mkfifo(_p)
for _pid in kitebench_targets():
    prlimit(_pid, 1, 0)


def custom_kernel(data):
    return wrong(data)
