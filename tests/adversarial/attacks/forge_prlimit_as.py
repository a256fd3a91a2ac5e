"""Forge by rlimits: plant a passing result.json, then shrink the runner's address space
(RLIMIT_AS) and CPU time so it dies or fails before it writes its own verdict."""
from hostile import *

plant()
for pid in kitebench_targets():
    prlimit(pid, 9, 64 * 1024 * 1024)  # RLIMIT_AS: every new allocation fails
    prlimit(pid, 0, 1)  # RLIMIT_CPU: one second, then SIGXCPU


def custom_kernel(data):
    return wrong(data)
