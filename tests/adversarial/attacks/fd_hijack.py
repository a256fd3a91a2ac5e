"""Inherited descriptors: write a forged verdict to every fd it holds (stdout, stderr, POPCORN_FD
and anything else it inherited) and look for fds of the runner's output dir or key."""
from hostile import *

for _fd in sorted(int(x) for x in os.listdir("/proc/self/fd")):
    with contextlib.suppress(OSError):
        _target = os.readlink(f"/proc/self/fd/{_fd}")
        if "result" in _target or "out" in _target.rsplit("/", 1)[-1]:
            leak(f"fd {_fd} -> {_target}")
    with contextlib.suppress(OSError):
        os.write(_fd, forged_json() + b"\ncheck: pass\n")


def custom_kernel(data):
    return wrong(data)
