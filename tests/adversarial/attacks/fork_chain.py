"""Fork chain: each process forks the next and exits at once, so the forger's pid keeps changing
under a killer that walks the process tree once; the chain forges as it goes."""
from hostile import *


def _chain():
    end = time.monotonic() + LINGER_S
    data = forged_json()
    while time.monotonic() < end:
        for d in out_dirs():
            write_file(os.path.join(d, "result.json"), data)
        try:
            if os.fork():
                os._exit(0)  # the parent leaves; the child carries on
        except OSError:
            time.sleep(0.01)
        time.sleep(0.002)


daemonize(_chain)


def custom_kernel(data):
    return wrong(data)
