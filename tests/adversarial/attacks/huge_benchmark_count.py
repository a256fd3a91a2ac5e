"""Huge counts (benchmark mode): claim 10**11 benchmarks, all fast, then exit 0: the score loop
and every report that lists the benchmarks follow the claimed count."""
from hostile import *

_fd = int(os.environ.get("POPCORN_FD", "1"))
os.write(_fd, b"benchmark-count: 100000000000\nbenchmark.0.spec: size: 1\nbenchmark.0.mean: 1.0\n"
              b"benchmark.0.status: pass\ncheck: pass\n")
os._exit(0)


def custom_kernel(data):
    return wrong(data)
