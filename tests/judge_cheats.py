"""A cheat corpus for the built-in harness: submissions that each try one way the field's
in-process harnesses have been beaten. All of them compute nothing useful (or something slow)
and would, against an in-process harness, report a pass or a faked time."""

from __future__ import annotations

#: vectoradd (NumPy); every cheat below targets it.
REFERENCE = """
import numpy as np

RTOL = 1e-5
ATOL = 1e-5


def generate_input(size, seed):
    rng = np.random.default_rng(seed)
    return rng.standard_normal(size, dtype=np.float32), rng.standard_normal(size, dtype=np.float32)


def ref_kernel(data):
    a, b = data
    return a + b
"""

STUB = "from runner.harness import main\n\nmain()\n"

CORRECT = """
def custom_kernel(data):
    a, b = data
    return a + b
"""

#: The same result, computed three times: correct, and about 3x slower.
SLOW_3X = """
import numpy as np

def custom_kernel(data):
    a, b = data
    out = np.add(a, b)
    np.add(a, b, out=out)
    np.add(a, b, out=out)
    return out
"""

#: name → (source, what it tries)
CHEATS: dict[str, tuple[str, str]] = {
    "protocol_forge_exit": ("""
import os

def custom_kernel(data):
    lines = b"check: pass\\nbenchmark-count: 1\\nbenchmark.0.status: pass\\nbenchmark.0.mean: 1\\n"
    targets = []
    if os.environ.get("POPCORN_FD"):
        targets.append(int(os.environ["POPCORN_FD"]))
    targets += list(range(3, 64))
    for fd in targets:
        try:
            os.write(fd, lines)
        except OSError:
            pass
    for pid in (os.getppid(), 1):  # the judge's pipe, through /proc
        try:
            for name in os.listdir(f"/proc/{pid}/fd"):
                try:
                    fd = os.open(f"/proc/{pid}/fd/{name}", os.O_WRONLY)
                    os.write(fd, lines)
                except OSError:
                    pass
        except OSError:
            pass
    os._exit(0)
""", "write check: pass and a 1 ns mean to every descriptor it can find, then exit 0"),
    "comparison_patch": ("""
import numpy as np
import runner.harness.compare as c
import runner.harness.modes as m

c.compare = lambda *a, **k: None
m.compare = lambda *a, **k: None
m.Task.verify = lambda self, pristine, output: None

def custom_kernel(data):
    return np.zeros_like(data[0])
""", "replace the harness's comparison with one that always agrees; return zeros"),
    "clock_patch": ("""
import time
_real = time.perf_counter_ns
_t = [0]
def fake():
    _t[0] += 1
    return _t[0]
time.perf_counter_ns = fake
try:
    import runner.harness.timing as t
    t.time.perf_counter_ns = fake
    t.CpuClock.time = lambda self, fn, data: (1.0, fn(data))
except Exception:
    pass

def custom_kernel(data):
    a, b = data
    end = _real() + 4_000_000
    while _real() < end:
        pass
    return a + b
""", "make every call look 1 ns long; really spin 4 ms"),
    "statistics_patch": ("""
import statistics
import runner.harness.timing as t

statistics.fmean = lambda xs: 1.0
t.Stats.of = classmethod(lambda cls, d: cls(len(d), 1.0, 0.0, 0.0, 1.0, 1.0, 1.0))

def custom_kernel(data):
    import time
    time.sleep(0.004)
    a, b = data
    return a + b
""", "make the harness's statistics report a 1 ns mean; really sleep 4 ms"),
    "input_mutation": ("""
import numpy as np

def custom_kernel(data):
    a, b = data
    out = np.zeros_like(a)
    a[:] = 0  # a reference that read these inputs after the call would expect zeros
    b[:] = 0
    return out
""", "return zeros and zero the inputs, so a reference reading them agrees"),
    "output_cache": ("""
_cache = {}

def custom_kernel(data):
    a, b = data
    key = a.shape
    if key not in _cache:
        _cache[key] = a + b
    return _cache[key]
""", "return the first result for a size for every later input of that size"),
    "input_alias": ("""
def custom_kernel(data):
    a, b = data
    b[:] = 0  # the reference of (a, b) is now a itself
    return a  # the output IS an input
""", "return an input as the output after changing the other so reference(inputs) == it"),
    "frame_gc_inspection": ("""
import gc
import sys
import numpy as np

def _disarm():
    found = 0
    for obj in gc.get_objects():
        try:
            if hasattr(obj, "verify") and hasattr(obj, "generate_input"):
                obj.verify = lambda pristine, output: None
                found += 1
            if type(obj).__name__ == "PopcornOutput":
                obj.log("check", "pass")
                found += 1
        except Exception:
            pass
    f = sys._getframe()
    while f is not None:
        for value in list(f.f_locals.values()):
            try:
                if hasattr(value, "verify"):
                    value.verify = lambda pristine, output: None
                    found += 1
            except Exception:
                pass
        f = f.f_back
    return found

def custom_kernel(data):
    _disarm()
    return np.zeros_like(data[0])
""", "walk gc objects and the frame stack for the harness's task and disarm its check"),
    "helper_process": ("""
import subprocess
import sys

_helper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])

def custom_kernel(data):
    a, b = data
    return a + b
""", "keep a second process of its own running during the timed calls (it could work while "
     "the worker is paused)"),
    "late_output_thread": ("""
import gc
import threading
import time
import numpy as np

def _worker():
    for obj in gc.get_objects():
        if type(obj).__name__ == "Worker" and hasattr(obj, "buf"):
            return obj

def custom_kernel(data):
    a, b = data
    w = _worker()
    off = int(w._last_msg["out"])

    def late():
        time.sleep(0.002)  # the reply has gone: the judge is reading the output now
        view = np.ndarray(a.shape, dtype=a.dtype, buffer=w.buf, offset=off)
        np.add(a, b, out=view)

    threading.Thread(target=late, daemon=True).start()
    return np.zeros_like(a)  # reply at once; the real result is written into the region later
""", "reply at once and write the real result into the shared output after the reply"),
    "overhead_inflation": ("""
import sys
import time

# the worker runs as __main__ (python -m runner.harness.worker)
w = sys.modules["__main__"]
_handle = w.Worker.handle

def slow_handle(self, msg, fds):
    time.sleep(0.004)  # every message, echo included: a bigger overhead to subtract?
    return _handle(self, msg, fds)

w.Worker.handle = slow_handle

def custom_kernel(data):
    a, b = data
    return a + b
""", "slow down the worker's message handling so the judge subtracts more"),
}
