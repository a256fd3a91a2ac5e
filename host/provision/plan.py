"""What to provision: the host-wide agent settings and one plan per GPU (its CPU/memory share).

Every value here ends up in a systemd unit or a shell hook, so each is validated against a narrow
character set: a GPU name or an explicit list can never inject a line into a unit file.
The split rule (kept identical in the Ansible role, and tested against it):
  CPUs   — the pool minus the first ``reserve_cpus``, cut into N equal contiguous blocks;
  memory — (MemTotal MiB − ``reserve_memory_mib``) // N, in whole MiB.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from host.container import LABEL_JOB
from host.settings import DEFAULT_IMAGE, DEFAULT_PIDS_LIMIT, GPU_UUID
from launcher.errors import UsageError

_TAG_VALUE = re.compile(r"^[A-Za-z0-9._-]+$")
_EXTRA_TAG = re.compile(r"^[A-Za-z0-9._-]+=[A-Za-z0-9._-]+$")
_IMAGE = re.compile(r"^[A-Za-z0-9._/:@-]+$")
_ABS_PATH = re.compile(r"^/[A-Za-z0-9._/@+-]*$")
_NAME = re.compile(r"^[a-z_][a-z0-9_-]*$")


def _matching(pattern: re.Pattern[str], what: str):
    def check(value: str) -> str:
        if not pattern.match(value):
            raise ValueError(f"{what} {value!r} has characters that are not allowed")
        return value

    return AfterValidator(check)


TagValue = Annotated[str, _matching(_TAG_VALUE, "tag value")]
AbsPath = Annotated[str, _matching(_ABS_PATH, "path")]
UnixName = Annotated[str, _matching(_NAME, "user/group name")]


class KitSettings(BaseModel):
    """Host-wide settings shared by every agent (the ``kit`` of the templates)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    user: UnixName = "buildkite-agent"
    group: UnixName = "buildkite-agent"
    docker_group: UnixName = "docker"
    home: AbsPath = "/var/lib/buildkite-agent"
    agent_bin: AbsPath = "/usr/bin/buildkite-agent"
    token_file: AbsPath = "/etc/kitebench/agent-token.env"
    hooks_dir: AbsPath = "/etc/kitebench/hooks"
    image: Annotated[str, _matching(_IMAGE, "image")] = DEFAULT_IMAGE
    pids_limit: int = Field(DEFAULT_PIDS_LIMIT, ge=16)
    # Put job containers into the GPU's slice too (docker's systemd cgroup driver only).
    cgroup_parent: bool = False
    job_label: Annotated[str, _matching(_TAG_VALUE, "label")] = LABEL_JOB
    extra_tags: tuple[Annotated[str, _matching(_EXTRA_TAG, "tag")], ...] = ()
    # Signed pipelines: the public JWKS the agents verify job signatures with (None = off).
    verification_jwks_file: AbsPath | None = None
    disconnect_after_job: bool = False
    nvidia_smi: AbsPath | Annotated[str, _matching(_TAG_VALUE, "command")] = "nvidia-smi"
    docker: AbsPath | Annotated[str, _matching(_TAG_VALUE, "command")] = "docker"


class GpuInfo(BaseModel):
    """One GPU as nvidia-smi (or the user's list) names it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    index: int = Field(ge=0)
    uuid: Annotated[str, _matching(GPU_UUID, "GPU UUID")]
    name: Annotated[str, _matching(re.compile(r"^[^\x00-\x1f\x7f]+$"), "GPU name")] = Field(
        min_length=1, max_length=200
    )


class GpuPlan(BaseModel):
    """One agent: its GPU and its share of the host (the ``gpu`` of the templates)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    index: int = Field(ge=0)
    uuid: Annotated[str, _matching(GPU_UUID, "GPU UUID")]
    model: TagValue
    queue: TagValue
    cpuset: Annotated[str, _matching(re.compile(r"^[0-9]+([-,][0-9]+)*$"), "cpuset")]
    cpus: int = Field(ge=1)
    memory_bytes: int = Field(ge=64 * 2**20)


def model_slug(name: str) -> str:
    """``NVIDIA H100 80GB HBM3`` → ``h100-80gb-hbm3`` (the role applies the same rule)."""
    s = re.sub(r"^nvidia\s+", "", name.strip(), flags=re.IGNORECASE).lower()
    return re.sub(r"[^a-z0-9.]+", "-", s).strip("-") or "gpu"


def parse_nvidia_smi(text: str) -> list[GpuInfo]:
    """Parse ``nvidia-smi --query-gpu=index,uuid,name --format=csv,noheader``."""
    gpus = []
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = [p.strip() for p in line.split(",", 2)]
        if len(parts) != 3 or not parts[0].isdigit():
            raise UsageError(f"unexpected nvidia-smi line: {line.strip()[:120]!r}")
        gpus.append(_gpu(int(parts[0]), parts[1], parts[2]))
    return gpus


def parse_gpu_list(text: str) -> list[GpuInfo]:
    """Parse an explicit ``INDEX:UUID:MODEL[,INDEX:UUID:MODEL...]`` list."""
    gpus = []
    for entry in filter(None, (e.strip() for e in text.split(","))):
        parts = entry.split(":", 2)
        if len(parts) != 3 or not parts[0].isdigit():
            raise UsageError(f"--gpus entry {entry!r} is not INDEX:UUID:MODEL")
        gpus.append(_gpu(int(parts[0]), parts[1].strip(), parts[2].strip()))
    return gpus


def _gpu(index: int, uuid: str, name: str) -> GpuInfo:
    try:
        return GpuInfo(index=index, uuid=uuid, name=name)
    except ValueError as e:
        raise UsageError(f"GPU {index}: {_first_error(e)}") from None


def parse_cpulist(text: str) -> list[int]:
    """``0-3,8,10-11`` (the kernel's and systemd's CPU list format) → sorted CPU ids."""
    cpus: set[int] = set()
    for part in filter(None, (p.strip() for p in text.strip().split(","))):
        lo, sep, hi = part.partition("-")
        if not lo.isdigit() or (sep and not hi.isdigit()):
            raise UsageError(f"bad CPU list {text.strip()!r}")
        first, last = int(lo), int(hi) if sep else int(lo)
        if last < first:
            raise UsageError(f"bad CPU range {part!r}")
        cpus.update(range(first, last + 1))
    return sorted(cpus)


def format_cpuset(block: list[int]) -> str:
    """A contiguous block is ``first-last`` (or ``n``), anything else a comma list (as the role)."""
    if len(block) == 1:
        return str(block[0])
    if block[-1] - block[0] + 1 == len(block):
        return f"{block[0]}-{block[-1]}"
    return ",".join(map(str, block))


def parse_size_mib(text: str) -> int:
    """``4G``, ``512M``, ``1T`` or a plain number of MiB → MiB."""
    m = re.fullmatch(r"\s*([0-9]+)\s*([KMGT]?)i?B?\s*", text, flags=re.IGNORECASE)
    if not m:
        raise UsageError(f"bad size {text!r} (use e.g. 512M, 4G)")
    n, unit = int(m.group(1)), m.group(2).upper()
    factor = {"K": 1 / 1024, "": 1, "M": 1, "G": 1024, "T": 1024 * 1024}[unit]
    return int(n * factor)


#: Memory kept for the host when splitting MemTotal over the GPUs (the Ansible role's default too).
DEFAULT_RESERVE_MEMORY_MIB = 4096


def plan_gpus(
    gpus: list[GpuInfo],
    *,
    queue_for: dict[int, str],
    cpu_pool: list[int],
    memtotal_mib: int,
    reserve_cpus: int = 0,
    reserve_memory_mib: int = DEFAULT_RESERVE_MEMORY_MIB,
) -> list[GpuPlan]:
    """Split the CPU pool and memory evenly over ``gpus`` (sorted by index)."""
    if not gpus:
        raise UsageError("no GPUs to provision")
    gpus = sorted(gpus, key=lambda g: g.index)
    for what, values in (("index", [g.index for g in gpus]), ("UUID", [g.uuid for g in gpus])):
        if len(set(values)) != len(values):
            raise UsageError(f"GPU {what}es must be distinct: {values}")
    n = len(gpus)
    pool = sorted(set(cpu_pool))[reserve_cpus:]
    per_cpu = len(pool) // n
    if per_cpu < 1:
        raise UsageError(
            f"{len(pool)} CPUs (after reserving {reserve_cpus}) cannot be split over {n} GPUs"
        )
    per_mib = (memtotal_mib - reserve_memory_mib) // n
    if per_mib < 64:
        raise UsageError(
            f"{memtotal_mib} MiB of memory (after reserving {reserve_memory_mib} MiB) "
            f"cannot be split over {n} GPUs"
        )
    plans = []
    for i, gpu in enumerate(gpus):
        block = pool[i * per_cpu : (i + 1) * per_cpu]
        try:
            plans.append(
                GpuPlan(
                    index=gpu.index,
                    uuid=gpu.uuid,
                    model=model_slug(gpu.name),
                    queue=queue_for[gpu.index],
                    cpuset=format_cpuset(block),
                    cpus=len(block),
                    memory_bytes=per_mib * 2**20,
                )
            )
        except ValueError as e:
            raise UsageError(f"GPU {gpu.index}: {_first_error(e)}") from None
    return plans


def _first_error(e: ValueError) -> str:
    errors = getattr(e, "errors", None)
    if callable(errors):
        first = errors()[0]
        return f"{'.'.join(map(str, first['loc']))}: {first['msg']}"
    return str(e)
