"""Writes into the launcher's temp dir: leave files there and a tree the launcher cannot remove
(0000 dirs, a daemon that keeps writing), so its cleanup fails and the run ends in an error, or
a file is left behind on the host."""
from hostile import *

_roots = set(glob.glob("/tmp/kbadv-*/kitebench-local-*")) | set(glob.glob("/tmp/kbadv-*/kitebench-job-*"))
_here = os.getcwd()
for _ in range(4):
    _here = os.path.dirname(_here)
    if "kitebench-local-" in os.path.basename(_here):
        _roots.add(_here)


def _litter():
    end = time.monotonic() + LINGER_S
    n = 0
    while time.monotonic() < end:
        for r in _roots:
            d = os.path.join(r, f"kbadv-{TOKEN}-{n % 50}")
            with contextlib.suppress(OSError):
                os.makedirs(os.path.join(d, "x"), exist_ok=True)
                write_file(os.path.join(d, "x", "f"), b"x")
                os.chmod(os.path.join(d, "x"), 0)
                os.chmod(d, 0)
        n += 1
        time.sleep(0.01)


say(f"launcher dirs: {sorted(_roots)}")
daemonize(_litter)


def custom_kernel(data):
    return wrong(data)
