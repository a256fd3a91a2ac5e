"""Huge result.json: a 40 MiB forged (valid, passing) result.json, over the host's 32 MiB read
limit, and starve the runner so it stays."""
from hostile import *

plant(forged_json(pad=40 * 1024 * 1024))
for _pid in kitebench_targets():
    prlimit(_pid, 1, 0)


def custom_kernel(data):
    return wrong(data)
