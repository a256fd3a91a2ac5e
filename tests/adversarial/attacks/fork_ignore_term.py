"""Survivors: children that ignore SIGTERM/SIGHUP, block every signal they can, reparent
themselves (setsid) and sleep past the run, waiting to forge once the runner looks away."""
import signal

from hostile import *


def _stubborn():
    for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT, signal.SIGUSR1):
        signal.signal(s, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_BLOCK, set(signal.Signals) - {signal.SIGKILL, signal.SIGSTOP})
    lingering_sleep(3.0)
    forge_loop()


for _ in range(8):
    if os.fork() == 0:
        try:
            os.setsid()
            _stubborn()
        finally:
            os._exit(0)


def custom_kernel(data):
    return wrong(data)
