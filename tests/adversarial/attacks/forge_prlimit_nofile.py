"""Forge by rlimits: plant a passing result.json, then RLIMIT_NOFILE 0 on the runner: it can open
no file any more (not the temp file of its atomic write), so the forged one stays."""
from hostile import *

plant()
for pid in kitebench_targets():
    prlimit(pid, 7, 0)  # RLIMIT_NOFILE


def custom_kernel(data):
    return wrong(data)
