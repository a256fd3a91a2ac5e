"""Huge counts: write the harness's protocol lines itself, claiming 10**15 passed tests, and exit
0 before the harness can report the failures (a runner that loops to the claimed count spins or
runs out of memory; one that believes it reports a pass)."""
from hostile import *

_fd = int(os.environ.get("POPCORN_FD", "1"))
os.write(_fd, b"test-count: 1000000000000000\ntest.0.status: pass\ncheck: pass\n")
os._exit(0)


def custom_kernel(data):
    return wrong(data)
