"""Signals to the runner: SIGSTOP the runner, plant a forged result while it is stopped, starve
it of file size, then SIGCONT it (the host sees a runner that "finished")."""
import signal

from hostile import *


def _stop_and_forge():
    hit = signal_targets(signal.SIGSTOP)
    starve_runner()
    forge_loop(3.0)
    for pid in hit:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGCONT)
    forge_loop()


daemonize(_stop_and_forge)
time.sleep(0.5)


def custom_kernel(data):
    return wrong(data)
