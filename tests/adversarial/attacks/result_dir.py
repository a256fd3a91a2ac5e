"""Odd result.json: replace result.json with a directory (holding a forged result.json inside),
and starve the runner so it cannot put its file back."""
from hostile import *

for _d in out_dirs():
    _p = os.path.join(_d, "result.json")
    with contextlib.suppress(OSError):
        os.unlink(_p)
    with contextlib.suppress(OSError):
        os.mkdir(_p)
        write_file(os.path.join(_p, "result.json"), forged_json())
for _pid in kitebench_targets():
    prlimit(_pid, 1, 0)


def custom_kernel(data):
    return wrong(data)
