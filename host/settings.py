"""The agent's isolation settings, read from the job environment (set by the agent's drop-in).

    KITEBENCH_GPU_UUID        the one GPU this agent owns (``GPU-...`` or a MIG UUID)
    KITEBENCH_GPU_INDEX       alternative to the UUID (a host index such as ``3``); UUID preferred
    KITEBENCH_CPUSET          CPUs for the container, e.g. ``0-7`` (default: no pinning)
    KITEBENCH_MEMORY          memory limit, e.g. ``64g``; swap is set to the same value (no swap)
    KITEBENCH_PIDS_LIMIT      max processes in the container (default 4096)
    KITEBENCH_IMAGE           runner image, present on the host (never pulled implicitly)
    KITEBENCH_MODEL_IMAGE     image for ``lang: model`` payloads (default: KITEBENCH_IMAGE)
    KITEBENCH_CGROUP_PARENT   optional cgroup parent (e.g. a systemd slice) for the container
    KITEBENCH_SLOT            label that identifies this agent's containers (default: GPU UUID or
                              index); stale containers with the same slot are removed before a job
    KITEBENCH_JOB_TIMEOUT     hard limit for the container in seconds (default: from the payload)
    KITEBENCH_TIMEOUT_MARGIN  seconds added to the payload's timeouts (default 120)
    KITEBENCH_STOP_GRACE      seconds between SIGTERM and SIGKILL on cancel (default 8; keep it
                              below the agent's BUILDKITE_CANCEL_GRACE_PERIOD, default 10)
    KITEBENCH_CONTAINER_USER  numeric uid:gid the SUBMISSION runs as inside the container (default
                              10001:10001, never root); the runner is PID 1, root with only
                              CHOWN/SETUID/SETGID/KILL
    KITEBENCH_TMPFS_SIZE      size of /tmp and of the work dir tmpfs (default 4g each)
    KITEBENCH_MODELS_DIR      host dir of model dirs, mounted read-only at /models (model jobs
                              have no network, so the weights must come from here or the image)
    KITEBENCH_REFERENCE_DIR   host dir of the model audit's stock references, mounted read-write
                              at /reference for the runner (root in the container: make it
                              root-owned, 0700; the submission's uid cannot enter it)
    KITEBENCH_START_CACHE_DIR host dir of the vLLM start-up cache (compile caches written only by
                              trusted stock servers, runner.model.cache), mounted read-write at
                              /start-cache for the runner (make it root-owned, 0700, like the
                              reference dir: forks get a private copy of an entry, never the dir)
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from contract.budget import phases_s

if TYPE_CHECKING:
    from contract.payload import AnyPayload

DEFAULT_IMAGE = "kitebench-runner:latest"
DEFAULT_PIDS_LIMIT = 4096
DEFAULT_MARGIN_S = 120
DEFAULT_STOP_GRACE_S = 8.0
DEFAULT_USER = "10001:10001"

_SIZE = re.compile(r"^(\d+)([bkmg]?)$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 2**10, "m": 2**20, "g": 2**30}
_CPUSET = re.compile(r"^\d+(-\d+)?(,\d+(-\d+)?)*$")
#: A GPU or MIG instance UUID as nvidia-smi prints it (the one pattern; provisioning uses it too).
GPU_UUID = re.compile(r"^(GPU|MIG)-[0-9A-Za-z/-]+$")


class SettingsError(ValueError):
    """A KITEBENCH_* setting of this host is wrong (a host configuration problem, not retryable)."""


def parse_size(text: str) -> int:
    """``64g`` / ``512m`` / ``1048576`` → bytes (docker's units: b, k, m, g; powers of 1024)."""
    m = _SIZE.match(text.strip())
    if not m:
        raise ValueError(f"not a size like 512m or 64g: {text!r}")
    return int(m.group(1)) * _UNITS[m.group(2).lower()]


class HostSettings(BaseModel):
    """Isolation and limits of one agent's container (one agent = one GPU)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    gpu_uuid: str | None = None
    gpu_index: int | None = Field(default=None, ge=0)
    cpuset: str | None = None
    memory_bytes: int | None = Field(default=None, gt=0)
    pids_limit: int = Field(default=DEFAULT_PIDS_LIMIT, gt=0)
    image: str = DEFAULT_IMAGE
    model_image: str | None = None
    cgroup_parent: str | None = None
    slot: str | None = None
    job_timeout_s: float | None = Field(default=None, gt=0)
    timeout_margin_s: float = Field(default=DEFAULT_MARGIN_S, ge=0)
    stop_grace_s: float = Field(default=DEFAULT_STOP_GRACE_S, ge=0)
    user: str = DEFAULT_USER
    tmpfs_size: str = "4g"
    models_dir: str | None = None
    reference_dir: str | None = None
    start_cache_dir: str | None = None

    @field_validator("gpu_uuid")
    @classmethod
    def _uuid(cls, v: str | None) -> str | None:
        if v is not None and not GPU_UUID.match(v):
            raise ValueError(f"must look like GPU-xxxxxxxx-... or MIG-...: {v!r}")
        return v

    @field_validator("cpuset")
    @classmethod
    def _cpuset(cls, v: str | None) -> str | None:
        if v is not None and not _CPUSET.match(v):
            raise ValueError(f"must be a CPU list like 0-7 or 0,2,4-6: {v!r}")
        return v

    @field_validator("user")
    @classmethod
    def _not_root(cls, v: str) -> str:
        uid, _, gid = v.partition(":")
        if uid in ("0", "root", ""):
            raise ValueError("the container user must not be root")
        if not uid.isdigit() or not (gid or uid).isdigit() or (gid or uid) == "0":
            raise ValueError(f"must be a numeric uid:gid like 10001:10001, not root: {v!r}")
        return v

    @property
    def submission_ids(self) -> tuple[int, int]:
        """(uid, gid) the submission runs as inside the container."""
        uid, _, gid = self.user.partition(":")
        return int(uid), int(gid or uid)

    @field_validator("models_dir", "reference_dir", "start_cache_dir")
    @classmethod
    def _abs(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith("/"):
            raise ValueError(f"must be an absolute host path: {v!r}")
        return v

    @field_validator("tmpfs_size")
    @classmethod
    def _tmpfs(cls, v: str) -> str:
        parse_size(v)
        return v

    @property
    def has_gpu(self) -> bool:
        return self.gpu_uuid is not None or self.gpu_index is not None

    @property
    def gpu_device(self) -> str | None:
        """The device id sent to docker: the UUID when known (stable across reboots), else index."""
        if self.gpu_uuid is not None:
            return self.gpu_uuid
        return str(self.gpu_index) if self.gpu_index is not None else None

    @property
    def slot_label(self) -> str | None:
        """The label value that marks this agent's containers (stale-container cleanup)."""
        return self.slot or self.gpu_device

    def image_for(self, lang: str) -> str:
        return (self.model_image or self.image) if lang == "model" else self.image

    def timeout_for(self, payload: AnyPayload) -> float:
        """Hard limit for the container: the payload's own timeouts plus setup margin."""
        if self.job_timeout_s is not None:
            return self.job_timeout_s
        return phases_s(payload) + self.timeout_margin_s

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> HostSettings:
        """Read ``KITEBENCH_*``; raise :class:`SettingsError` naming the variable that is wrong."""
        raw: dict[str, Any] = {}
        names = {
            "KITEBENCH_GPU_UUID": "gpu_uuid",
            "KITEBENCH_GPU_INDEX": "gpu_index",
            "KITEBENCH_CPUSET": "cpuset",
            "KITEBENCH_PIDS_LIMIT": "pids_limit",
            "KITEBENCH_IMAGE": "image",
            "KITEBENCH_MODEL_IMAGE": "model_image",
            "KITEBENCH_CGROUP_PARENT": "cgroup_parent",
            "KITEBENCH_SLOT": "slot",
            "KITEBENCH_JOB_TIMEOUT": "job_timeout_s",
            "KITEBENCH_TIMEOUT_MARGIN": "timeout_margin_s",
            "KITEBENCH_STOP_GRACE": "stop_grace_s",
            "KITEBENCH_CONTAINER_USER": "user",
            "KITEBENCH_TMPFS_SIZE": "tmpfs_size",
            "KITEBENCH_MODELS_DIR": "models_dir",
            "KITEBENCH_REFERENCE_DIR": "reference_dir",
            "KITEBENCH_START_CACHE_DIR": "start_cache_dir",
        }
        for var, field in names.items():
            value = env.get(var, "").strip()
            if value:
                raw[field] = value
        mem = env.get("KITEBENCH_MEMORY", "").strip()
        if mem:
            try:
                raw["memory_bytes"] = parse_size(mem)
            except ValueError as e:
                raise SettingsError(f"KITEBENCH_MEMORY: {e}") from None
        try:
            return cls.model_validate(raw)
        except ValidationError as e:
            err = e.errors(include_url=False)[0]
            field = str(err["loc"][0]) if err["loc"] else ""
            names["KITEBENCH_MEMORY"] = "memory_bytes"
            var = next((k for k, v in names.items() if v == field), field or "settings")
            raise SettingsError(f"{var}: {err['msg']}") from None
