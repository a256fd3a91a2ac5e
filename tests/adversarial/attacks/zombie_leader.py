"""Zombie leader: a child process starts a thread that keeps re-planting a forged result.json,
then ends its main thread with the raw exit syscall. The child's leader shows as a zombie ("Z"),
which a killer that looks only at the leader's state takes for dead, while the thread group
lives on past the harness (which exits at once, as if nothing were left)."""
import threading

from hostile import *


def _forger():
    mark()
    starve_runner()
    forge_loop()
    os._exit(0)


if os.fork() == 0:
    threading.Thread(target=_forger, daemon=False).start()
    time.sleep(0.1)
    raw_exit(0)  # only the main thread ends: the process lives on in _forger
time.sleep(0.3)  # the child's leader is a zombie now


def custom_kernel(data):
    return wrong(data)
