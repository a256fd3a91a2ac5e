"""Where submitted code runs: its own uid, its own namespaces where they can be had, and a kill
that leaves nothing of it alive.

The rule (docs/vendor-host.md, "Threat model"): the code that writes the verdict (the runner) and
the submitted code never share a uid, a writable path or a process tree. One :class:`Sandbox` is
chosen per job by :func:`from_env` and used for every process that runs submitted code (the task
harness that imports the submission, nvcc on submitted sources, a vLLM fork's install and server).

Modes, strongest first:

``uid+ns``  process isolation as root with bubblewrap: the submission runs as an unprivileged
            uid of its own inside new pid, mount, ipc, uts and (optionally) net namespaces.
            Where other uids cannot reach the interpreter (under a 0700 /root), root starts
            bubblewrap and the uid is taken inside, after the runtime is bound in.
``uid``     the uid change alone: the container (started as root with only CHOWN, SETUID,
            SETGID and KILL; its seccomp profile refuses new namespaces). The submission cannot signal, ``prlimit``, ptrace or write anything of
            the runner's; after each run every process of its uid is killed, then checked gone.
``ns``      bubblewrap as a normal user (unprivileged user namespaces): the same uid, but the
            submission sees none of the runner's processes (pid namespace: nothing to signal or
            ``prlimit``), writes only its work dir and a private /tmp (mount namespace) and its
            pid namespace dies with it.
``none``    neither is available: ``process (not hardened)``. The verdict is still signed with a
            key the submission never sees (runner.verdict), so it cannot be forged, but the
            submission can disturb the runner (signals, rlimits) and write where its user can.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from runner import procs

Mode = Literal["uid+ns", "uid", "ns", "none"]

#: The submission's uid:gid (set by the host for the container, by the local backend as root).
ENV_UID = "KITEBENCH_SANDBOX_UID"
ENV_GID = "KITEBENCH_SANDBOX_GID"
#: ``0`` turns the namespace layer off (the container: docker's seccomp profile refuses it anyway).
ENV_NAMESPACES = "KITEBENCH_SANDBOX_NAMESPACES"
#: Size of the private /tmp and /dev/shm of a namespace sandbox (RAM: bounded; 4 GiB, like the
#: container's tmpfs).
ENV_TMPFS = "KITEBENCH_SANDBOX_TMPFS_BYTES"
DEFAULT_TMPFS_BYTES = 4 << 30
#: The uid a root-started sandbox takes inside its user namespace when it has no uid of its own.
NOBODY = 65534

_CAP_KILL, _CAP_SETGID, _CAP_SETUID = 5, 6, 7


def _effective_caps() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return int(line.split()[1], 16)
    except (OSError, ValueError):
        pass
    return 0


def can_change_uid() -> bool:
    """True when this process may start children under another uid and kill them."""
    caps = _effective_caps()
    return all(caps & (1 << c) for c in (_CAP_KILL, _CAP_SETGID, _CAP_SETUID))


_bwrap_ok: dict[tuple[str, int | None], bool] = {}
#: Probes started ahead (:func:`start_probe`) and not read yet.
_bwrap_running: dict[tuple[str, int | None], subprocess.Popen[bytes]] = {}
#: How long the probe may take to answer.
_PROBE_TIMEOUT_S = 10.0


def bwrap_path() -> str | None:
    return shutil.which("bwrap")


def _start_bwrap(bwrap: str, uid: int | None, gid: int | None) -> None:
    key = (bwrap, uid)
    if key in _bwrap_ok or key in _bwrap_running:
        return
    kw: dict[str, Any] = {}
    if uid is not None:
        kw = {"user": uid, "group": gid if gid is not None else uid, "extra_groups": []}
    try:
        # an empty environment: started first thing, the runner's still holds the key and payload
        _bwrap_running[key] = subprocess.Popen(
            [bwrap, "--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev",
             "--unshare-all", "--die-with-parent", "--", "/bin/true"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env={}, **kw,
        )
    except (OSError, subprocess.SubprocessError):
        _bwrap_ok[key] = False


def bwrap_works(bwrap: str, uid: int | None = None, gid: int | None = None) -> bool:
    """bubblewrap can make its namespaces here (as ``uid`` when given): kernels and container
    runtimes may refuse unprivileged user namespaces. Probed once per uid (the probe may have
    been started ahead, by :func:`start_probe`)."""
    key = (bwrap, uid)
    if key not in _bwrap_ok:
        _start_bwrap(bwrap, uid, gid)
        proc = _bwrap_running.pop(key, None)
        if proc is not None:
            try:
                _bwrap_ok[key] = procs.wait_exit(proc, _PROBE_TIMEOUT_S) == 0
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                _bwrap_ok[key] = False
    return _bwrap_ok[key]


def start_probe(env: Mapping[str, str]) -> None:
    """Start now the bubblewrap probe that :func:`from_env` with ``env`` asks for first, so it
    runs while the runner imports and decodes (``python -m runner`` calls this first thing)."""
    uid, gid, path, _ = _settings(env)
    if path is None:
        return
    if uid is not None and not reachable_by_others(_runtime_paths()):
        if os.geteuid() == 0:
            _start_bwrap(path, None, None)
        return
    _start_bwrap(path, uid, gid)


def stop_probe() -> None:
    """Kill the probes nothing has read (a job that ended before it chose its sandbox)."""
    while _bwrap_running:
        _, proc = _bwrap_running.popitem()
        try:
            proc.kill()
            proc.wait()
        except OSError:
            pass


@dataclass(frozen=True)
class Sandbox:
    """How this job starts submitted code; see the module docstring for the modes."""

    mode: Mode
    uid: int | None = None
    gid: int | None = None
    bwrap: str | None = None
    #: Paths the submission must not even see (bound over with an empty tmpfs in ``ns`` modes).
    hidden: tuple[str, ...] = field(default=())
    #: Root starts bubblewrap itself (no user namespace) and the uid is taken inside, after the
    #: mounts: the runtime other uids cannot reach (an interpreter under a 0700 /root) is bound
    #: into a fresh tmpfs first. Without it the submission could only run as the host's uid 0
    #: seen through a user namespace: still the owner of /etc/shadow and the Docker socket.
    drop_inside: bool = False
    #: With ``drop_inside``: the runtime paths to bind in (those other uids cannot reach).
    expose: tuple[str, ...] = field(default=())
    #: Bytes of the private /tmp and /dev/shm (each).
    tmpfs_bytes: int = DEFAULT_TMPFS_BYTES

    # -- facts -----------------------------------------------------------------------------

    @property
    def separate_uid(self) -> bool:
        return self.uid is not None

    @property
    def namespaces(self) -> bool:
        return self.bwrap is not None

    @property
    def hardened(self) -> bool:
        return self.mode != "none"

    def describe(self) -> dict[str, Any]:
        """What goes into ``kitebench.isolation.sandbox`` (and the report)."""
        meaning = {
            "uid+ns": "own uid and namespaces: cannot signal, limit, trace or write the runner",
            "uid": "own uid: cannot signal, limit, trace or write the runner",
            "ns": "own namespaces (same uid): cannot see the runner's processes or files",
            "none": "not hardened: the verdict is signed, but the submission shares the "
            "runner's uid and can disturb it",
        }[self.mode]
        return {"mode": self.mode, "uid": self.uid, "hardened": self.hardened, "meaning": meaning}

    # -- starting ----------------------------------------------------------------------------

    def popen_kwargs(self) -> dict[str, Any]:
        """Keywords for ``subprocess.Popen``: the uid change (done in the child before exec)."""
        if self.uid is None:
            return {}
        if self.drop_inside:  # bubblewrap starts as root; the uid change happens inside
            return {"umask": 0o077}
        return {"user": self.uid, "group": self.gid, "extra_groups": [], "umask": 0o077}

    def command(
        self,
        argv: Sequence[str],
        *,
        cwd: str | os.PathLike[str],
        writable: Sequence[str | os.PathLike[str]] = (),
        readable: Sequence[str | os.PathLike[str]] = (),
        share_net: bool = False,
    ) -> list[str]:
        """``argv`` wrapped for this sandbox: in ``ns`` modes a bubblewrap command line that
        sees the machine read-only, ``cwd`` and ``writable`` read-write, a private /tmp and
        /dev/shm, no network but loopback (unless ``share_net``), and dies with its parent.
        ``readable`` (and this interpreter and the runner package) stay visible even where they
        live under /tmp (a checkout there, say)."""
        if self.bwrap is None:
            return list(argv)
        size = str(self.tmpfs_bytes)
        cmd = [self.bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
               "--size", size, "--tmpfs", "/tmp", "--size", size, "--tmpfs", "/dev/shm"]
        for path in self.hidden:
            if os.path.isdir(path):
                cmd += ["--tmpfs", str(path)]
        # bubblewrap run by root makes the dirs it creates 0700: the uid taken inside needs them
        # searchable (parents of the work dir, of a checkout under /tmp)
        opened = self.drop_inside
        shadowed = ("/tmp/", "/dev/shm/", *(h.rstrip("/") + "/" for h in self.hidden))
        seen: set[str] = set()
        for path in (*_runtime_dirs(), *readable):
            real = os.path.realpath(path)
            if real not in seen and os.path.exists(real) and real.startswith(shadowed):
                seen.add(real)
                cmd += _searchable_parents(real, "/tmp") if opened else []
                cmd += ["--ro-bind", real, real]
        for path in (cwd, *writable):
            cmd += _searchable_parents(str(path), "/tmp") if opened else []
            cmd += ["--bind", str(path), str(path)]
        if self.drop_inside:
            return cmd + self._drop_inside_tail(argv, cwd, share_net)
        cmd += ["--unshare-user", "--unshare-pid", "--unshare-ipc", "--unshare-uts",
                "--unshare-cgroup-try", "--cap-drop", "ALL"]
        if self.uid is None and os.geteuid() == 0:
            # no uid of its own (the interpreter is not reachable by other uids): at least an
            # unprivileged uid inside its user namespace, with no capability anywhere
            cmd += ["--uid", str(NOBODY), "--gid", str(NOBODY)]
        if not share_net:
            cmd.append("--unshare-net")
        cmd += ["--die-with-parent", "--new-session", "--chdir", str(cwd), "--", *argv]
        return cmd

    def _drop_inside_tail(
        self, argv: Sequence[str], cwd: str | os.PathLike[str], share_net: bool
    ) -> list[str]:
        cmd: list[str] = []
        tops = sorted({t for t in (_locked_top(p) for p in self.expose) if t})
        for top in tops:  # a fresh, searchable tmpfs over the locked dir (/root)...
            cmd += ["--perms", "0755", "--tmpfs", top]
        for path in sorted(set(self.expose)):
            top = next((t for t in tops if path.startswith(t + "/")), None)
            if top:  # ...searchable dirs down to the runtime, and the runtime read-only
                cmd += _searchable_parents(path, top)
            cmd += ["--ro-bind", path, path]
        cmd += ["--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
        if not share_net:
            cmd.append("--unshare-net")
        gid = self.gid if self.gid is not None else self.uid
        shim = [sys.executable, "-I", "-S", "-c", _DROP, str(self.uid), str(gid)]
        return cmd + ["--die-with-parent", "--new-session", "--chdir", str(cwd), "--",
                      *shim, *argv]

    def give(self, path: str | os.PathLike[str]) -> None:
        """Hand a fresh work dir to the submission's uid (it must write there, the runner not)."""
        if self.uid is not None:
            # chmod first: once it is theirs, a runner without CAP_FOWNER may not chmod it.
            # 0711: Popen changes into the dir before it changes uid, so the runner (no
            # DAC_READ_SEARCH in the container) must be able to pass through, not list
            os.chmod(path, 0o711)
            os.chown(path, self.uid, self.gid if self.gid is not None else self.uid)

    def home_env(self, work: str | os.PathLike[str]) -> dict[str, str]:
        """HOME/TMPDIR in the work dir, no user site dir: nothing one run leaves (a ``.pth``
        file, a cache) is found by the next."""
        work = str(work)
        return {"HOME": work, "TMPDIR": work, "PYTHONNOUSERSITE": "1",
                "XDG_CACHE_HOME": os.path.join(work, ".cache")}

    # -- stopping ----------------------------------------------------------------------------

    def kill_all(
        self, *, protect: int | None = None, deadline_s: float = procs.KILL_DEADLINE_S
    ) -> tuple[int, list[int]]:
        """SIGKILL every process of the submission's uid until none is alive (zombie leaders
        whose other threads still run count as alive), reaping those that were our children
        except ``protect`` (a Popen child, which Popen reaps). (killed, survivors). Without a uid
        of its own there is nothing to find by uid: (0, [])."""
        uid = self.uid
        if uid is None or uid == os.getuid():
            return 0, []

        def sweep() -> list[int]:
            live = [pid for pid in procs.pids_of_uid(uid) if procs.alive(pid)]
            procs.reap_zombies(uid, protect)
            return live

        return procs.kill_until_gone(sweep, deadline_s)

    def remove_tree(self, path: str | os.PathLike[str]) -> None:
        """Remove a work dir the submission owned and may have locked (chmod 000, read-only
        files), touching nothing outside it."""
        procs.remove_tree(Path(path))


#: Runs inside a root-started sandbox, after the mounts: the job's uid, no groups, and
#: no_new_privs (no setuid binary can give anything back), then the command itself.
_DROP = (
    "import ctypes, os, sys\n"
    "u, g = int(sys.argv[1]), int(sys.argv[2])\n"
    "os.setgroups([]); os.setresgid(g, g, g); os.setresuid(u, u, u)\n"
    "assert ctypes.CDLL(None).prctl(38, 1, 0, 0, 0) == 0\n"  # PR_SET_NO_NEW_PRIVS
    "os.execvp(sys.argv[3], sys.argv[3:])\n"
)


def _searchable_parents(path: str, top: str) -> list[str]:
    """bubblewrap arguments that make the dirs strictly between ``top`` and ``path`` 0755."""
    if not path.startswith(top.rstrip("/") + "/"):
        return []
    chain = []
    parent = os.path.dirname(path)
    while parent != top and len(parent) > len(top):
        chain.append(parent)
        parent = os.path.dirname(parent)
    out: list[str] = []
    for d in reversed(chain):
        out += ["--perms", "0755", "--dir", d]
    return out


def _locked_top(path: str) -> str | None:
    """The top-most dir on the way to ``path`` that other uids cannot enter (/root, 0700)."""
    p = "/"
    for part in Path(os.path.realpath(path)).parts[1:]:
        p = os.path.join(p, part)
        try:
            st = os.stat(p)
        except OSError:
            return None
        if stat.S_ISDIR(st.st_mode) and not st.st_mode & stat.S_IXOTH:
            return p
    return None


def reachable_by_others(paths: Sequence[str]) -> bool:
    """Every path (and each of its parent dirs) can be searched and read by any user: another
    uid can run this interpreter and import this package (an interpreter under a 0700 /root,
    as pyenv installs it, cannot be run by another uid)."""
    for path in paths:
        p = os.path.realpath(path)
        while True:
            try:
                mode = os.stat(p).st_mode
            except OSError:
                return False
            need = stat.S_IXOTH | stat.S_IROTH if stat.S_ISDIR(mode) else stat.S_IROTH
            if mode & need != need:
                return False
            parent = os.path.dirname(p)
            if parent == p:
                break
            p = parent
    return True


def _runtime_dirs() -> list[str]:
    """Dirs the submission's interpreter needs: its prefix and the dir that holds ``runner``."""
    import runner

    return [sys.prefix, sys.base_prefix, os.path.dirname(os.path.realpath(sys.executable)),
            str(Path(runner.__file__).resolve().parent.parent)]


def _runtime_paths() -> list[str]:
    import sysconfig

    import contract
    import runner

    # the harness that a submission's process imports (runner.harness) rests on the contract
    paths = [sys.executable, sys.prefix, sys.base_prefix,
             *(str(Path(m.__file__).resolve().parent) for m in (contract, runner))]
    paths += [v for k, v in sysconfig.get_paths().items() if k in ("purelib", "platlib")]
    return [p for p in paths if p]


def _settings(env: Mapping[str, str]) -> tuple[int | None, int | None, str | None, int]:
    """(uid, gid, bubblewrap, tmpfs bytes) as configured by ``env`` and allowed here."""
    uid: int | None = None
    gid: int | None = None
    raw = (env.get(ENV_UID) or "").strip()
    if raw and can_change_uid():
        try:
            uid = int(raw)
            gid = int((env.get(ENV_GID) or raw).strip())
        except ValueError:
            uid = gid = None
        if uid == 0 or uid == os.getuid():
            uid = gid = None  # never "separate" the submission into the runner's own uid
    namespaces = (env.get(ENV_NAMESPACES) or "1").strip() != "0"
    path = bwrap_path() if namespaces else None
    try:
        tmpfs = int((env.get(ENV_TMPFS) or "").strip() or DEFAULT_TMPFS_BYTES)
    except ValueError:
        tmpfs = DEFAULT_TMPFS_BYTES
    return uid, gid, path, max(tmpfs, 1 << 20)


def from_env(env: Mapping[str, str], *, hidden: Sequence[str] = ()) -> Sandbox:
    """The strongest sandbox this process can make, as configured by ``env``."""
    uid, gid, path, tmpfs = _settings(env)
    if uid is not None and not reachable_by_others(_runtime_paths()):
        # the uid cannot run this interpreter where it lives: root starts bubblewrap, binds the
        # runtime in and the uid is taken inside; without bubblewrap there is no uid of its own
        if path and os.geteuid() == 0 and bwrap_works(path):
            exposed = tuple(sorted({os.path.realpath(p) for p in _runtime_paths()
                                    if not reachable_by_others([p])}))
            return Sandbox(mode="uid+ns", uid=uid, gid=gid, bwrap=path, hidden=tuple(hidden),
                           drop_inside=True, expose=exposed, tmpfs_bytes=tmpfs)
        uid = gid = None
    bwrap = None
    if path and bwrap_works(path, uid, gid):
        bwrap = path
    if uid is not None:
        mode: Mode = "uid+ns" if bwrap else "uid"
    else:
        mode = "ns" if bwrap else "none"
    return Sandbox(mode=mode, uid=uid, gid=gid, bwrap=bwrap, hidden=tuple(hidden),
                   tmpfs_bytes=tmpfs)
