"""Signals to the runner: SIGTERM and SIGINT the runner over and over while forging, so it writes
an "interrupted" partial result (or none) that a daemon then replaces."""
import signal

from hostile import *


def _pester():
    plant()
    end = time.monotonic() + 3.0
    while time.monotonic() < end:
        signal_targets(signal.SIGTERM)
        signal_targets(signal.SIGINT)
        time.sleep(0.2)
    forge_loop()


daemonize(_pester)
time.sleep(0.3)


def custom_kernel(data):
    return wrong(data)
