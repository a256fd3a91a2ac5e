"""Forge by rlimits: plant a passing result.json, then prlimit the runner (PID 1 in a container)
to RLIMIT_FSIZE 0 so its own write fails and the forged file is what the host reads."""
from hostile import *

starve_runner()


def custom_kernel(data):
    return wrong(data)
