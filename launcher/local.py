"""The local backend: run a payload on this machine, the way a vendor host runs it.

Isolation (``--isolation``, ``SubmitOptions.extra["isolation"]``):

    auto     Docker when ``launcher.local_docker`` is importable and a Docker engine answers,
             else a subprocess
    docker   the same container isolation as a vendor host (an error when unavailable)
    process  ``python -m runner`` in a subprocess with the container's env contract

In process isolation the runner gets a per-job key and the payload on its stdin (nothing on disk
or in an environment another process of this user could read), an allow-listed environment and a
fresh ``KITEBENCH_OUTPUT_DIR``; the result is read back from its result.json and accepted only if
the runner signed it with that key (contract.resultio). The submission itself runs in the runner's
sandbox (runner.sandbox): as root under a uid of its own where the interpreter is reachable by
other uids, in bubblewrap namespaces where they can be made, else ``process (not hardened)``.
The mode used is reported in ``result.kitebench.isolation``.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from contract import codec
from contract.budget import phases_s
from contract.result import FullResult, RunnerExit
from contract.resultio import RESULT_NAME, ResultFileError, new_key, read_result
from launcher.base import StatusCallback, StatusEvent, SubmitOptions
from launcher.errors import UsageError
from runner import procs, sandbox
from runner.kernels.process import hide_from_same_user

if TYPE_CHECKING:
    from contract.payload import AnyPayload

ISOLATION_MODES = ("auto", "docker", "process")
#: Time the runner gets after SIGTERM to write its partial result before it is killed.
TERM_GRACE_S = 15.0
#: Slack on top of the payload's own timeouts (start-up, system probe, cleanup).
BUDGET_SLACK_S = 60.0
_STDERR_KEEP = 64 * 1024
#: Per-job submission uids (process isolation as root) come from this range: no account has them,
#: so "every process of this uid" is exactly the job's.
JOB_UID_RANGE = (1_500_000_000, 2_000_000_000)
#: The runner's environment is this allow-list (plus the ``KITEBENCH_RUNNER_*`` settings and the
#: prefixes below), never the user's whole environment (tokens, cloud credentials...).
RUNNER_ENV_ALLOW = frozenset({
    "PATH", "LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "TZ", "HOME", "USER", "LOGNAME",
    "VIRTUAL_ENV", "PYTHONPATH", "LD_LIBRARY_PATH", "PYTHONHASHSEED", "OMP_NUM_THREADS",
    "CUDA_HOME", "CUDA_PATH", "CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES",
    "KITEBENCH_VLLM_PYTHON", "KITEBENCH_MODELS_DIR", "KITEBENCH_REFERENCE_DIR",
    "KITEBENCH_START_CACHE_DIR",
    "KITEBENCH_SANDBOX_TMPFS_BYTES",
})
RUNNER_ENV_PREFIXES = (
    "KITEBENCH_RUNNER_", "LC_", "OPENBLAS_", "MKL_", "TORCH_", "TRITON_", "HF_", "VLLM_",
)


def _docker_backend() -> Any | None:
    """The docker isolation backend (a function, so tests can swap it; None: no backend)."""
    from launcher import local_docker

    return local_docker


def _budget(payload: AnyPayload, timeout_s: float | None) -> float:
    if timeout_s is not None:
        return float(timeout_s)
    return phases_s(payload) + BUDGET_SLACK_S


class LocalLauncher:
    name = "local"

    def __init__(self, isolation: str = "auto", python: str | None = None) -> None:
        if isolation not in ISOLATION_MODES:
            raise UsageError(
                f"unknown isolation {isolation!r} (expected one of: {', '.join(ISOLATION_MODES)})"
            )
        self.isolation = isolation
        self.python = python or sys.executable

    @classmethod
    def from_options(cls, opts: SubmitOptions) -> LocalLauncher:
        return cls(isolation=str(opts.extra.get("isolation") or "auto"))

    def resolve_isolation(self, payload: AnyPayload | None = None) -> tuple[str, str]:
        """The mode that will be used (docker or process) and why."""
        if self.isolation == "process":
            return "process", "asked for"
        docker = _docker_backend()
        why = ""
        if docker is None:
            why = "launcher.local_docker is not installed"
        elif not docker.docker_available():
            why = "no Docker engine answers"
        else:
            image = docker.image_for(payload)
            if image is None:
                why = "no image with vLLM for model tasks (set KITEBENCH_MODEL_IMAGE)"
            elif not docker.image_present(image):
                why = f"image {image} is not built (images/README.md shows how)"
            else:
                return "docker", f"image {image}"
        if self.isolation == "docker":
            raise UsageError(f"--isolation docker: Docker isolation is unavailable ({why})")
        return "process", why

    def run(
        self,
        payload: AnyPayload,
        *,
        on_status: StatusCallback | None = None,
        timeout_s: float | None = None,
    ) -> FullResult:
        mode, why = self.resolve_isolation(payload)
        started = time.monotonic()
        emit = _emitter(on_status, started)
        emit("starting", f"local run, isolation: {mode} ({why})")
        tmp = Path(tempfile.mkdtemp(prefix="kitebench-local-"))
        try:
            out_dir = tmp / "out"
            out_dir.mkdir(mode=0o700)
            if mode == "docker":
                docker = _docker_backend()
                assert docker is not None
                result = docker.run_payload_in_docker(
                    payload, output_dir=out_dir, on_status=on_status, timeout_s=timeout_s
                )
                result.kitebench.isolation.setdefault("mode", "docker")
            else:
                result = self._run_process(payload, tmp, out_dir, emit, timeout_s)
                result.kitebench.isolation.setdefault("mode", "process")
        finally:
            # never raises: whatever a submission left (or keeps writing) here, the verdict stands
            procs.remove_tree(tmp)
        emit("passed" if result.passed else "failed", _summary(result))
        return result

    # -- process isolation -----------------------------------------------------------------

    def _run_process(
        self,
        payload: AnyPayload,
        tmp: Path,
        out_dir: Path,
        emit: Any,
        timeout_s: float | None,
    ) -> FullResult:
        # Processes of this user (a submission left by another tool, say) can neither ptrace us
        # nor read our memory, where the key is.
        hide_from_same_user()
        os.chmod(tmp, 0o711)  # a submission uid may pass through to its work dir, no more
        work = tmp / "work"
        work.mkdir()
        os.chmod(work, 0o711)
        key = new_key()
        job_uid = _job_uid() if os.geteuid() == 0 else None
        env = runner_env(os.environ)
        env.update(KITEBENCH_OUTPUT_DIR=str(out_dir), KITEBENCH_WORK_DIR=str(work),
                   KITEBENCH_INPUT="stdin")
        if job_uid is not None:
            env[sandbox.ENV_UID] = env[sandbox.ENV_GID] = str(job_uid)
        stdin = (key + "\n" + codec.encode(payload, limit=None)).encode("ascii")
        budget = _budget(payload, timeout_s)
        with open(tmp / "runner.stderr", "w+b") as err:
            os.chmod(err.name, 0o600)
            proc = subprocess.Popen(
                [self.python, "-s", "-m", "runner"],  # -s: no user site dir for the runner
                cwd=tmp,
                env=env,
                stdin=subprocess.PIPE,
                stdout=err,
                stderr=err,
                start_new_session=True,  # Ctrl-C reaches us; we stop the runner cleanly
            )
            feeder = threading.Thread(target=_feed, args=(proc, stdin), daemon=True)
            feeder.start()
            emit("running", f"runner pid {proc.pid}, isolation: process")
            watcher = _CheckpointWatcher(out_dir / RESULT_NAME, emit, key=key)
            watcher.start()
            stopped = ""
            try:
                try:
                    proc.wait(timeout=budget)
                except subprocess.TimeoutExpired:
                    stopped = f"the local run took longer than its budget of {budget:g} s"
                    _stop(proc)
            except BaseException:  # Ctrl-C: let the runner write its partial result, then go
                _stop(proc)
                raise
            finally:
                watcher.stop()
                # whatever happened to the runner (killed, stopped, crashed), nothing of the
                # submission outlives this call
                if job_uid is not None:
                    sandbox.Sandbox(mode="uid", uid=job_uid, gid=job_uid).kill_all()
            err.seek(0, os.SEEK_END)
            size = err.tell()
            err.seek(max(0, size - _STDERR_KEEP))
            stderr = err.read().decode("utf-8", "replace")
        return _collect(out_dir, proc.returncode, stderr, stopped, key)


def _feed(proc: subprocess.Popen[bytes], data: bytes) -> None:
    """Write the key + payload to the runner's stdin (a thread: a large payload fills the pipe)."""
    assert proc.stdin is not None
    with contextlib.suppress(OSError):
        proc.stdin.write(data)
    with contextlib.suppress(OSError):
        proc.stdin.close()


def _job_uid() -> int:
    """A uid no account and no running process has: the submission's, for this job only."""
    while True:
        uid = random.randint(*JOB_UID_RANGE)
        if not procs.pids_of_uid(uid):
            return uid


def runner_env(base: Mapping[str, str]) -> dict[str, str]:
    """The runner's environment: an allow-list of ours (never tokens or the user's other
    variables), with ``runner`` importable (this checkout or the installed package)."""
    env = {
        k: v for k, v in base.items()
        if (k in RUNNER_ENV_ALLOW or k.startswith(RUNNER_ENV_PREFIXES))
        and not _is_secret(k)
    }
    import runner

    root = str(Path(runner.__file__).resolve().parent.parent)
    parts = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join([root, *[p for p in parts if p != root]])
    return env


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM (the runner writes what finished), then SIGKILL the group after a grace period."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=TERM_GRACE_S)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _is_secret(name: str) -> bool:
    from runner.kernels.environment import is_secret

    return is_secret(name)


def _collect(
    out_dir: Path, returncode: int | None, stderr: str, stopped: str, key: str
) -> FullResult:
    try:
        result = read_result(out_dir / RESULT_NAME, key=key)
    except ResultFileError as e:
        tail = " | ".join(stderr.strip().splitlines()[-5:])
        msg = f"the runner (exit code {returncode}) left no usable result: {e}"
        if stopped:
            msg = f"{stopped}; {msg}"
        if tail:
            msg += f"; runner stderr: {tail[-1500:]}"
        return FullResult.failure(msg, "internal", RunnerExit.INTERNAL)
    if stopped:
        result.success = False
        result.error = f"{stopped}; {result.error}" if result.error else stopped
        result.kitebench.passed = False
        result.kitebench.stage = "interrupted"
        result.kitebench.exit_code = int(RunnerExit.INTERNAL)
    return result


def _summary(result: FullResult) -> str:
    if result.passed:
        return ", ".join(result.runs)
    return result.error or "the submission did not pass"


def _emitter(on_status: StatusCallback | None, started: float) -> Any:
    def emit(state: str, message: str = "") -> None:
        if on_status is not None:
            on_status(
                StatusEvent(state=state, message=message, elapsed_s=time.monotonic() - started)
            )

    return emit


class _CheckpointWatcher(threading.Thread):
    """Reports each run as the runner checkpoints it (result.json changes after every run)."""

    def __init__(self, path: Path, emit: Any, interval: float = 0.5, key: str | None = None) -> None:
        super().__init__(name="kitebench-watch", daemon=True)
        self.path = path
        self.key = key
        self.emit = emit
        self.interval = interval
        self._stop_event = threading.Event()
        self._seen: set[str] = set()

    def run(self) -> None:
        last = None
        while not self._stop_event.wait(self.interval):
            try:
                stamp = self.path.stat().st_mtime_ns
            except OSError:
                continue
            if stamp == last:
                continue
            last = stamp
            try:
                partial = read_result(self.path, key=self.key)
            except ResultFileError:
                continue
            for name, ev in partial.runs.items():
                if name not in self._seen:
                    self._seen.add(name)
                    ok = ev.run is not None and ev.run.passed
                    self.emit("running", f"{name} {'passed' if ok else 'failed'}")

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=2)
