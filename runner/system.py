"""``system`` of result.json, filled honestly without importing torch in the runner process."""

from __future__ import annotations

import platform
import shutil
import socket
import subprocess
from importlib import metadata
from pathlib import Path

from contract.result import SystemInfo


def _cpu_model() -> str:
    try:
        info = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return platform.processor()
    fields: dict[str, str] = {}
    for line in info.splitlines():
        key, _, val = line.partition(":")
        fields.setdefault(key.strip(), val.strip())
    model = fields.get("model name", "")
    return model if model and model != "unknown" else fields.get("vendor_id", platform.processor())


def _query(cmd: list[str], timeout: float = 10) -> str | None:
    if shutil.which(cmd[0]) is None:
        return None
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def _gpus() -> tuple[list[str], str]:
    """GPU names and the runtime (CUDA / ROCm / CPU) from the vendor tools."""
    out = _query(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"])
    if out is not None:
        names = [n.strip() for n in out.splitlines() if n.strip()]
        if names:
            return names, "CUDA"
    out = _query(["rocm-smi", "--showproductname", "--csv"])
    if out is not None:
        names = [ln.split(",")[-1].strip() for ln in out.splitlines()[1:] if ln.strip()]
        if names:
            return names, "ROCm"
    return [], "CPU"


def _torch_version() -> str:
    try:
        return metadata.version("torch")
    except metadata.PackageNotFoundError:
        return ""


def collect_system(*, probe_gpu: bool = True) -> SystemInfo:
    names, runtime = _gpus() if probe_gpu else ([], "CPU")
    return SystemInfo(
        gpu=names[0] if names else "",
        device_count=len(names),
        cpu=_cpu_model(),
        runtime=runtime,
        platform=platform.platform(),
        torch=_torch_version(),
        hostname=socket.gethostname(),
    )


CGROUP_ROOT = Path("/sys/fs/cgroup")


def pids_events_paths(pid: int | str = "self", root: Path = CGROUP_ROOT) -> list[Path]:
    """Where the ``pids.events`` of process ``pid``'s cgroup would be (cgroup v1 and v2)."""
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return []
    paths = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if "pids" in controllers.split(","):  # v1: a hierarchy per controller
            paths.append(root / "pids" / path.lstrip("/") / "pids.events")
        elif controllers == "":  # v2: one unified hierarchy
            paths.append(root / path.lstrip("/") / "pids.events")
    return paths


def read_max_events(path: Path) -> int | None:
    """Forks refused by a pids limit so far: ``max N`` in a pids.events file."""
    try:
        text = path.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == "max" and value.strip().isdigit():
            return int(value)
    return None


def pids_limit_hits() -> int | None:
    """Forks refused by the pids limit of this process's cgroup so far, or None where no such
    counter is visible. Inside a container the cgroup is mounted at the root of /sys/fs/cgroup;
    on a plain host its path comes from /proc/self/cgroup."""
    candidates = pids_events_paths("self")
    candidates += [CGROUP_ROOT / "pids" / "pids.events", CGROUP_ROOT / "pids.events"]
    for candidate in candidates:
        hits = read_max_events(candidate)
        if hits is not None:
            return hits
    return None
