"""Daemon: a double-forked, setsid'd grandchild (re-parented away from the harness) keeps
re-planting a forged result.json after the harness has exited."""
from hostile import *

daemonize(forge_loop)


def custom_kernel(data):
    return wrong(data)
