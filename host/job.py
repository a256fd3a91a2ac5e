"""One job on the host: payload → container → result.json, whatever happens in between.

The sequence (docker SDK, STYLE section 5): validate the payload here (a bad one never starts a
container) → the image must already be on the host (never pulled implicitly) → remove stale
containers of this agent's slot → create + start detached → wait with the job timeout (kill on
timeout; on cancel stop with a grace period) → inspect (OOM, exit code) → read result.json from
the output dir (malformed or oversized → a failed result saying so) → record isolation facts →
remove the container in ``finally``.

Every path returns a :class:`JobOutcome`: a result to publish and the process exit code.
"""

from __future__ import annotations

import contextlib
import enum
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from contract import codec
from contract.result import FullResult, KitebenchInfo, RunnerExit
from contract.resultio import RESULT_NAME, ResultFileError, new_key, read_result
from host import engine
from host.cgroup import PidsWatch
from host.container import LABEL_SLOT, RUNNER_CAPS, container_kwargs
from host.settings import HostSettings

if TYPE_CHECKING:
    from contract.payload import AnyPayload

#: Seconds between checks of the cancel flag while waiting for the container.
POLL_S = 1.0
#: docker API timeout for single calls (create, inspect, remove...).
API_TIMEOUT_S = 60
#: Lines of container log kept for an error message when result.json is unusable.
LOG_TAIL = 20


class HostExit(enum.IntEnum):
    """Exit codes of ``kitebench job`` (the pipeline retries INFRA automatically)."""

    RAN = 0  #: the job ran; result.json holds the verdict (pass OR fail)
    INFRA = 75  #: docker engine, container start or publishing failed: retry (EX_TEMPFAIL)
    CONFIG = 78  #: this host is misconfigured (image missing, bad KITEBENCH_*): fix it (EX_CONFIG)
    INTERRUPTED = 143  #: SIGTERM (cancel / agent stop); a partial result was published


@dataclass
class JobOutcome:
    result: FullResult
    exit_code: HostExit
    #: What happened, for the one-line summary of the CLI.
    facts: dict[str, Any] = field(default_factory=dict)


StatusFn = Callable[[str, str], None]


class _Failure(Exception):
    def __init__(self, message: str, exit_code: HostExit) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


def run_job(
    payload_text: str | None,
    settings: HostSettings,
    *,
    host_env: Mapping[str, str],
    cancel: threading.Event | None = None,
    on_status: StatusFn | None = None,
    client: Any = None,
    timeout_s: float | None = None,
) -> JobOutcome:
    """Run one payload in a container; never raises for anything a job can run into."""
    status = on_status or (lambda _state, _msg: None)
    cancel = cancel or threading.Event()
    iso: dict[str, Any] = _settings_facts(settings)
    iso["buildkite_job_id"] = host_env.get("BUILDKITE_JOB_ID") or None

    status("validate", "checking the payload on the host")
    try:
        max_bytes = codec.max_bytes_from(host_env)
    except ValueError as e:  # a host misconfiguration: a failed result, not a traceback
        result = FullResult.failure(
            f"host misconfigured: {e}", "container", RunnerExit.INTERNAL, isolation=iso,
        )
        return JobOutcome(result, HostExit.CONFIG, {"container": "not started: bad settings"})
    try:
        payload = codec.decode(payload_text, max_bytes=max_bytes)
    except codec.PayloadError as e:
        iso["container_started"] = False
        result = FullResult.failure(e.message, e.stage, RunnerExit.BAD_PAYLOAD, isolation=iso)
        return JobOutcome(result, HostExit.RAN, {"container": "not started: bad payload"})

    image = settings.image_for(payload.lang)
    iso["image"] = image
    budget = timeout_s if timeout_s is not None else settings.timeout_for(payload)
    iso["timeout_s"] = budget
    try:
        if client is None:
            client = docker_client()
        return _run(client, payload, image, settings, host_env, budget, cancel, status, iso)
    except _Failure as e:
        iso["container_started"] = iso.get("container_started", False)
        result = FullResult.failure(e.message, "container", RunnerExit.INTERNAL, isolation=iso)
        return JobOutcome(result, e.exit_code, {"container": e.message})
    except Exception as e:  # e.g. the engine went away: docker-py raises requests' errors then
        iso["container_started"] = iso.get("container_started", False)
        msg = f"docker engine error during the job: {type(e).__name__}: {engine.short(e)}"
        result = FullResult.failure(msg, "container", RunnerExit.INTERNAL, isolation=iso)
        return JobOutcome(result, HostExit.INFRA, {"container": msg})


def docker_client(timeout: int = API_TIMEOUT_S) -> Any:
    """A docker client from the environment (DOCKER_HOST...), or :class:`_Failure`."""
    try:
        return engine.docker_client(timeout)
    except engine.EngineUnavailable as e:
        raise _Failure(e.message, HostExit.CONFIG if e.sdk_missing else HostExit.INFRA) from None


def _run(
    client: Any,
    payload: AnyPayload,
    image: str,
    settings: HostSettings,
    host_env: Mapping[str, str],
    budget: float,
    cancel: threading.Event,
    status: StatusFn,
    iso: dict[str, Any],
) -> JobOutcome:
    from docker.errors import APIError, DockerException, ImageNotFound

    try:
        img = client.images.get(image)
    except ImageNotFound:
        raise _Failure(
            f"image {image} is not on this host (kitebench never pulls implicitly): "
            f"docker pull {image}, or build it as images/README.md shows",
            HostExit.CONFIG,
        ) from None
    except DockerException as e:
        raise _Failure(f"docker engine error looking up {image}: {engine.short(e)}", HostExit.INFRA) from None
    iso["image_id"] = img.id
    digests = img.attrs.get("RepoDigests") or []
    iso["image_digest"] = digests[0] if digests else img.id

    iso["stale_removed"] = remove_stale(client, settings)

    work = Path(tempfile.mkdtemp(prefix="kitebench-job-"))  # 0700: other host users stay out
    out = work / "out"
    out.mkdir()
    # The runner (container root without DAC_OVERRIDE) writes here; the submission cannot reach
    # it: it is mounted inside a 0700 tmpfs of the runner's.
    os.chmod(out, 0o777)
    key = new_key()
    container = None
    try:
        kwargs = container_kwargs(
            settings,
            image=img.id,  # the exact image looked up above, even if the tag moves meanwhile
            output_dir=str(out),
            host_env=host_env,
            job_id=host_env.get("BUILDKITE_JOB_ID"),
            build=host_env.get("BUILDKITE_BUILD_NUMBER"),
            key=key,
        )
        status("container", f"starting {image}")
        try:
            container = client.containers.create(**kwargs)
            container.start()
        except APIError as e:
            raise _Failure(f"the container could not start: {engine.short(e)}", HostExit.INFRA) from None
        iso["container_started"] = True
        container.reload()
        pid = int(container.attrs.get("State", {}).get("Pid") or 0)
        status("running", f"container {container.short_id} (timeout {budget:g}s)")
        with PidsWatch(pid) as pids:
            waited = _wait(container, budget, cancel, settings.stop_grace_s)
        container.reload()
        state = container.attrs.get("State", {})
        iso["container_exit_code"] = state.get("ExitCode")
        iso["oom_killed"] = bool(state.get("OOMKilled"))
        iso["timed_out"] = waited == "timeout"
        logs = _logs(container)
        result = _collect(out, state, waited, budget, settings, pids.max_events, logs, key)
        iso["pids_limit_hits"] = _pids_hits(pids.max_events, result)
    except DockerException as e:
        raise _Failure(f"docker engine error during the job: {engine.short(e)}", HostExit.INFRA) from None
    finally:
        if container is not None:
            t0 = time.monotonic()
            with contextlib.suppress(Exception):  # also requests' errors: the work dir goes too
                container.remove(force=True)
            iso["remove_s"] = round(time.monotonic() - t0, 3)
        shutil.rmtree(work, ignore_errors=True)

    result.kitebench.isolation.update(iso)
    code = HostExit.INTERRUPTED if waited == "cancel" else HostExit.RAN
    return JobOutcome(result, code, {"container": waited})


def remove_stale(client: Any, settings: HostSettings) -> int:
    """Remove containers a previous job of this slot (GPU) left behind (agent crash, SIGKILL)."""
    if not settings.slot_label:
        return 0
    from docker.errors import DockerException

    stale = client.containers.list(all=True, filters={"label": f"{LABEL_SLOT}={settings.slot_label}"})
    for c in stale:
        with contextlib.suppress(DockerException):
            c.remove(force=True)
    return len(stale)


def _wait(container: Any, budget: float, cancel: threading.Event, grace: float) -> str:
    """Wait for the container; 'exited', 'timeout' (killed) or 'cancel' (stopped, then killed)."""
    import requests

    deadline = time.monotonic() + budget
    while True:
        if cancel.is_set():
            container.stop(timeout=max(1, int(round(grace))))  # SIGTERM, SIGKILL after grace
            _wait_quietly(container, 30)
            return "cancel"
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            container.kill()
            _wait_quietly(container, 30)
            return "timeout"
        try:
            container.wait(timeout=max(0.1, min(POLL_S, remaining)))
            return "exited"
        except requests.exceptions.ReadTimeout:
            continue  # docker-py raises this (or the next) when wait() times out
        except requests.exceptions.ConnectionError:
            container.reload()  # raises if the engine is gone, instead of spinning to the deadline
            continue


def _wait_quietly(container: Any, timeout: float) -> None:
    import requests

    with contextlib.suppress(requests.exceptions.RequestException):
        container.wait(timeout=timeout)


def _logs(container: Any) -> str:
    from docker.errors import DockerException

    try:
        raw = container.logs(stdout=True, stderr=True, tail=LOG_TAIL)
    except DockerException:
        return ""
    return raw.decode("utf-8", "replace").strip()


def _pids_hits(watched: int | None, result: FullResult) -> int | None:
    """Forks the pids limit refused: the larger of the host's watch of the container's cgroup
    and the runner's own reading of it (the watch can miss events of a short container)."""
    seen = result.kitebench.details.get("pids_limit_hits")
    return max(seen, watched or 0) if isinstance(seen, int) else watched


def _collect(
    out: Path,
    state: Mapping[str, Any],
    waited: str,
    budget: float,
    settings: HostSettings,
    pids_hits: int | None,
    logs: str,
    key: str,
) -> FullResult:
    """The result to publish: result.json if valid and signed with this job's key, else a
    failure naming what went wrong; then what the host saw (timeout, cancel, OOM, process limit)
    is folded in."""
    exit_code = state.get("ExitCode")
    oom = bool(state.get("OOMKilled"))
    try:
        result = read_result(out / RESULT_NAME, key=key)
        problem = None
    except ResultFileError as e:
        result = None
        problem = str(e)

    if result is None:
        why = f"{problem}; the runner exited with code {exit_code}"
        if logs and waited == "exited" and not oom:
            why += f"; last log lines:\n{logs[-2000:]}"
        result = FullResult.failure(why, "container", RunnerExit.INTERNAL)
        fallback = True
    else:
        fallback = False

    info: KitebenchInfo = result.kitebench
    prefix = ""
    if waited == "timeout":
        prefix = f"job timed out after {budget:g}s: the container was killed"
        result.success = False
        info.stage, info.exit_code, info.passed = "container", int(RunnerExit.FAILED), False
    elif waited == "cancel":
        prefix = "interrupted by SIGTERM (cancelled): the container was stopped"
        result.success = False
        info.stage, info.exit_code = "interrupted", int(RunnerExit.INTERRUPTED)
        info.interrupted, info.passed = True, False
    if oom:
        limit = codec.format_size(settings.memory_bytes) if settings.memory_bytes else "none set"
        prefix = (prefix + "; " if prefix else "") + f"out of memory (limit {limit})"
        info.passed = False
        if fallback:
            info.exit_code = int(RunnerExit.FAILED)
    pids_hits = _pids_hits(pids_hits, result)
    if pids_hits:
        note = f"process limit reached (pids limit {settings.pids_limit}): {pids_hits} forks refused"
        info.warnings.append(note)
        if not info.passed:
            prefix = (prefix + "; " if prefix else "") + note
    if prefix:
        if fallback and waited != "exited":
            result.error = prefix  # the missing file is a consequence, not news
        else:
            result.error = prefix + (f": {result.error}" if result.error else "")
    return result


def _settings_facts(s: HostSettings) -> dict[str, Any]:
    return {
        "backend": "docker",
        "gpu_uuid": s.gpu_uuid,
        "gpu_index": s.gpu_index,
        "cpuset": s.cpuset,
        "memory": codec.format_size(s.memory_bytes) if s.memory_bytes else None,
        "memory_bytes": s.memory_bytes,
        "pids_limit": s.pids_limit,
        "network": "none (loopback only)",
        "user": s.user,
        "runner": "uid 0, capabilities " + ",".join(RUNNER_CAPS) + " only",
        "read_only_root": True,
        "cgroup_parent": s.cgroup_parent,
        "slot": s.slot_label,
    }


