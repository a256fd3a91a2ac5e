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
        while not all(s in (b"T", b"t", b"Z", b"X") for s in self._states()):
            if self.proc.poll() is not None or time.monotonic() > end:
                self.dead = self.dead or "the worker could not be paused"
                raise WorkerGone(self.dead)
            time.sleep(0)
        self.frozen = True

    def thaw(self) -> None:
        """SIGCONT, then wait until no thread is still stopped: the wake-up of every thread is
        then over before the judge starts its clock."""
        if self.frozen:
            os.kill(self.pid, signal.SIGCONT)
            self.frozen = False
            end = time.monotonic() + FREEZE_DEADLINE_S
            while self._any_stopped() and time.monotonic() < end:
                time.sleep(0)

    def _states(self) -> list[bytes]:
        try:
            tids = os.listdir(f"/proc/{self.pid}/task")
        except OSError:
            return []
        states = []
        for tid in tids:
            try:
                with open(f"/proc/{self.pid}/task/{tid}/stat", "rb") as f:
                    data = f.read()
            except OSError:
                continue  # the thread exited
            states.append(data[data.rfind(b")") + 2 :][:1])
        return states

    def _any_stopped(self) -> bool:
        return any(s in (b"T", b"t") for s in self._states())

    # -- talking ---------------------------------------------------------------------------

    def send(self, msg: dict[str, Any], fds: list[int] | None = None) -> None:
        self.send_bytes(dump(msg), fds)

    def send_bytes(self, data: bytes, fds: list[int] | None = None) -> None:
        if self.dead:
            raise WorkerGone(self.dead)
        self.thaw()  # a paused worker would never answer
        try:
            self.ch.send_bytes(data, fds)
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
        try:
            code = self.proc.wait(timeout=2)
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
        try:
            self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.sandbox.kill_all()
