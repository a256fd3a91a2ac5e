"""``kitebench vendor render``: discover the GPUs, plan each agent's share, write the files.

Writes into ``out`` laid out like the host's root (``out/etc/systemd/system/...``), so
``--out /`` installs directly and any other directory is a preview or a package root.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from host.provision.host import Host
from host.provision.plan import (
    DEFAULT_RESERVE_MEMORY_MIB,
    GpuInfo,
    GpuPlan,
    KitSettings,
    parse_cpulist,
    parse_gpu_list,
    parse_nvidia_smi,
    plan_gpus,
)
from host.provision.templates import DROPIN_NAME, UNIT_DIR, RenderedFile, render_files
from launcher.errors import InfraError, UsageError

NVIDIA_SMI_QUERY = ["--query-gpu=index,uuid,name", "--format=csv,noheader"]


def discover_gpus(host: Host, nvidia_smi: str = "nvidia-smi") -> list[GpuInfo]:
    res = host.run([nvidia_smi, *NVIDIA_SMI_QUERY])
    if not res.ok:
        raise InfraError(f"nvidia-smi failed (use --gpus INDEX:UUID:MODEL,...): {res.brief()}")
    gpus = parse_nvidia_smi(res.stdout)
    if not gpus:
        raise InfraError("nvidia-smi lists no GPUs")
    return gpus


def host_cpus(host: Host) -> list[int]:
    try:
        return parse_cpulist(host.path("/sys/devices/system/cpu/online").read_text())
    except OSError:
        return list(range(os.cpu_count() or 1))


def host_memtotal_mib(host: Host) -> int:
    try:
        meminfo = host.path("/proc/meminfo").read_text()
    except OSError as e:
        raise InfraError(f"cannot read /proc/meminfo (use --memory-total): {e}") from None
    m = re.search(r"^MemTotal:\s+(\d+)\s*kB", meminfo, flags=re.MULTILINE)
    if not m:
        raise InfraError("no MemTotal in /proc/meminfo (use --memory-total)")
    return int(m.group(1)) // 1024


def default_queue(gpu: GpuInfo) -> str:
    """The registry's queue for this GPU model (launcher.gpus), matched on the model name."""
    from launcher.gpus import load_registry

    registry = load_registry()
    words = set(re.split(r"[^a-z0-9]+", gpu.name.lower()))
    for name, spec in registry.gpus.items():
        if name.lower() in words or name.lower() == gpu.name.lower():
            return spec.queue
    raise UsageError(f"GPU model {gpu.name!r} is not in the GPU registry: pass --queue")


@dataclass(frozen=True)
class RenderResult:
    gpus: list[GpuPlan]
    written: list[Path]
    removed: list[Path]


def plan_host(
    host: Host,
    *,
    gpus_spec: str,
    queue: str | None,
    kit: KitSettings,
    cpus: str | None = None,
    memtotal_mib: int | None = None,
    reserve_cpus: int = 0,
    reserve_memory_mib: int = DEFAULT_RESERVE_MEMORY_MIB,
) -> list[GpuPlan]:
    gpus = discover_gpus(host, kit.nvidia_smi) if gpus_spec == "auto" else parse_gpu_list(gpus_spec)
    if not gpus:
        raise UsageError("--gpus lists no GPU")
    queues = {g.index: queue or default_queue(g) for g in gpus}
    return plan_gpus(
        gpus,
        queue_for=queues,
        cpu_pool=parse_cpulist(cpus) if cpus else host_cpus(host),
        memtotal_mib=memtotal_mib if memtotal_mib is not None else host_memtotal_mib(host),
        reserve_cpus=reserve_cpus,
        reserve_memory_mib=reserve_memory_mib,
    )


def write_files(out: Path, files: list[RenderedFile], gpus: list[GpuPlan]) -> RenderResult:
    written = []
    for f in files:
        dest = out / f.path.lstrip("/")
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(f".{dest.name}.tmp")
            tmp.write_text(f.content)
            tmp.chmod(f.mode)
            tmp.replace(dest)
        except OSError as e:
            raise InfraError(f"cannot write {dest}: {e.strerror or e}") from None
        written.append(dest)
    return RenderResult(gpus, written, _remove_stale(out, {g.index for g in gpus}))


def _remove_stale(out: Path, indices: set[int]) -> list[Path]:
    """Drop-ins and slices of GPUs that are gone (ours only, by name), so no agent outlives its GPU."""
    unit_dir = out / UNIT_DIR.lstrip("/")
    removed = []
    for path in [
        *unit_dir.glob(f"kitebench-agent@*.service.d/{DROPIN_NAME}"),
        *unit_dir.glob("kitebench-gpu*.slice"),
    ]:
        m = re.search(r"(?:kitebench-agent@|kitebench-gpu)(\d+)\.(?:service\.d|slice)", str(path))
        if m and int(m.group(1)) not in indices:
            path.unlink()
            removed.append(path)
    return removed


def render(
    host: Host,
    out: Path,
    *,
    gpus_spec: str,
    queue: str | None,
    kit: KitSettings,
    **plan_options,
) -> RenderResult:
    plans = plan_host(host, gpus_spec=gpus_spec, queue=queue, kit=kit, **plan_options)
    return write_files(out, render_files(kit, plans), plans)
