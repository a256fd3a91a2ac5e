"""ptrace of the runner: attach to the runner (and the launcher above it) to read its memory, the
result key or the payload; with /proc/<pid>/mem as the fallback."""
from hostile import *

_PTRACE_ATTACH, _PTRACE_DETACH = 16, 17
_libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
for _pid in kitebench_targets():
    if _libc.ptrace(_PTRACE_ATTACH, _pid, None, None) == 0:
        leak(f"ptrace attached to {_pid} ({cmdline(_pid)[:60]})")
        time.sleep(0.05)
        _libc.ptrace(_PTRACE_DETACH, _pid, None, None)
    else:
        say(f"ptrace({_pid}) -> {os.strerror(ctypes.get_errno())}")
    with contextlib.suppress(OSError), open(f"/proc/{_pid}/mem", "rb") as _f:
        leak(f"/proc/{_pid}/mem opened")
starve_runner()


def custom_kernel(data):
    return wrong(data)
