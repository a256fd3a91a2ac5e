"""``kitebench vendor render``: GPU discovery and lists, the even split, what it writes, what it
refuses, and the agent hooks it writes doing their job (with stand-in nvidia-smi/docker, and with
the real Docker engine for pre-exit when there is one)."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from host.provision.plan import (
    GpuInfo,
    KitSettings,
    format_cpuset,
    parse_cpulist,
    parse_gpu_list,
    plan_gpus,
)
from kitebench import main
from launcher.errors import UsageError
from tests.common import missing_prereq

UNITS = "etc/systemd/system"
H100 = "NVIDIA H100 80GB HBM3"


def standin(bin_dir: Path, name: str, script: str) -> None:
    bin_dir.mkdir(exist_ok=True)
    exe = bin_dir / name
    exe.write_text("#!/bin/sh\n" + script)
    exe.chmod(0o755)


def fake_smi(bin_dir: Path, n: int) -> list[str]:
    uuids = [f"GPU-{i}1b2c3d4-0000-4000-8000-00000000000{i}" for i in range(n)]
    lines = "\n".join(f"{i}, {u}, {H100}" for i, u in enumerate(uuids))
    standin(
        bin_dir,
        "nvidia-smi",
        f'[ "$1" = "--query-gpu=index,uuid,name" ] && [ "$2" = "--format=csv,noheader" ] || exit 2\n'
        f"cat <<'EOF'\n{lines}\nEOF\n",
    )
    return uuids


def test_render_auto_discovers_gpus_and_splits_evenly(tmp_path, monkeypatch, capsys):
    uuids = fake_smi(tmp_path / "bin", 4)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    out = tmp_path / "out"
    rc = main(
        [
            "vendor",
            "render",
            "--gpus",
            "auto",
            "--queue",
            "h100",
            "--out",
            str(out),
            "--cpus",
            "0-33",
            "--reserve-cpus",
            "2",
            "--memory-total",
            "260G",
            "--reserve-memory",
            "4G",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    for i, u in enumerate(uuids):
        dropin = (out / UNITS / f"kitebench-agent@{i}.service.d/10-kitebench.conf").read_text()
        cpus = f"{2 + 8 * i}-{9 + 8 * i}"
        assert (
            f'"BUILDKITE_AGENT_TAGS=queue=h100,gpu=h100-80gb-hbm3,gpu-index={i},gpu-uuid={u}"'
            in dropin
        )
        assert f"KITEBENCH_GPU_UUID={u}\n" in dropin and f"KITEBENCH_CPUSET={cpus}\n" in dropin
        assert f"KITEBENCH_MEMORY={64 * 2**30}\n" in dropin
        slice_ = (out / UNITS / f"kitebench-gpu{i}.slice").read_text()
        assert f"AllowedCPUs={cpus}\n" in slice_ and "CPUQuota=800%\n" in slice_
        assert f"MemoryMax={64 * 2**30}\n" in slice_
    unit = (out / UNITS / "kitebench-agent@.service").read_text()
    for line in (
        "Restart=always",
        "EnvironmentFile=/etc/kitebench/agent-token.env",
        "Slice=kitebench-gpu%i.slice",
        "SupplementaryGroups=docker",
        "Environment=BUILDKITE_AGENT_NAME=%H-gpu%i",
        "Environment=BUILDKITE_BUILD_PATH=%S/kitebench/agent-%i/builds",
        "NoNewPrivileges=yes",
        # The job policy's agent options: no repository hooks, no plugins, the env allow-list.
        "Environment=BUILDKITE_NO_LOCAL_HOOKS=true",
        "Environment=BUILDKITE_NO_PLUGINS=true",
        "Environment=BUILDKITE_ENABLE_ENVIRONMENT_VARIABLE_ALLOWLIST=true",
    ):
        assert line + "\n" in unit
    assert "VERIFICATION_JWKS" not in unit  # signed pipelines: off unless asked for
    for hook in ("environment", "pre-exit", "pre-bootstrap", "pre-command"):
        assert os.access(out / "etc/kitebench/hooks" / hook, os.X_OK)
    assert (
        "systemctl daemon-reload && systemctl enable --now kitebench-agent@0"
        in capsys.readouterr().out
    )


def test_render_explicit_list_uses_the_registry_queue_and_removes_stale_gpus(tmp_path, capsys):
    out = tmp_path / "out"
    args = ["vendor", "render", "--out", str(out), "--cpus", "0-7", "--memory-total", "64G"]
    gpus3 = ",".join(f"{i}:GPU-aaaa-{i}:{H100}" for i in range(3))
    assert main([*args, "--gpus", gpus3]) == 0
    assert (out / UNITS / "kitebench-gpu2.slice").exists()
    assert (
        "queue=h100," in (out / UNITS / "kitebench-agent@0.service.d/10-kitebench.conf").read_text()
    )
    assert main([*args, "--gpus", "0:GPU-aaaa-0:h100,1:GPU-aaaa-1:h100"]) == 0
    assert not (out / UNITS / "kitebench-gpu2.slice").exists()
    assert not (out / UNITS / "kitebench-agent@2.service.d/10-kitebench.conf").exists()
    assert "removed" in capsys.readouterr().out


@pytest.mark.parametrize(
    "gpus, extra, message",
    [
        ("0:GPU-a:h100\n[Service]", ["--queue", "q"], "not allowed"),
        ("0:GPU-a:h100", ["--queue", "q,x=y"], "not allowed"),
        ("0:not-a-uuid:h100", ["--queue", "q"], "GPU UUID"),
        ("0:GPU-a:h100,0:GPU-b:h100", ["--queue", "q"], "distinct"),
        ("zero:GPU-a:h100", ["--queue", "q"], "INDEX:UUID:MODEL"),
        ("0:GPU-a:Quantum 9000", [], "not in the GPU registry"),
        ("0:GPU-a:h100", ["--queue", "q", "--image", "img; rm -rf /"], "not allowed"),
        ("0:GPU-a:h100", ["--queue", "q", "--tag", "bad tag"], "not allowed"),
        ("0:GPU-a:h100", ["--queue", "q", "--verification-jwks-file", "keys.json"], "not allowed"),
        (
            "0:GPU-a:h100,1:GPU-b:h100,2:GPU-c:h100",
            ["--queue", "q", "--cpus", "0-1"],
            "cannot be split",
        ),
    ],
)
def test_render_refuses_bad_input_with_one_line(tmp_path, capsys, gpus, extra, message):
    out = tmp_path / "out"
    rc = main(
        [
            "vendor",
            "render",
            "--gpus",
            gpus,
            "--out",
            str(out),
            "--cpus",
            "0-7",
            "--memory-total",
            "64G",
            *extra,
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2, err
    assert message in err and "Traceback" not in err
    assert not out.exists()


def test_render_turns_on_signed_pipelines(tmp_path, capsys):
    out = tmp_path / "out"
    args = ["vendor", "render", "--gpus", "0:GPU-a:h100", "--queue", "q", "--out", str(out)]
    args += ["--cpus", "0-7", "--memory-total", "64G"]
    assert main([*args, "--verification-jwks-file", "/etc/kitebench/verify.jwks"]) == 0
    unit = (out / UNITS / "kitebench-agent@.service").read_text()
    assert "Environment=BUILDKITE_AGENT_VERIFICATION_JWKS_FILE=/etc/kitebench/verify.jwks\n" in unit


def test_render_auto_without_nvidia_smi_is_an_infra_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    rc = main(
        [
            "vendor",
            "render",
            "--queue",
            "h100",
            "--out",
            str(tmp_path / "o"),
            "--cpus",
            "0-7",
            "--memory-total",
            "8G",
        ]
    )
    assert rc == 3
    assert "nvidia-smi failed" in capsys.readouterr().err


def test_split_helpers():
    assert parse_cpulist("0-3,8,10-11\n") == [0, 1, 2, 3, 8, 10, 11]
    assert (
        format_cpuset([4]) == "4"
        and format_cpuset([4, 5, 6]) == "4-6"
        and format_cpuset([1, 3]) == "1,3"
    )
    assert [g.index for g in parse_gpu_list(" 1:GPU-b:h100 , 0:GPU-a:h100")] == [1, 0]
    gpus = [GpuInfo(index=i, uuid=f"GPU-{i}", name="h100") for i in (1, 0)]
    plans = plan_gpus(
        gpus,
        queue_for={0: "q", 1: "q"},
        cpu_pool=[0, 1, 2, 3, 8, 9, 10],
        memtotal_mib=4096 + 1001,
        reserve_cpus=1,
    )
    assert [(p.index, p.cpuset, p.cpus, p.memory_bytes) for p in plans] == [
        (0, "1-3", 3, 500 * 2**20),
        (1, "8-10", 3, 500 * 2**20),
    ]
    with pytest.raises(UsageError):
        plan_gpus(gpus, queue_for={0: "q", 1: "q"}, cpu_pool=[0, 1], memtotal_mib=4096)


# --- the hooks ---------------------------------------------------------------------------------


def rendered_hooks(tmp_path: Path, **kit) -> Path:
    from host.provision.render import write_files
    from host.provision.templates import render_files

    gpus = [GpuInfo(index=0, uuid="GPU-visible-0", name="h100")]
    plans = plan_gpus(gpus, queue_for={0: "q"}, cpu_pool=[0, 1], memtotal_mib=8192)
    root = tmp_path / "root"
    write_files(root, render_files(KitSettings(**kit), plans), plans)
    return root / "etc/kitebench/hooks"


def run_hook(path: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(path)], env=env, capture_output=True, text=True, timeout=60)


def test_environment_hook_refuses_a_job_whose_gpu_is_not_visible(tmp_path):
    hooks = rendered_hooks(tmp_path)
    bin_dir = tmp_path / "bin"
    standin(bin_dir, "nvidia-smi", 'echo " GPU-other-1"\necho "GPU-visible-0 "\n')
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "BUILDKITE_AGENT_NAME": "host-gpu0"}
    assert (
        run_hook(hooks / "environment", {**env, "KITEBENCH_GPU_UUID": "GPU-visible-0"}).returncode
        == 0
    )
    gone = run_hook(
        hooks / "environment", {**env, "KITEBENCH_GPU_UUID": "GPU-visible"}
    )  # a prefix is not a match
    assert gone.returncode == 1 and "is not visible" in gone.stderr
    assert run_hook(hooks / "environment", env).returncode == 1
    standin(bin_dir, "nvidia-smi", 'echo "NVIDIA-SMI has failed" >&2\nexit 9\n')
    broken = run_hook(hooks / "environment", {**env, "KITEBENCH_GPU_UUID": "GPU-visible-0"})
    assert broken.returncode == 1 and "nvidia-smi failed" in broken.stderr


def test_pre_exit_hook_removes_only_this_jobs_containers_standin(tmp_path):
    hooks = rendered_hooks(tmp_path)
    bin_dir, log = tmp_path / "bin", tmp_path / "docker.log"
    standin(
        bin_dir, "docker", f'echo "$*" >> {log}\n[ "$1" = ps ] && printf "c1\\nc2\\n"\nexit 0\n'
    )
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "BUILDKITE_JOB_ID": "job-42"}
    assert run_hook(hooks / "pre-exit", env).returncode == 0
    calls = log.read_text().splitlines()
    assert calls == [
        "ps --all --quiet --filter label=dev.kitebench.buildkite-job-id=job-42",
        "rm --force --volumes c1 c2",
    ]


def test_pre_exit_hook_with_real_docker(tmp_path):
    """Containers labelled with this job's id are removed; another job's container stays."""
    if (
        not shutil.which("docker")
        or subprocess.run(["docker", "info"], capture_output=True).returncode
    ):
        missing_prereq("no Docker engine")
    image = "kitebench-base:bookworm"
    if subprocess.run(["docker", "image", "inspect", image], capture_output=True).returncode:
        missing_prereq(f"{image} not built (.ci/setup.d/30-docker.sh)")
    label = "dev.kitebench.buildkite-job-id"
    mine, other = f"job-{uuid.uuid4().hex[:8]}", f"job-{uuid.uuid4().hex[:8]}"
    created = []
    try:
        for job in (mine, mine, other):
            cid = subprocess.run(
                [
                    "docker",
                    "create",
                    "--label",
                    f"{label}={job}",
                    "--network",
                    "none",
                    image,
                    "true",
                ],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
            created.append(cid)
        hooks = rendered_hooks(tmp_path)
        proc = run_hook(hooks / "pre-exit", {"PATH": os.environ["PATH"], "BUILDKITE_JOB_ID": mine})
        assert proc.returncode == 0, proc.stderr

        def left(job: str) -> list[str]:
            return subprocess.run(
                ["docker", "ps", "-aq", "--filter", f"label={label}={job}"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.split()

        assert left(mine) == []
        assert len(left(other)) == 1
    finally:
        subprocess.run(["docker", "rm", "-f", *created], capture_output=True)
