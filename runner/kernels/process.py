"""Run one submission process and make sure nothing of it survives.

The runner makes itself a *child subreaper* (``prctl(PR_SET_CHILD_SUBREAPER)``), so a grandchild
whose parent exits (a daemonising double fork, a ``setsid`` escape) is re-parented to the runner
instead of to init. After the main process exits or times out, every descendant of the runner that
was not there before the spawn is found by walking ``/proc`` and SIGKILLed, until none is left.
SIGKILL cannot be ignored, so a child that ignores SIGTERM dies the same way.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from runner.kernels.capture import DEFAULT_OUTPUT_CAP, HeadBuffer, PipeReader, TailBuffer
from runner.procs import alive, kill_until_gone, wait_exit
from runner.sandbox import Sandbox

#: Bytes of POPCORN_FD protocol output kept per run (the harness's lines, not the logs).
POPCORN_CAP = 4 * 1024 * 1024
#: How long the runner keeps killing a process tree before it reports survivors.
KILL_DEADLINE_S = 10.0

_PR_SET_DUMPABLE = 4
_PR_SET_CHILD_SUBREAPER = 36
_subreaper: bool | None = None
_prctl_lock = threading.Lock()


@functools.cache
def _libc() -> ctypes.CDLL:
    """The C library, loaded once: the symbols this interpreter already has (``CDLL(None)``);
    by name only where those lack prctl (``find_library`` runs ``ldconfig -p``, a process, and
    ran on every call, twice per job)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if not hasattr(libc, "prctl"):
        from ctypes.util import find_library

        libc = ctypes.CDLL(find_library("c") or None, use_errno=True)
    return libc


def _prctl(option: int, value: int) -> bool:
    try:
        return _libc().prctl(option, value, 0, 0, 0) == 0
    except (OSError, AttributeError):  # not Linux / no prctl
        return False


def become_subreaper() -> bool:
    """Make this process the reaper of its orphaned descendants (once; True when it worked)."""
    global _subreaper
    with _prctl_lock:
        if _subreaper is None:
            _subreaper = _prctl(_PR_SET_CHILD_SUBREAPER, 1)
        return _subreaper


def hide_from_same_user() -> bool:
    """Mark the runner non-dumpable: processes of the same user (the submission) can then neither
    ptrace it nor read its ``/proc/<pid>/environ`` (which holds the payload and the output dir).
    execve resets the flag, so children are unaffected."""
    return _prctl(_PR_SET_DUMPABLE, 0)


# ---------------------------------------------------------------------------------------------
# /proc walking
# ---------------------------------------------------------------------------------------------


def _scan() -> dict[int, tuple[int, str]]:
    """pid → (ppid, state) of every process visible in /proc."""
    procs: dict[int, tuple[int, str]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                data = f.read()
        except OSError:  # exited meanwhile
            continue
        # The command name may hold spaces and ')': the fields start after the LAST ')'.
        rest = data[data.rfind(b")") + 2 :].split()
        if len(rest) < 2:
            continue
        procs[int(name)] = (int(rest[1]), rest[0].decode("ascii", "replace"))
    return procs


def _descendants(root: int, procs: dict[int, tuple[int, str]], skip: set[int]) -> list[int]:
    children: dict[int, list[int]] = {}
    for pid, (ppid, _state) in procs.items():
        children.setdefault(ppid, []).append(pid)
    found: list[int] = []
    stack = [c for c in children.get(root, []) if c not in skip]
    while stack:
        pid = stack.pop()
        found.append(pid)
        stack.extend(c for c in children.get(pid, []) if c not in skip)
    return found


def children_now() -> set[int]:
    """This process's current descendants (kept out of a later :func:`kill_descendants`)."""
    return set(_descendants(os.getpid(), _scan(), set()))


def kill_descendants(
    *, keep: set[int], protect: int | None = None, deadline_s: float = KILL_DEADLINE_S
) -> tuple[int, list[int]]:
    """SIGKILL every descendant of this process except ``keep`` (and their subtrees) until none is
    alive; reap re-parented zombies except ``protect`` (the Popen child, which Popen reaps).
    Returns (number of processes killed, pids still alive at the deadline)."""
    me = os.getpid()

    def sweep() -> list[int]:
        procs = _scan()
        tree = _descendants(me, procs, keep)
        for pid in tree:  # orphans re-parented to us: reap them so no zombie is left behind
            if procs[pid][0] == me and pid != protect and procs[pid][1] in ("Z", "X"):
                with contextlib.suppress(ChildProcessError, OSError):
                    os.waitpid(pid, os.WNOHANG)
        # a leader that called the exit syscall shows Z while its other threads run on
        return [p for p in tree if procs[p][1] not in ("Z", "X") or alive(p)]

    return kill_until_gone(sweep, deadline_s)


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold SIGTERM/SIGINT while cleaning up, so a second signal cannot cut a kill short; a
    pending one is delivered (and raises) right after."""
    sigs = {signal.SIGTERM, signal.SIGINT}
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


# ---------------------------------------------------------------------------------------------
# one process
# ---------------------------------------------------------------------------------------------


@dataclass
class ProcessOutcome:
    command: str
    exit_code: int
    duration: float
    timed_out: bool
    stdout: str
    stderr: str
    popcorn: bytes = b""
    popcorn_overflowed: bool = False
    #: Processes the submission left running (killed after the main process ended).
    leftovers_killed: int = 0
    survivors: list[int] = field(default_factory=list)
    start_error: str = ""
    #: Pipes still open after the tree was killed (held by a process outside it).
    unfinished_pipes: list[str] = field(default_factory=list)


def run_process(
    argv: Sequence[str],
    *,
    cwd: str | os.PathLike[str],
    env: Mapping[str, str],
    timeout_s: float,
    popcorn: bool = True,
    output_cap: int = DEFAULT_OUTPUT_CAP,
    popcorn_cap: int = POPCORN_CAP,
    timeout_exit_code: int = 114,
    sandbox: Sandbox | None = None,
    writable: Sequence[str | os.PathLike[str]] = (),
    share_net: bool = False,
) -> ProcessOutcome:
    """Run ``argv`` to completion or ``timeout_s``; kill its whole tree either way.

    With ``popcorn`` the child gets ``POPCORN_FD`` (the write end of a pipe the runner reads).
    With ``sandbox`` it runs as the submission (its uid, its namespaces) and every process of
    that uid is killed afterwards. A timed-out process gets ``timeout_exit_code`` and
    ``duration == timeout_s``."""
    become_subreaper()
    command = " ".join(argv)
    sandbox = sandbox or Sandbox(mode="none")
    full_argv = sandbox.command(
        argv, cwd=cwd, writable=writable, share_net=share_net,
        readable=[p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p],
    )
    env = dict(env)
    keep = children_now()
    out = TailBuffer(output_cap)
    err = TailBuffer(output_cap)
    pop = HeadBuffer(popcorn_cap)
    fds: list[int] = []  # parent-side write ends still open
    readers: list[PipeReader] = []
    proc: subprocess.Popen[bytes] | None = None
    timed_out = False
    unfinished: list[str] = []
    start = time.monotonic()
    duration = 0.0
    try:
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        fds += [out_w, err_w]
        readers += [PipeReader(out_r, out, "stdout"), PipeReader(err_r, err, "stderr")]
        pass_fds: tuple[int, ...] = ()
        if popcorn:
            pop_r, pop_w = os.pipe()
            fds.append(pop_w)
            readers.append(PipeReader(pop_r, pop, "popcorn"))
            env["POPCORN_FD"] = str(pop_w)
            pass_fds = (pop_w,)
        start = time.monotonic()
        try:
            proc = subprocess.Popen(
                full_argv,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out_w,
                stderr=err_w,
                pass_fds=pass_fds,
                start_new_session=True,  # the terminal's Ctrl-C goes to the runner, not to it
                **sandbox.popen_kwargs(),
            )
        except (OSError, subprocess.SubprocessError) as e:
            for fd in fds:
                os.close(fd)
            fds.clear()
            for r in readers:
                r.start()
            return ProcessOutcome(
                command, 127, 0.0, False, "", "", start_error=f"cannot start {argv[0]}: {e}"
            )
        for fd in fds:  # only the child holds the write ends now: EOF comes when it is gone
            os.close(fd)
        fds.clear()
        for r in readers:
            r.start()
        try:
            wait_exit(proc, timeout_s)
            duration = time.monotonic() - start
        except subprocess.TimeoutExpired:
            timed_out = True
            duration = float(timeout_s)
    finally:
        with _signals_deferred():
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.close(fd)
            leftovers, survivors = 0, []
            if proc is not None:
                main_alive = proc.poll() is None
                by_uid, uid_survivors = sandbox.kill_all(protect=proc.pid)
                leftovers, survivors = kill_descendants(keep=keep, protect=proc.pid)
                leftovers = max(leftovers, by_uid)
                survivors = sorted(set(survivors) | set(uid_survivors))
                if main_alive:
                    leftovers -= 1  # the main process itself is not a leftover
                proc.wait()
                if not duration:
                    duration = time.monotonic() - start
            for r in readers:
                if r.is_alive():
                    r.join(timeout=5.0)
            unfinished = [r.name for r in readers if r.is_alive()]
    exit_code = timeout_exit_code if timed_out else proc.returncode
    return ProcessOutcome(
        command=command,
        exit_code=exit_code,
        duration=duration,
        timed_out=timed_out,
        stdout=out.text("stdout"),
        stderr=err.text("stderr"),
        popcorn=pop.getvalue(),
        popcorn_overflowed=pop.overflowed,
        leftovers_killed=max(leftovers, 0),
        survivors=survivors,
        unfinished_pipes=unfinished,
    )
