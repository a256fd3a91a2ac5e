"""The judge's handle on its worker process: start it under the sandbox, pause and resume it,
hand it shared memory, and notice any other process the submission starts."""

from __future__ import annotations

import contextlib
import fcntl
import mmap
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from typing import Any

from runner.harness.channel import WORKER_FD_ENV, Channel, ChannelClosed, dump, load
from runner.procs import alive, pids_of_uid
from runner.sandbox import Sandbox

#: How long a pause may take before the judge gives up on the worker.
FREEZE_DEADLINE_S = 5.0
#: How long a worker that broke the channel gets to show its exit code before it is called a
#: channel breaker (it is killed with its sandbox either way).
EXIT_WAIT_S = 10.0
#: Environment the worker must not inherit from the judge: the protocol pipe, the secret seed
#: (the judge mixes it into the inputs; the submission has no use for it), the judge's settings.
_JUDGE_ONLY = ("POPCORN_", "KITEBENCH_")


def python_path(env: Mapping[str, str]) -> list[str]:
    """PYTHONPATH's dirs: they must stay visible inside the sandbox (runner.sandbox)."""
    return [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]


class WorkerGone(RuntimeError):
    """The worker exited or broke the channel: no later call can be made."""


def _scan_children(root: int) -> set[int]:
    from runner.kernels.process import _descendants, _scan

    return set(_descendants(root, _scan(), set()))


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


#: Thread states in which nothing of a thread runs (stopped, traced, zombie, dead).
_STOPPED = frozenset((b"T", b"t", b"Z", b"X"))
#: Threads whose stat files a :class:`Threads` keeps open; beyond, it opens them per check.
MAX_WATCHED = 64


def _stat_rest(fd: int) -> list[bytes] | None:
    """The fields of a stat file after the command name (which may hold anything), or None
    when the task is gone."""
    try:
        data = os.pread(fd, 4096, 0)
    except OSError:
        return None
    return data[data.rfind(b")") + 2 :].split() or None


class Threads:
    """Whether every thread of a process is stopped, in few ``/proc`` reads: the stat files of
    the threads it knows stay open (a ``pread`` each), and the process's thread count, read
    after them, tells whether a thread it does not know exists. That count is enough because a
    new thread is started by a running one and a stopped thread stays stopped until SIGCONT:
    a single-threaded worker costs one read."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.lead = os.open(f"/proc/{pid}/stat", os.O_RDONLY | os.O_CLOEXEC)
        self.others: dict[str, int] = {}  #: tid → its open stat file (the leader's excluded)
        self.unwatched: list[str] = []  #: beyond MAX_WATCHED: opened at each check

    def all_stopped(self) -> bool:
        for fd in self.others.values():
            if not self._stopped(fd):
                return False
        for tid in self.unwatched:
            try:
                fd = os.open(f"/proc/{self.pid}/task/{tid}/stat", os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                fd = -1
            try:
                if not self._stopped(fd):
                    return False
            finally:
                if fd >= 0:
                    os.close(fd)
        lead = _stat_rest(self.lead)
        if lead is None:
            return True  # the whole process is gone: nothing of it runs
        if lead[0] not in _STOPPED:
            return False
        if len(lead) > 17 and int(lead[17]) == 1 + len(self.others) + len(self.unwatched):
            return True
        self._rescan()  # threads came or went: learn the new set, then look again
        return False

    def _stopped(self, fd: int) -> bool:
        rest = _stat_rest(fd) if fd >= 0 else None
        if rest is None:  # the thread exited: learn the new set, then look again
            self._rescan()
            return False
        return rest[0] in _STOPPED

    def _rescan(self) -> None:
        try:
            tids = set(os.listdir(f"/proc/{self.pid}/task")) - {str(self.pid)}
        except OSError:
            tids = set()
        for tid in set(self.others) - tids:
            os.close(self.others.pop(tid))
        for tid in sorted(tids - set(self.others)):
            if len(self.others) >= MAX_WATCHED:
                break
            with contextlib.suppress(OSError):  # it may have exited meanwhile
                self.others[tid] = os.open(f"/proc/{self.pid}/task/{tid}/stat",
                                           os.O_RDONLY | os.O_CLOEXEC)
        self.unwatched = sorted(tids - set(self.others))

    def close(self) -> None:
        for fd in [self.lead, *self.others.values()]:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.others.clear()


class Region:
    """A sealed memfd the judge creates, maps and passes to the worker: it cannot be grown or
    shrunk afterwards (a shrunk file would crash the judge on its next read)."""

    def __init__(self, size: int) -> None:
        self.size = max(size, mmap.PAGESIZE)
        self.fd = os.memfd_create("kitebench-judge", os.MFD_ALLOW_SEALING | os.MFD_CLOEXEC)
        os.ftruncate(self.fd, self.size)
        fcntl.fcntl(self.fd, fcntl.F_ADD_SEALS,
                    fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL)
        self.map = mmap.mmap(self.fd, self.size)
        self.buf = memoryview(self.map)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


class WorkerProcess:
    def __init__(self, sandbox: Sandbox, cwd: str, env: Mapping[str, str]) -> None:
        self.sandbox = sandbox
        self.ch, theirs = Channel.pair()
        wenv = {k: v for k, v in env.items() if not k.startswith(_JUDGE_ONLY)}
        wenv[WORKER_FD_ENV] = str(theirs.fileno())
        argv = sandbox.command([sys.executable, "-m", "runner.harness.worker"], cwd=cwd,
                               readable=python_path(wenv))
        self.proc = subprocess.Popen(
            argv, cwd=cwd, env=wenv, stdin=subprocess.DEVNULL, pass_fds=(theirs.fileno(),),
            **sandbox.popen_kwargs(),
        )
        theirs.close()
        try:
            hello, _ = self.ch.recv()
        except (ChannelClosed, OSError) as e:
            raise WorkerGone(f"the worker did not start: {e}") from None
        self.pid = self._outer_pid()
        try:
            self.threads = Threads(self.pid)
        except OSError as e:
            raise WorkerGone(f"the worker exited as it started: {e}") from None
        #: The sandbox's processes before the submission was imported (bubblewrap's helpers).
        self.known = self.processes()
        self.frozen = False
        self.dead = ""

    def _outer_pid(self) -> int:
        """The worker's pid as the judge sees it (inside bubblewrap it is a grandchild)."""
        if self.sandbox.bwrap is None:
            return self.proc.pid
        for pid in sorted(_scan_children(self.proc.pid)):
            args = _cmdline(pid).split(b"\0")
            if args[0] == sys.executable.encode() and b"runner.harness.worker" in args:
                return pid
        raise WorkerGone("cannot find the worker process inside its sandbox")

    def processes(self) -> set[int]:
        """Every live process of the submission this judge can find: all of its uid when it has
        one, else the worker's process tree."""
        if self.sandbox.uid is not None and self.sandbox.uid != os.getuid():
            pids = set(pids_of_uid(self.sandbox.uid))
        else:
            pids = _scan_children(self.proc.pid) | {self.proc.pid}
        return {p for p in pids if alive(p)}

    def others(self) -> set[int]:
        return self.processes() - self.known - {self.pid}

    # -- pausing ---------------------------------------------------------------------------

    def freeze(self) -> None:
        """SIGSTOP the worker and wait until every thread of it is stopped: from here on
        nothing of it runs while the judge reads the output and writes the next inputs."""
        os.kill(self.pid, signal.SIGSTOP)
        end = time.monotonic() + FREEZE_DEADLINE_S
        while not self.threads.all_stopped():
            code = self.proc.poll()
            if code is not None or not alive(self.pid):
                # the worker itself is gone (its sandbox's init may not have exited yet)
                self.dead = self.dead or "the worker process exited during the call" + (
                    f" (code {code})" if code is not None else "")
                raise WorkerGone(self.dead)
            if time.monotonic() > end:
                self.dead = self.dead or "the worker could not be paused"
                raise WorkerGone(self.dead)
            time.sleep(0)
        self.frozen = True

    def thaw(self) -> None:
        """SIGCONT. The kernel makes every stopped thread runnable before ``kill`` returns;
        a timed call does not wait for more (its clock runs from before this on, the echo
        calibration's too)."""
        if self.frozen:
            os.kill(self.pid, signal.SIGCONT)
            self.frozen = False

    # -- talking ---------------------------------------------------------------------------

    def call(self, request: bytes) -> bytes:
        """The timed round trip, as little as possible between the judge's clock reads: the
        request is queued while the worker is still paused, SIGCONT wakes it with the request
        already there (one wake-up, one ``send``), then one blocking ``recvmsg`` for the reply.
        """
        if self.dead:
            raise WorkerGone(self.dead)
        try:
            self.ch.sock.send(request)
            self.thaw()
        except OSError as e:
            self._gone(f"the channel broke: {e}")
        return self.recv_bytes()

    def send(self, msg: dict[str, Any], fds: list[int] | None = None) -> None:
        self.send_bytes(dump(msg), fds)

    def send_bytes(self, data: bytes, fds: list[int] | None = None) -> None:
        if self.dead:
            raise WorkerGone(self.dead)
        try:
            self.ch.send_bytes(data, fds)
            self.thaw()  # a paused worker would never answer
        except OSError as e:
            self._gone(f"the channel broke: {e}")

    def recv_bytes(self) -> bytes:
        try:
            data, _ = self.ch.recv_bytes()
        except (ChannelClosed, OSError, ValueError) as e:
            self._gone(str(e))
        return data

    def recv(self) -> dict[str, Any]:
        try:
            return load(self.recv_bytes())
        except ValueError as e:
            return self._gone(str(e))

    def request(self, msg: dict[str, Any], fds: list[int] | None = None) -> dict[str, Any]:
        self.send(msg, fds)
        return self.recv()

    def _gone(self, why: str) -> Any:
        with contextlib.suppress(OSError):
            self.thaw()  # no more calls: a worker paused on its way out may finish exiting
        try:
            # a loaded machine can take seconds to end a sandboxed process: wait for its code
            code = self.proc.wait(timeout=EXIT_WAIT_S)
            self.dead = f"the worker process exited (code {code}) during the call: {why}"
        except subprocess.TimeoutExpired:
            self.dead = f"the worker broke the channel: {why}"
        raise WorkerGone(self.dead)

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.thaw()
        with contextlib.suppress(OSError, WorkerGone):
            if not self.dead:
                self.ch.send({"op": "exit"})
        self.ch.close()
        self.threads.close()
        try:
            self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.sandbox.kill_all()
