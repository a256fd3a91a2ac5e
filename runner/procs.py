"""Processes by uid, and the trees they leave: find them (zombie leaders included), kill them
until they are gone, remove a work dir the submission locked. Used by :mod:`runner.sandbox`
after every run and by the local launcher when a runner died."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import stat
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

#: How long a kill sweep keeps trying before it reports what survived.
KILL_DEADLINE_S = 10.0


def wait_exit(proc: subprocess.Popen[bytes], timeout_s: float) -> int:
    """``proc.wait(timeout_s)`` without its polling (Popen sleeps up to 50 ms between checks, so
    a short process was seen to exit late): a blocking wait on the process's pidfd. Returns the
    exit code; raises ``subprocess.TimeoutExpired`` like ``wait``."""
    try:
        fd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):  # no pidfd (an old kernel, not Linux): Popen's own wait
        return proc.wait(timeout=timeout_s)
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        end = time.monotonic() + timeout_s
        # readable once the process has exited; a signal whose handler returns is retried
        while (left := end - time.monotonic()) > 0 and not poller.poll(left * 1000):
            pass
    finally:
        os.close(fd)
    return proc.wait(timeout=0)  # reaps it, or TimeoutExpired when the time ran out


def pids_of_uid(uid: int) -> list[int]:
    """Processes (thread groups) whose real or effective uid is ``uid``."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/status", "rb") as f:
                for line in f:
                    if line.startswith(b"Uid:"):
                        real, eff = (int(x) for x in line.split()[1:3])
                        if uid in (real, eff):
                            found.append(int(name))
                        break
        except (OSError, ValueError):
            continue
    return found


def alive(pid: int) -> bool:
    """Any thread of the group still running? A leader that called the exit syscall shows ``Z``
    while its other threads go on: state of the leader alone is not enough."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return False
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat", "rb") as f:
                data = f.read()
        except OSError:
            continue
        state = data[data.rfind(b")") + 2 :][:1]
        if state not in (b"Z", b"X"):
            return True
    return False


def kill_until_gone(
    sweep: Callable[[], list[int]], deadline_s: float = KILL_DEADLINE_S
) -> tuple[int, list[int]]:
    """SIGKILL what ``sweep`` finds alive (it also reaps what it may) until it finds nothing or
    the deadline passes: (number killed, pids still alive at the deadline)."""
    killed: set[int] = set()
    end = time.monotonic() + deadline_s
    delay = 0.001
    while True:
        live = sweep()
        for pid in live:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
            killed.add(pid)
        if not live:
            return len(killed), []
        if time.monotonic() > end:
            return len(killed), live
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def reap_zombies(uid: int, protect: int | None) -> None:
    """Reap exited processes of ``uid`` that are our children (re-parented to us: we are PID 1
    or a subreaper), never ``protect``, never a child of another uid (another thread's Popen)."""
    me = os.getpid()
    for pid in pids_of_uid(uid):
        if pid == protect:
            continue
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                data = f.read()
        except OSError:
            continue
        rest = data[data.rfind(b")") + 2 :].split()
        if len(rest) > 1 and rest[0] in (b"Z", b"X") and int(rest[1]) == me:
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(pid, os.WNOHANG)


def remove_tree(root: Path) -> None:
    """``rm -rf root`` that works on a tree its owner locked: each dir is taken back (chown when
    we may, chmod 0700) before it is listed. Only ``root`` and what is below it are changed."""
    me = os.geteuid()

    def take(d: str) -> None:
        # through a descriptor opened without following links: a dir swapped for a symlink to
        # /etc meanwhile is refused (ELOOP), never chmod'ed
        try:
            fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except OSError:
            return
        try:
            with contextlib.suppress(OSError):
                if os.fstat(fd).st_uid != me:
                    os.fchown(fd, me, -1)
            with contextlib.suppress(OSError):
                os.fchmod(fd, stat.S_IRWXU)
        finally:
            os.close(fd)

    def walk(d: str) -> None:
        take(d)
        try:
            entries = list(os.scandir(d))
        except OSError:
            return
        for e in entries:
            try:
                if e.is_dir(follow_symlinks=False):
                    walk(e.path)
                    os.rmdir(e.path)
                else:
                    os.unlink(e.path)
            except OSError:
                pass

    if not os.path.lexists(root):
        return
    if os.path.islink(root) or not os.path.isdir(root):
        with contextlib.suppress(OSError):
            os.unlink(root)
        return
    walk(str(root))
    with contextlib.suppress(OSError):
        os.rmdir(root)
