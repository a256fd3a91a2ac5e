"""The local backend: run a payload on this machine, the way a vendor host runs it.

Isolation (``--isolation``, ``SubmitOptions.extra["isolation"]``):

    auto     Docker when ``launcher.local_docker`` is importable and a Docker engine answers,
             else a subprocess
    docker   the same container isolation as a vendor host (an error when unavailable)
    process  ``python -m runner`` in a subprocess with the container's env contract

Either way the runner gets ``SUBMISSION_PAYLOAD`` (or ``KITEBENCH_PAYLOAD_FILE`` when the
encoded payload is too big for one env string) and a fresh ``KITEBENCH_OUTPUT_DIR``; the result is
read back from its result.json. The mode used is reported in ``result.kitebench.isolation``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from launcher.base import StatusCallback, StatusEvent, SubmitOptions
from launcher.errors import UsageError
from runner import codec
from runner.contract import COMPILE_TIMEOUT_S, FullResult, RunnerExit
from runner.resultio import RESULT_NAME, ResultFileError, not_written_by_runner, read_result

ISOLATION_MODES = ("auto", "docker", "process")
#: Time the runner gets after SIGTERM to write its partial result before it is killed.
TERM_GRACE_S = 15.0
#: Slack on top of the payload's own timeouts (start-up, system probe, cleanup).
BUDGET_SLACK_S = 60.0
_STDERR_KEEP = 64 * 1024


def _docker_backend() -> Any | None:
    """``launcher.local_docker`` when it exists (written separately), else None."""
    try:
        from launcher import local_docker
    except ImportError:
        return None
    return local_docker


def _budget(payload: Any, timeout_s: float | None) -> float:
    if timeout_s is not None:
        return float(timeout_s)
    total = float(getattr(payload, "total_timeout", 0) or 0)
    if getattr(payload, "lang", "") == "cu":
        total += COMPILE_TIMEOUT_S
    if getattr(payload, "lang", "") == "model":
        cfg = payload.model_cfg
        total += cfg.install_timeout + cfg.server_startup_timeout + cfg.benchmark_timeout
    return total + BUDGET_SLACK_S


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

    def resolve_isolation(self, payload: Any = None) -> tuple[str, str]:
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
        payload: Any,
        *,
        on_status: StatusCallback | None = None,
        timeout_s: float | None = None,
    ) -> FullResult:
        mode, why = self.resolve_isolation(payload)
        started = time.monotonic()
        emit = _emitter(on_status, started)
        emit("starting", f"local run, isolation: {mode} ({why})")
        with tempfile.TemporaryDirectory(prefix="kitebench-local-") as tmp:
            out_dir = Path(tmp) / "out"
            out_dir.mkdir()
            if mode == "docker":
                docker = _docker_backend()
                assert docker is not None
                result = docker.run_payload_in_docker(
                    payload, output_dir=out_dir, on_status=on_status, timeout_s=timeout_s
                )
                result.kitebench.isolation.setdefault("mode", "docker")
            else:
                result = self._run_process(payload, Path(tmp), out_dir, emit, timeout_s)
                result.kitebench.isolation.setdefault("mode", "process")
        emit("passed" if result.passed else "failed", _summary(result))
        return result

    # -- process isolation -----------------------------------------------------------------

    def _run_process(
        self,
        payload: Any,
        tmp: Path,
        out_dir: Path,
        emit: Any,
        timeout_s: float | None,
    ) -> FullResult:
        env = runner_env(os.environ)
        encoded = codec.encode(payload, limit=None)
        if len(encoded) > codec.INLINE_LIMIT:  # too big for one env string (Linux: 128 KiB)
            path = tmp / "payload.b64"
            path.write_text(encoded, encoding="ascii")
            env["KITEBENCH_PAYLOAD_FILE"] = str(path)
        else:
            env["SUBMISSION_PAYLOAD"] = encoded
        env["KITEBENCH_OUTPUT_DIR"] = str(out_dir)
        budget = _budget(payload, timeout_s)
        with open(tmp / "runner.stderr", "w+b") as err:
            proc = subprocess.Popen(
                [self.python, "-m", "runner"],
                cwd=tmp,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=err,
                start_new_session=True,  # Ctrl-C reaches us; we stop the runner cleanly
            )
            emit("running", f"runner pid {proc.pid}, isolation: process")
            watcher = _CheckpointWatcher(out_dir / RESULT_NAME, emit)
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
            err.seek(0, os.SEEK_END)
            size = err.tell()
            err.seek(max(0, size - _STDERR_KEEP))
            stderr = err.read().decode("utf-8", "replace")
        return _collect(out_dir, proc.returncode, stderr, stopped)


def runner_env(base: Any) -> dict[str, str]:
    """The runner's environment: ours without payload/kitebench variables, with ``runner``
    importable (this checkout or the installed package)."""
    env = {k: v for k, v in base.items() if not k.startswith(("SUBMISSION_", "KITEBENCH_"))}
    env.update(
        {k: base[k] for k in ("KITEBENCH_VLLM_PYTHON", "KITEBENCH_MODELS_DIR") if k in base}
    )  # model path: this machine's vLLM + models
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


def _collect(out_dir: Path, returncode: int | None, stderr: str, stopped: str) -> FullResult:
    try:
        result = read_result(out_dir / RESULT_NAME)
    except ResultFileError as e:
        tail = " | ".join(stderr.strip().splitlines()[-5:])
        msg = f"the runner (exit code {returncode}) left no usable result: {e}"
        if stopped:
            msg = f"{stopped}; {msg}"
        if tail:
            msg += f"; runner stderr: {tail[-1500:]}"
        return FullResult.failure(msg, "internal", RunnerExit.INTERNAL)
    # no exit code at all cannot vouch for the file either
    code = -1 if returncode is None else returncode
    forged = None if stopped else not_written_by_runner(result, code)
    if forged is not None:
        return FullResult.failure(
            f"{forged}, the runner exited with {returncode}", "internal", RunnerExit.INTERNAL
        )
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

    def __init__(self, path: Path, emit: Any, interval: float = 0.5) -> None:
        super().__init__(name="kitebench-watch", daemon=True)
        self.path = path
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
                partial = read_result(self.path)
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
