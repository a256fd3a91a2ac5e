"""``system`` of result.json, filled honestly without importing torch in the runner process.

Cheap to import (no pydantic, no platform): ``python -m runner`` calls :func:`start_probe` first
thing, so the vendor tools (``nvidia-smi`` can take a large part of a second to answer) run while
the runner imports its contract and decodes the payload; :func:`collect_system` then only waits
for what is left of them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from contract.result import SystemInfo

#: How long one vendor tool may take to answer (from its start).
QUERY_TIMEOUT_S = 10.0
#: The GPU queries in the order they are believed: the first that names a GPU wins.
GPU_QUERIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("CUDA", ("nvidia-smi", "--query-gpu=name", "--format=csv,noheader")),
    ("ROCm", ("rocm-smi", "--showproductname", "--csv")),
)
#: The only variables a vendor tool gets: what finds the tool and its driver libraries. Nothing
#: else of the runner's environment (the payload, the result key, the job's settings) reaches it.
_TOOL_ENV = ("PATH", "LD_LIBRARY_PATH", "HOME", "LANG", "LC_ALL", "ROCM_PATH")


def _cpu_model() -> str:
    try:
        info = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        import platform

        return platform.processor()
    fields: dict[str, str] = {}
    for line in info.splitlines():
        key, _, val = line.partition(":")
        fields.setdefault(key.strip(), val.strip())
    model = fields.get("model name", "")
    if model and model != "unknown":
        return model
    if "vendor_id" in fields:
        return fields["vendor_id"]
    import platform

    return platform.processor()


def _tool_env() -> dict[str, str]:
    return {k: os.environ[k] for k in _TOOL_ENV if k in os.environ}


class _Query:
    """One vendor tool started now and read later. Its stdin is /dev/null (with
    ``KITEBENCH_INPUT=stdin`` the result key is still waiting there), its environment
    :data:`_TOOL_ENV` only, and it inherits no other descriptor."""

    def __init__(self, cmd: tuple[str, ...], timeout: float | None = None) -> None:
        self.deadline = time.monotonic() + (QUERY_TIMEOUT_S if timeout is None else timeout)
        self.proc: subprocess.Popen[str] | None = None
        self.out: str | None = None
        if shutil.which(cmd[0]) is None:
            return
        try:
            self.proc = subprocess.Popen(
                list(cmd), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL, env=_tool_env(), text=True, errors="replace",
                close_fds=True,
            )
        except (OSError, subprocess.SubprocessError):
            self.proc = None

    def output(self) -> str | None:
        """The tool's stdout when it exited 0 before its deadline, else None."""
        proc, self.proc = self.proc, None
        if proc is None:
            return self.out
        try:
            out, _ = proc.communicate(timeout=max(0.0, self.deadline - time.monotonic()))
        except (OSError, subprocess.SubprocessError):
            _kill(proc)
            return None
        self.out = out if proc.returncode == 0 else None
        return self.out

    def cancel(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            _kill(proc)


def _kill(proc: subprocess.Popen[str]) -> None:
    try:
        proc.kill()
        proc.communicate(timeout=5)
    except (OSError, subprocess.SubprocessError):
        pass


class GpuProbe:
    """The GPU queries, started at once; :meth:`result` reads them in :data:`GPU_QUERIES`
    order, so the answer is the one the queries would give one after the other."""

    def __init__(self) -> None:
        self.queries = [(runtime, _Query(cmd)) for runtime, cmd in GPU_QUERIES]

    def result(self) -> tuple[list[str], str]:
        """GPU names and the runtime (CUDA / ROCm / CPU)."""
        found: tuple[list[str], str] = ([], "CPU")
        for runtime, query in self.queries:
            if found[0]:
                query.cancel()
                continue
            out = query.output()
            if out is not None:
                names = _parse(runtime, out)
                if names:
                    found = (names, runtime)
        return found

    def cancel(self) -> None:
        for _, query in self.queries:
            query.cancel()


def _parse(runtime: str, out: str) -> list[str]:
    if runtime == "CUDA":
        return [n.strip() for n in out.splitlines() if n.strip()]
    return [ln.split(",")[-1].strip() for ln in out.splitlines()[1:] if ln.strip()]


def _gpus() -> tuple[list[str], str]:
    """GPU names and the runtime (CUDA / ROCm / CPU) from the vendor tools."""
    return GpuProbe().result()


#: The probe :func:`start_probe` started and the next :func:`collect_system` reads.
_started: GpuProbe | None = None


def start_probe() -> None:
    """Start the GPU queries now; the next ``collect_system()`` waits for their answer."""
    global _started
    if _started is None:
        _started = GpuProbe()


def stop_probe() -> None:
    """Kill what :func:`start_probe` started and nothing has read (a job that ends early)."""
    global _started
    probe, _started = _started, None
    if probe is not None:
        probe.cancel()


def _torch_version() -> str:
    return dist_version("torch")


def dist_version(name: str) -> str:
    """The version of the installed distribution ``name`` that ``importlib.metadata.version``
    finds (the same search), or "" when none is. The version is read from the metadata's
    headers; the full parse (the email package, over torch's ~40 KB METADATA) took ten times
    as long as the rest of the system probe."""
    from importlib import metadata

    try:
        dist = metadata.distribution(name)
    except metadata.PackageNotFoundError:
        return ""
    text = dist.read_text("METADATA") or dist.read_text("PKG-INFO") or ""
    for line in text.splitlines():
        if not line.strip():  # the end of the headers
            break
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() == "version":
            return value.strip()
    return dist.version or ""


def collect_system(*, probe_gpu: bool = True) -> SystemInfo:
    import platform
    import socket

    from contract.result import SystemInfo

    global _started
    names: list[str] = []
    runtime = "CPU"
    if probe_gpu:
        probe, _started = (_started or GpuProbe()), None
        names, runtime = probe.result()
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
