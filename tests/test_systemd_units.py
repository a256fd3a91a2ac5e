"""Every rendered unit passes ``systemd-analyze verify`` (with no warning) for 1, 2 and 8 GPUs.

Verification runs against a root that mirrors a vendor host: this machine's systemd units, the
rendered files at their real paths, Docker's unit, and an executable at the real
``/usr/bin/buildkite-agent`` path (the agent binary cannot be installed here).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from host.provision.plan import GpuInfo, KitSettings, plan_gpus
from host.provision.render import write_files
from host.provision.templates import HOOKS, render_files
from tests.common import missing_prereq

SYSTEM_UNITS = Path("/usr/lib/systemd/system")
DOCKER_UNIT = "[Unit]\nDescription=Docker\n[Service]\nExecStart=/usr/bin/dockerd\n"


def gpus(n: int) -> list[GpuInfo]:
    return [
        GpuInfo(index=i, uuid=f"GPU-{i:08x}-aaaa-bbbb-cccc-{i:012x}", name="NVIDIA H100 80GB HBM3")
        for i in range(n)
    ]


def host_root(tmp_path: Path) -> Path:
    if not shutil.which("systemd-analyze") or not (SYSTEM_UNITS / "sysinit.target").exists():
        missing_prereq("systemd-analyze and the systemd units are needed")
    root = tmp_path / "root"
    shutil.copytree(SYSTEM_UNITS, root / SYSTEM_UNITS.relative_to("/"), symlinks=True)
    docker = root / "usr/lib/systemd/system/docker.service"
    if not docker.exists():  # a vendor host has Docker; this machine may not have its unit
        docker.write_text(DOCKER_UNIT)
    for exe in ("usr/bin/buildkite-agent", "usr/bin/dockerd"):
        path = root / exe
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            path.write_text("#!/bin/sh\nexit 0\n")
            path.chmod(0o755)
    return root


def verify(root: Path, units: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["systemd-analyze", "verify", f"--root={root}", *units],
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize("n", [1, 2, 8])
def test_rendered_units_verify(tmp_path, n):
    root = host_root(tmp_path)
    plans = plan_gpus(
        gpus(n),
        queue_for=dict.fromkeys(range(n), "h100"),
        cpu_pool=list(range(64)),
        memtotal_mib=512 * 1024,
    )
    kit = KitSettings(
        cgroup_parent=True,
        extra_tags=("benchmark=true",),
        disconnect_after_job=True,
        verification_jwks_file="/etc/kitebench/verify.jwks",
    )
    result = write_files(root, render_files(kit, plans), plans)
    assert len(result.written) == 2 + len(HOOKS) + 2 * n
    units = ["kitebench.slice"]
    for i in range(n):
        units += [f"kitebench-agent@{i}.service", f"kitebench-gpu{i}.slice"]
    proc = verify(root, units)
    assert proc.returncode == 0, proc.stderr
    # verify exits 0 on unknown keys or bad values; any line about our files is a failure too.
    assert "kitebench" not in proc.stderr, proc.stderr
    # The CPU shares are disjoint and cover the pool; each slice states its share.
    per = 64 // n
    for i in range(n):
        text = (root / f"etc/systemd/system/kitebench-gpu{i}.slice").read_text()
        assert f"AllowedCPUs={i * per}-{(i + 1) * per - 1}\n" in text or per == 1
        assert f"CPUQuota={per * 100}%\n" in text


def test_verify_catches_a_broken_unit(tmp_path):
    """The check above can fail: a missing agent binary and a bad key are reported."""
    root = host_root(tmp_path)
    plans = plan_gpus(gpus(1), queue_for={0: "h100"}, cpu_pool=[0, 1], memtotal_mib=8192)
    kit = KitSettings(agent_bin="/opt/nowhere/buildkite-agent")
    write_files(root, render_files(kit, plans), plans)
    slice_file = root / "etc/systemd/system/kitebench-gpu0.slice"
    slice_file.write_text(slice_file.read_text() + "CPUQuotaa=5%\n")
    proc = verify(root, ["kitebench-agent@0.service", "kitebench-gpu0.slice"])
    assert proc.returncode != 0
    assert "/opt/nowhere/buildkite-agent" in proc.stderr
    assert "CPUQuotaa" in proc.stderr
