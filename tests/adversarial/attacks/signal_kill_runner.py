"""Signals to the runner: SIGKILL the runner (and the launcher above it) from a daemon, which
then stays behind forging result.json: with no runner left to clean up, nothing kills it."""
import signal

from hostile import *


def _kill_and_stay():
    plant()
    signal_targets(signal.SIGKILL)
    forge_loop()


daemonize(_kill_and_stay)
time.sleep(0.5)


def custom_kernel(data):
    return wrong(data)
