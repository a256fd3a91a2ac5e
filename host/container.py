"""The container a job runs in: ONE function builds every docker ``create``/``run`` keyword.

Why each setting (see docs/vendor-host.md):
- one GPU by UUID through a device request (``device_ids``, never ``count``: ``--gpus 0`` is a
  count of zero, and a count picks *any* free GPUs); ``NVIDIA_VISIBLE_DEVICES`` is set to the same
  device because CUDA base images default it to ``all`` and hosts whose default runtime is
  ``nvidia`` honour the variable even without a device request; ``void`` when there is no GPU;
- ``cpuset_cpus``, ``mem_limit == memswap_limit`` (no swap), ``pids_limit``, optional
  ``cgroup_parent``: docker containers live in dockerd's cgroups, so limits on the agent's own
  systemd unit do not reach them;
- ``network_mode="none"``: the container has only a loopback interface. That is exactly what the
  model path needs (vLLM server and benchmark client talk over 127.0.0.1 inside the container)
  and kernels need no network at all, so both use it;
- read-only root, tmpfs ``/tmp`` and work dir (exec: compilers and triton load what they build),
  ``no-new-privileges``, no init process (PID 1 is the non-dumpable runner);
- privilege separation (runner.sandbox): the container starts as root with ``cap_drop=["ALL"]``
  and only CHOWN, SETUID, SETGID and KILL added back, so that the runner can start the
  submission under its own unprivileged uid (``KITEBENCH_CONTAINER_USER``), hand it its work dirs
  and kill every process of that uid; the submission (after the uid change and exec) has no
  capability at all. Root without DAC_OVERRIDE cannot read or write what the submission owns,
  so it only ever writes its own files;
- the output dir is bind-mounted inside a 0700 root tmpfs (:data:`VERDICT_DIR`): the submission
  cannot even reach it; result.json is signed with a per-job key (contract.resultio) that only
  PID 1's environment holds;
- an environment ALLOW-LIST: the payload and runner settings, nothing from the agent (never
  ``BUILDKITE_AGENT_ACCESS_TOKEN``); labels say which Buildkite job and GPU a container serves.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from contract.resultio import KEY_ENV
from host.settings import HostSettings, parse_size
from runner import sandbox

#: A root-only (0700) tmpfs: the output dir is mounted inside it, out of the submission's reach.
VERDICT_DIR = "/kitebench/verdict"
#: Where the output dir (result.json) is mounted in the container.
OUTPUT_MOUNT = f"{VERDICT_DIR}/out"
#: The only capabilities the runner keeps (see the module docstring); the submission has none.
RUNNER_CAPS = ("CHOWN", "SETUID", "SETGID", "KILL")
#: Where KITEBENCH_MODELS_DIR is mounted (read-only): the model path's default models dir.
MODELS_MOUNT = "/models"
#: Where KITEBENCH_REFERENCE_DIR is mounted (read-write, for the runner): the audit's store.
REFERENCE_MOUNT = "/reference"
#: Where KITEBENCH_START_CACHE_DIR is mounted (read-write, for the runner): trusted start caches.
START_CACHE_MOUNT = "/start-cache"
#: The writable work dir (tmpfs); TMPDIR points here so the runner's work dirs land in it.
WORK_DIR = "/kitebench/work"

#: Label keys on every kitebench container.
LABEL_APP = "dev.kitebench.app"
LABEL_SLOT = "dev.kitebench.slot"
LABEL_JOB = "dev.kitebench.buildkite-job-id"
LABEL_BUILD = "dev.kitebench.buildkite-build"
LABEL_GPU = "dev.kitebench.gpu"

#: Host variables passed into the container by name (runner settings). Anything else is dropped.
ENV_ALLOW = ("SUBMISSION_PAYLOAD", "KITEBENCH_MAX_PAYLOAD_BYTES")
#: Host variables with this prefix are runner settings and pass too (documented for vendors).
ENV_ALLOW_PREFIX = "KITEBENCH_RUNNER_"
#: Never passed, whatever the allow-list says (defence in depth against a careless prefix).
ENV_DENY_SUBSTRINGS = ("TOKEN", "SECRET", "PASSWORD", "ACCESS_KEY", "PRIVATE_KEY")


def container_env(
    host_env: Mapping[str, str], settings: HostSettings, key: str | None = None
) -> dict[str, str]:
    """The container's whole environment: the allow-listed host variables + fixed settings."""
    env: dict[str, str] = {}
    for name, value in host_env.items():
        allowed = name in ENV_ALLOW or name.startswith(ENV_ALLOW_PREFIX)
        if allowed and not any(bad in name.upper() for bad in ENV_DENY_SUBSTRINGS):
            env[name] = value
    uid, gid = settings.submission_ids
    env.update(
        KITEBENCH_OUTPUT_DIR=OUTPUT_MOUNT,
        KITEBENCH_WORK_DIR=WORK_DIR,
        TMPDIR=WORK_DIR,
        HOME=WORK_DIR,
        PYTHONDONTWRITEBYTECODE="1",
        NVIDIA_VISIBLE_DEVICES=settings.gpu_device or "void",
    )
    env[sandbox.ENV_UID] = str(uid)
    env[sandbox.ENV_GID] = str(gid)
    env[sandbox.ENV_NAMESPACES] = "0"  # docker's seccomp profile refuses new namespaces
    if key is not None:
        env[KEY_ENV] = key
    if settings.gpu_uuid:
        env["KITEBENCH_GPU_UUID"] = settings.gpu_uuid  # the runner can assert what it sees
    if settings.reference_dir:
        env["KITEBENCH_REFERENCE_DIR"] = REFERENCE_MOUNT
    if settings.start_cache_dir:
        env["KITEBENCH_START_CACHE_DIR"] = START_CACHE_MOUNT
    return env


def device_requests(settings: HostSettings) -> list[Any]:
    """Exactly the agent's GPU, by id; an empty list when this host has none configured."""
    if not settings.has_gpu:
        return []
    from docker.types import DeviceRequest

    return [DeviceRequest(device_ids=[settings.gpu_device], capabilities=[["gpu"]])]


def container_kwargs(
    settings: HostSettings,
    *,
    image: str,
    output_dir: str,
    host_env: Mapping[str, str],
    job_id: str | None = None,
    build: str | None = None,
    key: str | None = None,
) -> dict[str, Any]:
    """Every keyword for ``client.containers.run(detach=True, **kw)`` / ``containers.create``."""
    tmpfs_opts = f"rw,exec,nosuid,nodev,size={parse_size(settings.tmpfs_size)}"
    labels = {LABEL_APP: "kitebench", LABEL_GPU: settings.gpu_device or "none"}
    if settings.slot_label:
        labels[LABEL_SLOT] = settings.slot_label
    if job_id:
        labels[LABEL_JOB] = job_id
    if build:
        labels[LABEL_BUILD] = build
    kw: dict[str, Any] = {
        "image": image,
        "detach": True,
        "environment": container_env(host_env, settings, key),
        # root with four capabilities: the runner; the submission gets settings.user
        "user": "0:0",
        "working_dir": WORK_DIR,
        "network_mode": "none",
        "read_only": True,
        "tmpfs": {
            "/tmp": tmpfs_opts,
            WORK_DIR: tmpfs_opts,
            VERDICT_DIR: "rw,noexec,nosuid,nodev,size=1m,mode=0700",
        },
        "volumes": {output_dir: {"bind": OUTPUT_MOUNT, "mode": "rw"}},
        "cap_drop": ["ALL"],
        "cap_add": list(RUNNER_CAPS),
        "security_opt": ["no-new-privileges"],
        "pids_limit": settings.pids_limit,
        # No init process: PID 1 is the runner itself, which makes itself non-dumpable, so the
        # submission cannot read the payload from /proc/1/environ; the runner is a subreaper
        # and kills (and reaps) every process the submission leaves behind.
        "init": False,
        "ipc_mode": "private",
        "labels": labels,
        "device_requests": device_requests(settings),
        # Logs stay small: result.json carries the outputs, the log is for debugging only.
        "log_config": {"type": "json-file", "config": {"max-size": "10m", "max-file": "1"}},
    }
    if settings.memory_bytes is not None:
        kw["mem_limit"] = settings.memory_bytes
        kw["memswap_limit"] = settings.memory_bytes  # equal: no swap on top of the limit
    if settings.cpuset:
        kw["cpuset_cpus"] = settings.cpuset
    if settings.cgroup_parent:
        kw["cgroup_parent"] = settings.cgroup_parent
    if settings.models_dir:
        kw["volumes"][settings.models_dir] = {"bind": MODELS_MOUNT, "mode": "ro"}
    if settings.reference_dir:
        kw["volumes"][settings.reference_dir] = {"bind": REFERENCE_MOUNT, "mode": "rw"}
    if settings.start_cache_dir:
        kw["volumes"][settings.start_cache_dir] = {"bind": START_CACHE_MOUNT, "mode": "rw"}
    return kw
