"""Zombie leader: a second thread keeps re-planting a forged result.json while the main thread
ends with the raw exit syscall. The leader shows as a zombie ("Z"), which a killer that looks
only at the leader's state takes for dead; the thread group lives on."""
import threading

from hostile import *


def _forger():
    mark()
    starve_runner()
    forge_loop()
    os._exit(0)


def custom_kernel(data):
    t = threading.Thread(target=_forger, daemon=False)
    t.start()
    time.sleep(0.2)
    raw_exit(0)  # only this thread ends: the process lives on in _forger
    return wrong(data)
