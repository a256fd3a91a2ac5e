"""The kitebench_agent role applied for real to a Debian host built here (a debootstrap chroot,
reached through Ansible's chroot connection), twice: the second run must change nothing.

The host gets buildkite-agent from a local stand-in .deb (the real one cannot be fetched here),
the NVIDIA repository switched off (a stand-in toolkit package plays the local mirror's), and
the kit from a wheelhouse. No systemd runs in a chroot, so the agents are enabled, not started.
The debootstrap tarball and the downloaded .debs/wheels are cached under $KITEBENCH_CACHE.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

from tests.common import REPO, missing_prereq

pytestmark = pytest.mark.slow

ANSIBLE_DIR = REPO / "ansible"
CACHE = Path(os.environ.get("KITEBENCH_CACHE", "/var/cache/kitebench")) / "vendor-test"
ROOTFS_TAR = CACHE / "bookworm-ansible-host.tar"
DEBOOTSTRAP_INCLUDE = "python3,python3-apt,systemd,ca-certificates"
def _host_mirror() -> str:
    """The first Debian archive in this machine's apt sources (no public host hard-coded)."""
    sources = sorted(Path("/etc/apt/sources.list.d").glob("*.sources"))
    lists = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*.list"))]
    found: list[str] = []
    for f in sources:
        for line in f.read_text(errors="replace").splitlines():
            if line.strip().startswith("URIs:"):
                found += line.split()[1:]
    for f in lists:
        if f.is_file():
            for line in f.read_text(errors="replace").splitlines():
                words = line.split()
                if words[:1] == ["deb"]:
                    found += [w for w in words[1:] if not w.startswith("[") and "=" not in w][:1]
    return next((u for u in found if "-security" not in u), "")


MIRROR = os.environ.get("KITEBENCH_DEBIAN_MIRROR") or _host_mirror()
#: The kit's own dependencies, read from pyproject.toml (the one list; a copy here drifted).
KIT_DEPS = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
GPUS = [
    {
        "index": 0,
        "uuid": "GPU-0b3f5c2a-1111-4e6f-8a9b-000000000000",
        "model": "NVIDIA H100 80GB HBM3",
    },
    {
        "index": 1,
        "uuid": "GPU-0b3f5c2a-2222-4e6f-8a9b-111111111111",
        "model": "NVIDIA H100 80GB HBM3",
    },
]
TOKEN = "kb-test-registration-token-not-secret"


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, text=True, capture_output=True, **kw)


def build_rootfs_tarball() -> Path:
    """The Debian host's root filesystem, built once with debootstrap and cached as a tarball."""
    if ROOTFS_TAR.is_file():
        return ROOTFS_TAR
    if not MIRROR:
        pytest.fail("no Debian mirror in this host's apt sources: set KITEBENCH_DEBIAN_MIRROR")
    CACHE.mkdir(parents=True, exist_ok=True)
    work = CACHE / "rootfs.build"
    shutil.rmtree(work, ignore_errors=True)
    _run(
        [
            "debootstrap",
            "--variant=minbase",
            f"--include={DEBOOTSTRAP_INCLUDE}",
            "bookworm",
            str(work),
            MIRROR,
        ]
    )
    tmp = ROOTFS_TAR.with_suffix(".tmp")
    _run(["tar", "-C", str(work), "-cf", str(tmp), "."])
    tmp.replace(ROOTFS_TAR)
    shutil.rmtree(work, ignore_errors=True)
    return ROOTFS_TAR


def build_deb(
    workdir: Path, name: str, version: str, files: dict[str, tuple[str, int]], postinst: str = ""
) -> Path:
    """A real .deb (dpkg-deb) holding ``files`` {path: (content, mode)}."""
    pkg = workdir / f"{name}-pkg"
    (pkg / "DEBIAN").mkdir(parents=True)
    (pkg / "DEBIAN" / "control").write_text(
        textwrap.dedent(f"""\
            Package: {name}
            Version: {version}
            Architecture: all
            Maintainer: kitebench tests <tests@kitebench.invalid>
            Description: kitebench test stand-in for {name}
            """)
    )
    if postinst:
        (pkg / "DEBIAN" / "postinst").write_text(postinst)
        (pkg / "DEBIAN" / "postinst").chmod(0o755)
    for path, (content, mode) in files.items():
        dest = pkg / path.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(content)
        dest.chmod(mode)
    out = workdir / f"{name}_{version}_all.deb"
    _run(["dpkg-deb", "--root-owner-group", "--build", str(pkg), str(out)])
    return out


AGENT_STANDIN = """\
#!/bin/sh
# Stand-in for buildkite-agent: same path, same `start` contract (token from the environment).
case "$1" in
  --version|-v) echo "buildkite-agent version 3.99.0, build kitebench-standin"; exit 0 ;;
  start)
    [ -n "$BUILDKITE_AGENT_TOKEN" ] || { echo "fatal: Missing token" >&2; exit 1; }
    exec sleep infinity ;;
  *) echo "buildkite-agent stand-in: $*" >&2; exit 0 ;;
esac
"""
AGENT_UNIT = """\
[Unit]
Description=Buildkite Agent
After=network.target
[Service]
Type=simple
User=buildkite-agent
ExecStart=/usr/bin/buildkite-agent start
Restart=on-failure
[Install]
WantedBy=multi-user.target
"""
AGENT_POSTINST = """\
#!/bin/sh
set -e
# Like the real package: a system user with its home under /var/lib.
getent passwd buildkite-agent >/dev/null || \\
  useradd --system --user-group --create-home --home-dir /var/lib/buildkite-agent \\
          --shell /bin/false buildkite-agent
"""


def wheelhouse(workdir: Path) -> Path:
    """kitebench's wheel (this checkout) plus its dependencies' wheels (cached)."""
    deps = CACHE / "wheels"
    # the marker names the dependency list: a new dependency fetches again
    marker = deps / f".complete-{hashlib.sha256(repr(KIT_DEPS).encode()).hexdigest()[:12]}"
    if not marker.exists():
        deps.mkdir(parents=True, exist_ok=True)
        _run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--only-binary=:all:",
                "-d",
                str(deps),
                *KIT_DEPS,
            ]
        )
        marker.touch()
    house = workdir / "wheelhouse"
    house.mkdir()
    for whl in deps.glob("*.whl"):
        shutil.copy2(whl, house)
    _run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(house), str(REPO)]
    )
    return house


@pytest.fixture(scope="module")
def chroot_host(tmp_path_factory):
    if os.geteuid() != 0:
        missing_prereq("building a chroot needs root")
    for tool in ("debootstrap", "dpkg-deb", "ansible-playbook", "mount"):
        if not shutil.which(tool):
            missing_prereq(f"{tool} not installed (.ci/setup.d/40-ansible.sh)")
    if subprocess.run(
        ["ansible-doc", "-t", "connection", "community.general.chroot"], capture_output=True
    ).returncode:
        missing_prereq("community.general (the `ansible` package) not installed")
    tarball = build_rootfs_tarball()
    work = tmp_path_factory.mktemp("ansible-host")
    root = work / "root"
    root.mkdir()
    _run(["tar", "-C", str(root), "-xf", str(tarball)])
    # A chroot must never start daemons from package scripts.
    policy = root / "usr/sbin/policy-rc.d"
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)
    archives = CACHE / "apt-archives"
    archives.mkdir(parents=True, exist_ok=True)
    for deb in archives.glob("*.deb"):
        shutil.copy2(deb, root / "var/cache/apt/archives")
    _run(["mount", "-t", "proc", "proc", str(root / "proc")])
    try:
        # The site's own mirror provides the toolkit (stand-in): the NVIDIA repo stays off.
        toolkit = build_deb(
            work,
            "nvidia-container-toolkit",
            "1.99.0-standin",
            {"/usr/bin/nvidia-container-runtime": ('#!/bin/sh\nexec runc "$@"\n', 0o755)},
        )
        shutil.copy2(toolkit, root / "tmp")
        _run(["chroot", str(root), "dpkg", "-i", f"/tmp/{toolkit.name}"])
        agent_deb = build_deb(
            work,
            "buildkite-agent",
            "3.99.0-standin",
            {
                "/usr/bin/buildkite-agent": (AGENT_STANDIN, 0o755),
                "/lib/systemd/system/buildkite-agent.service": (AGENT_UNIT, 0o644),
            },
            AGENT_POSTINST,
        )
        yield {"root": root, "work": work, "agent_deb": agent_deb, "wheelhouse": wheelhouse(work)}
    finally:
        for deb in (root / "var/cache/apt/archives").glob("*.deb"):
            if not (archives / deb.name).exists():
                shutil.copy2(deb, archives)
        subprocess.run(["umount", "-l", str(root / "proc")], check=False)
        if not os.path.ismount(root / "proc"):  # never walk into a mounted /proc
            shutil.rmtree(root, ignore_errors=True)


def play(host: dict, *extra: str, gpus: list[dict] = GPUS) -> tuple[str, dict[str, int]]:
    work: Path = host["work"]
    inventory = work / "inventory.json"
    inventory.write_text(
        json.dumps(
            {
                "kitebench_gpu_hosts": {
                    "hosts": {
                        "testhost": {
                            "ansible_connection": "community.general.chroot",
                            "ansible_host": str(host["root"]),
                            "ansible_python_interpreter": "/usr/bin/python3",
                        }
                    }
                }
            }
        )
    )
    variables = work / "vars.json"
    variables.write_text(
        json.dumps(
            {
                "kitebench_agent_queue": "h100-test",
                "kitebench_agent_gpus": gpus,
                "kitebench_agent_nvidia_repo_enabled": False,
                "kitebench_agent_buildkite_source": "deb",
                "kitebench_agent_buildkite_deb": str(host["agent_deb"]),
                "kitebench_agent_kit_wheelhouse": str(host["wheelhouse"]),
                "kitebench_agent_service_state": "",
                "kitebench_agent_token": TOKEN,
            }
        )
    )
    env = dict(
        os.environ,
        ANSIBLE_CONFIG=str(ANSIBLE_DIR / "ansible.cfg"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORCE_COLOR="0",
        ANSIBLE_RETRY_FILES_ENABLED="0",
    )
    proc = subprocess.run(
        ["ansible-playbook", "-i", str(inventory), "-e", f"@{variables}", "site.yml", *extra],
        cwd=ANSIBLE_DIR,
        env=env,
        text=True,
        capture_output=True,
        timeout=1200,
    )
    log = proc.stdout + proc.stderr
    (work / f"play-{len(list(work.glob('play-*.log')))}.log").write_text(log)
    m = re.search(r"^testhost\s*:\s*(.*)$", log, flags=re.MULTILINE)
    assert m, f"no PLAY RECAP (rc {proc.returncode}):\n{log[-6000:]}"
    recap = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m.group(1))}
    assert proc.returncode == 0 and recap["failed"] == 0 and recap["unreachable"] == 0, log[-8000:]
    return log, recap


@pytest.fixture(scope="module")
def provisioned(chroot_host):
    _, fresh_check = play(chroot_host, "--check")  # check mode on a fresh host must not fail
    fresh_files = sorted(
        str(p) for p in (chroot_host["root"] / "etc/systemd/system").glob("kitebench*")
    )
    _, first = play(chroot_host)
    _, second = play(chroot_host)
    _, check = play(chroot_host, "--check")
    return {
        **chroot_host,
        "recaps": (fresh_check, first, second, check),
        "fresh_files": fresh_files,
    }


def test_check_mode_on_a_fresh_host_changes_nothing_there(provisioned):
    fresh_check = provisioned["recaps"][0]
    assert fresh_check["changed"] > 5, fresh_check
    assert provisioned["fresh_files"] == []


def test_second_apply_changes_nothing(provisioned):
    _, first, second, check = provisioned["recaps"]
    assert first["changed"] > 5, first
    assert second["changed"] == 0, second
    assert check["changed"] == 0, check


def test_role_renders_the_same_files_as_kitebench_vendor_render(provisioned):
    """One source of truth: the role's files equal `kitebench vendor render`'s, byte for byte."""
    from host.provision.plan import GpuInfo, KitSettings, plan_gpus
    from host.provision.templates import HOOKS, render_files

    cpuinfo = Path("/proc/cpuinfo").read_text()
    vcpus = len(re.findall(r"^processor\s*:", cpuinfo, flags=re.MULTILINE))
    memtotal = (
        int(re.search(r"^MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text(), re.M).group(1))
        // 1024
    )
    plans = plan_gpus(
        [GpuInfo(index=g["index"], uuid=g["uuid"], name=g["model"]) for g in GPUS],
        queue_for={g["index"]: "h100-test" for g in GPUS},
        cpu_pool=list(range(vcpus)),
        memtotal_mib=memtotal,
    )
    root: Path = provisioned["root"]
    files = render_files(KitSettings(), plans)
    assert len(files) == 2 + 2 * len(GPUS) + len(HOOKS)
    for f in files:
        on_host = root / f.path.lstrip("/")
        assert on_host.read_text() == f.content, f.path
        assert on_host.stat().st_mode & 0o777 == f.mode, f.path


def test_host_is_provisioned(provisioned):
    root: Path = provisioned["root"]
    wants = root / "etc/systemd/system/multi-user.target.wants"
    for g in GPUS:
        assert (wants / f"kitebench-agent@{g['index']}.service").is_symlink()
    token = root / "etc/kitebench/agent-token.env"
    st = token.stat()
    assert (st.st_mode & 0o777, st.st_uid, st.st_gid) == (0o600, 0, 0)
    assert token.read_text() == f"BUILDKITE_AGENT_TOKEN={TOKEN}\n"
    daemon = json.loads((root / "etc/docker/daemon.json").read_text())
    assert daemon["runtimes"]["nvidia"]["path"] == "nvidia-container-runtime"

    def chroot(*cmd: str) -> str:
        return _run(["chroot", str(root), *cmd]).stdout

    assert "install ok installed" in chroot("dpkg-query", "-W", "-f=${Status}", "docker.io")
    assert chroot("dpkg-query", "-W", "-f=${Version}", "buildkite-agent") == "3.99.0-standin"
    assert "docker" in chroot("id", "-nG", "buildkite-agent").split()
    assert "kitebench" in chroot("/usr/local/bin/kitebench", "--version")
    assert "render" in chroot("/usr/local/bin/kitebench", "vendor", "--help")


def test_the_job_policy_hooks_are_installed_and_enforced(provisioned):
    """The role installs pre-bootstrap/pre-command as `vendor check` wants them (root's, exactly
    the rendered script), and the installed hook, run by the host's own bash, lets the pipeline's
    job through and refuses anything else."""
    from host.provision.check import Checker, Status
    from host.provision.host import Host

    root: Path = provisioned["root"]
    hooks = Checker(Host(root=root)).check_hooks()
    assert hooks.status is Status.PASS, hooks.detail
    lockdown = Checker(Host(root=root)).check_lockdown()
    assert lockdown.status is Status.PASS, lockdown.detail
    for command, rc in (("kitebench job", 0), ("kitebench job; id", 1), ("id", 1)):
        env_file = root / "tmp/job-env"
        env_file.write_text(f'BUILDKITE_COMMAND={json.dumps(command)}\nGPU_QUEUE="h100"\n')
        proc = subprocess.run(
            [
                "chroot",
                str(root),
                "/usr/bin/env",
                "-i",
                "PATH=/usr/bin:/bin",
                "BUILDKITE_ENV_FILE=/tmp/job-env",
                "/etc/kitebench/hooks/pre-bootstrap",
            ],
            capture_output=True,
            text=True,
        )
        assert proc.returncode == rc, (command, proc.stderr)
        assert ("refusing this job" in proc.stderr) == bool(rc)


def test_provisioned_units_pass_systemd_analyze_verify(provisioned):
    """The real units on the provisioned host, against its own systemd, docker and agent."""
    if not shutil.which("systemd-analyze"):
        missing_prereq("systemd-analyze not installed")
    units = [f"kitebench-agent@{g['index']}.service" for g in GPUS] + [
        f"kitebench-gpu{g['index']}.slice" for g in GPUS
    ]
    proc = subprocess.run(
        ["systemd-analyze", "verify", f"--root={provisioned['root']}", *units],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert "kitebench" not in proc.stderr, proc.stderr


def test_a_gpu_that_is_gone_loses_its_agent(provisioned):
    """Re-provisioned with one GPU fewer: that agent is disabled and its files removed. (Last:
    it changes the shared host.)"""
    root: Path = provisioned["root"]
    units = root / "etc/systemd/system"
    _, recap = play(provisioned, gpus=GPUS[:1])
    assert recap["changed"] > 0
    assert not (units / "kitebench-agent@1.service.d").exists()
    assert not (units / "kitebench-gpu1.slice").exists()
    assert not (units / "multi-user.target.wants/kitebench-agent@1.service").exists()
    assert (units / "kitebench-agent@0.service.d/10-kitebench.conf").exists()
    assert (units / "multi-user.target.wants/kitebench-agent@0.service").is_symlink()
    _, again = play(provisioned, gpus=GPUS[:1])
    assert again["changed"] == 0, again
