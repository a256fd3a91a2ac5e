"""``kitebench vendor check`` against a fake vendor host: rendered files under a temp root and
stand-in ``nvidia-smi`` / ``systemctl`` / ``docker`` executables on PATH that answer like the real
ones (same arguments, same output formats, same exit codes) from a JSON state file.

One all-PASS host, then one broken thing at a time: exactly that check FAILs (dependants SKIP).
"""

from __future__ import annotations

import json
import os
import stat
import sys
import textwrap
from pathlib import Path

import pytest

from host.provision.check import Status, run_checks
from host.provision.host import Host, SubprocessRunner
from host.provision.plan import GpuInfo, KitSettings, plan_gpus
from host.provision.render import write_files
from host.provision.templates import render_files
from kitebench import main

TOKEN = "bk-secret-token-value-4711"
STANDIN = textwrap.dedent(
    '''\
    #!{python}
    """Stand-in for nvidia-smi, systemctl and docker (by argv[0]), driven by $KITEBENCH_FAKE_HOST."""
    import json, os, sys

    state = json.load(open(os.environ["KITEBENCH_FAKE_HOST"]))
    tool, args = os.path.basename(sys.argv[0]), sys.argv[1:]

    def die(msg, rc):
        print(msg, file=sys.stderr)
        sys.exit(rc)

    if tool == "nvidia-smi":
        if args != ["--query-gpu=index,uuid,name", "--format=csv,noheader"]:
            die("stand-in: unsupported arguments %r" % args, 2)
        if state["nvidia_smi_error"]:
            die("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.", 9)
        for i, uuid, name in state["gpus"]:
            print("%d, %s, %s" % (i, uuid, name))
    elif tool == "systemctl" and args[:1] == ["is-active"]:
        states = [state["active"].get(u, "inactive") for u in args[1:]]
        print("\\n".join(states))
        sys.exit(0 if all(s == "active" for s in states) else 3)
    elif tool == "systemctl" and args[:1] == ["show"] and len(args) == 3:
        props = args[2].removeprefix("--property=").split(",")
        # Like systemd: an unknown unit still shows its (default) properties.
        values = state["slices"].get(args[1], {{"AllowedCPUs": "", "CPUQuotaPerSecUSec": "infinity", "MemoryMax": "infinity"}})
        for p in sorted(props):
            print("%s=%s" % (p, values[p]))
    elif tool == "docker" and state["docker"] is None:
        die("Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?", 1)
    elif tool == "docker" and args == ["info", "--format", "{{{{json .Runtimes}}}}"]:
        print(json.dumps(state["docker"]["runtimes"]))
    elif tool == "docker" and args[:3] == ["image", "inspect", "--format"] and len(args) == 5:
        if args[3] != "{{{{json .RepoDigests}}}} {{{{.Id}}}}":
            die("stand-in: unsupported format", 2)
        image = state["docker"]["images"].get(args[4])
        if image is None:
            die("Error response from daemon: No such image: " + args[4], 1)
        print(json.dumps(image["digests"]) + " " + image["id"])
    else:
        die("stand-in %s: unsupported arguments %r" % (tool, args), 2)
    '''
).format(python=sys.executable)

N = 2
UUIDS = [f"GPU-5c0e{i}a7b-1d2e-4f60-9a8b-7c6d5e4f3a2{i}" for i in range(N)]


class FakeHost:
    def __init__(self, tmp: Path, **kit: object) -> None:
        self.root = tmp / "root"
        self.bin = tmp / "bin"
        self.state_file = tmp / "state.json"
        self.bin.mkdir()
        for tool in ("nvidia-smi", "systemctl", "docker"):
            exe = self.bin / tool
            exe.write_text(STANDIN)
            exe.chmod(0o755)
        gpus = [GpuInfo(index=i, uuid=UUIDS[i], name="NVIDIA H100 80GB HBM3") for i in range(N)]
        self.plans = plan_gpus(
            gpus,
            queue_for=dict.fromkeys(range(N), "h100"),
            cpu_pool=list(range(8)),
            memtotal_mib=36864,
        )
        write_files(
            self.root,
            render_files(KitSettings(image="kitebench-runner:1.0", **kit), self.plans),
            self.plans,
        )
        self.token = self.root / "etc/kitebench/agent-token.env"
        self.token.write_text(f"BUILDKITE_AGENT_TOKEN={TOKEN}\n")
        self.token.chmod(0o600)
        self.state = {
            "gpus": [[i, UUIDS[i], "NVIDIA H100 80GB HBM3"] for i in range(N)],
            "nvidia_smi_error": False,
            "active": {f"kitebench-agent@{i}.service": "active" for i in range(N)},
            "slices": {
                f"kitebench-gpu{p.index}.slice": {
                    "AllowedCPUs": p.cpuset,
                    "CPUQuotaPerSecUSec": f"{p.cpus}s",
                    "MemoryMax": str(p.memory_bytes),
                }
                for p in self.plans
            },
            "docker": {
                "runtimes": {
                    "nvidia": {"path": "nvidia-container-runtime"},
                    "runc": {"path": "runc"},
                },
                "images": {
                    "kitebench-runner:1.0": {
                        "digests": ["registry.example/kitebench-runner@sha256:" + "ab" * 32],
                        "id": "sha256:" + "cd" * 32,
                    }
                },
            },
        }

    def env(self) -> dict[str, str]:
        self.state_file.write_text(json.dumps(self.state))
        return dict(
            os.environ,
            PATH=f"{self.bin}{os.pathsep}{os.environ['PATH']}",
            KITEBENCH_FAKE_HOST=str(self.state_file),
        )

    def check(self, min_free_gib: float = 0.001):
        host = Host(root=self.root, run=SubprocessRunner(env=self.env()))
        return {r.id: r for r in run_checks(host, min_free_gib=min_free_gib)}


@pytest.fixture
def fake(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("the token-file owner checks need root (CI runs as root)")
    return FakeHost(tmp_path)


ALL = [
    "agents",
    "gpu-binding",
    "slices",
    "docker",
    "nvidia-runtime",
    "runner-image",
    "token-file",
    "hooks",
    "agent-lockdown",
    "disk",
]


def test_healthy_host_passes_everything(fake):
    results = fake.check()
    assert list(results) == ALL
    assert {n: r.status for n, r in results.items()} == dict.fromkeys(ALL, Status.PASS), {
        n: r.detail for n, r in results.items()
    }
    assert (
        results["runner-image"]
        .data["images"]["kitebench-runner:1.0"]["repo_digests"][0]
        .endswith("ab" * 32)
    )
    assert "sha256:" + "ab" * 32 in results["runner-image"].detail
    assert results["gpu-binding"].data == {"0": UUIDS[0], "1": UUIDS[1]}


def _break_dropin_uuid(fake):
    p = fake.root / "etc/systemd/system/kitebench-agent@1.service.d/10-kitebench.conf"
    p.write_text(p.read_text().replace(UUIDS[1], UUIDS[0]))


def _chmod(path, mode):
    path.chmod(mode)


HOOKS_DIR = "etc/kitebench/hooks"
TEMPLATE_UNIT = "etc/systemd/system/kitebench-agent@.service"


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, (path, old)
    path.write_text(text.replace(old, new))


def _dropin_sets(fake, line: str) -> None:
    """A drop-in that overrides the template unit (the last Environment= of a key wins)."""
    p = fake.root / "etc/systemd/system/kitebench-agent@1.service.d/10-kitebench.conf"
    p.write_text(p.read_text() + line + "\n")


BREAKAGES = {
    # name: (what to break, the check that must FAIL, checks allowed to SKIP, words in the detail)
    "agent not active": (
        lambda f: f.state["active"].update({"kitebench-agent@1.service": "failed"}),
        "agents",
        (),
        "kitebench-agent@1.service=failed",
    ),
    "GPU without agent": (
        lambda f: f.state["gpus"].append([2, "GPU-extra-0000", "NVIDIA H100 80GB HBM3"]),
        "agents",
        (),
        "GPUs without an agent: [2]",
    ),
    "agent unit missing": (
        lambda f: (f.root / "etc/systemd/system/kitebench-agent@.service").unlink(),
        "agents",
        ("agent-lockdown",),
        "kitebench-agent@.service missing",
    ),
    "UUID not visible": (
        lambda f: f.state["gpus"].__setitem__(1, [1, "GPU-other-1111", "NVIDIA H100 80GB HBM3"]),
        "gpu-binding",
        (),
        "is not visible",
    ),
    "two agents share a GPU": (_break_dropin_uuid, "gpu-binding", (), "share"),
    "nvidia-smi fails": (
        lambda f: f.state.update(nvidia_smi_error=True),
        "gpu-binding",
        (),
        "couldn't communicate",
    ),
    "slice limit not applied": (
        lambda f: f.state["slices"]["kitebench-gpu0.slice"].update(MemoryMax="infinity"),
        "slices",
        (),
        "MemoryMax='infinity'",
    ),
    "CPU quota not applied": (
        lambda f: f.state["slices"]["kitebench-gpu1.slice"].update(CPUQuotaPerSecUSec="1s"),
        "slices",
        (),
        "CPUQuotaPerSecUSec",
    ),
    "slice file missing": (
        lambda f: (f.root / "etc/systemd/system/kitebench-gpu1.slice").unlink(),
        "slices",
        (),
        "kitebench-gpu1.slice missing",
    ),
    "docker unreachable": (
        lambda f: f.state.update(docker=None),
        "docker",
        ("nvidia-runtime", "runner-image"),
        "Cannot connect",
    ),
    "no nvidia runtime": (
        lambda f: f.state["docker"]["runtimes"].pop("nvidia"),
        "nvidia-runtime",
        (),
        "no 'nvidia' runtime",
    ),
    "runner image missing": (
        lambda f: f.state["docker"]["images"].clear(),
        "runner-image",
        (),
        "No such image",
    ),
    "token file world-readable": (lambda f: _chmod(f.token, 0o644), "token-file", (), "mode 0644"),
    "token file not root's": (
        lambda f: os.chown(f.token, 1000, 1000),
        "token-file",
        (),
        "owner uid 1000",
    ),
    "token file missing": (lambda f: f.token.unlink(), "token-file", (), "missing"),
    "token file empty": (
        lambda f: f.token.write_text("# nothing\n"),
        "token-file",
        (),
        "no BUILDKITE_AGENT_TOKEN",
    ),
    "hook not executable": (
        lambda f: _chmod(f.root / "etc/kitebench/hooks/pre-exit", 0o644),
        "hooks",
        (),
        "pre-exit",
    ),
    "pre-command hook missing": (
        lambda f: (f.root / HOOKS_DIR / "pre-command").unlink(),
        "hooks",
        (),
        "pre-command missing",
    ),
    "pre-bootstrap hook missing": (
        lambda f: (f.root / HOOKS_DIR / "pre-bootstrap").unlink(),
        "hooks",
        (),
        "pre-bootstrap missing",
    ),
    "pre-command hook edited": (
        lambda f: _edit(f.root / HOOKS_DIR / "pre-command", "set -euo pipefail\n", "exit 0\n"),
        "hooks",
        (),
        "pre-command differs from what `kitebench vendor render` writes",
    ),
    "pre-command hook owned by the agent user": (
        lambda f: os.chown(f.root / HOOKS_DIR / "pre-command", 1000, 1000),
        "hooks",
        (),
        "pre-command: owner uid 1000, want root",
    ),
    "pre-bootstrap hook group-writable": (
        lambda f: _chmod(f.root / HOOKS_DIR / "pre-bootstrap", 0o775),
        "hooks",
        (),
        "pre-bootstrap: mode 0775 is group/world-writable",
    ),
    "hooks dir world-writable": (
        lambda f: _chmod(f.root / HOOKS_DIR, 0o777),
        "hooks",
        (),
        "/etc/kitebench/hooks: mode 0777",
    ),
    "hooks dir's parent not root's": (
        lambda f: os.chown(f.root / "etc/kitebench", 1000, 1000),
        "hooks",
        (),
        "/etc/kitebench: owner uid 1000",
    ),
    "local hooks allowed": (
        lambda f: _edit(f.root / TEMPLATE_UNIT, "BUILDKITE_NO_LOCAL_HOOKS=true", "X=1"),
        "agent-lockdown",
        (),
        "kitebench-agent@.service: BUILDKITE_NO_LOCAL_HOOKS='', want true",
    ),
    "env allow-list off": (
        lambda f: _edit(
            f.root / TEMPLATE_UNIT, "ENVIRONMENT_VARIABLE_ALLOWLIST=true", "ENVIRONMENT_X=true"
        ),
        "agent-lockdown",
        (),
        "BUILDKITE_ENABLE_ENVIRONMENT_VARIABLE_ALLOWLIST",
    ),
    "a drop-in turns plugins back on": (
        lambda f: _dropin_sets(f, "Environment=BUILDKITE_NO_PLUGINS=false"),
        "agent-lockdown",
        (),
        "kitebench-agent@1.service: its drop-in sets BUILDKITE_NO_PLUGINS='false'",
    ),
    "a drop-in points the agent at other hooks": (
        lambda f: _dropin_sets(f, "Environment=BUILDKITE_HOOKS_PATH=/var/lib/buildkite-agent"),
        "agent-lockdown",
        (),
        "kitebench-agent@1.service: its drop-in sets BUILDKITE_HOOKS_PATH",
    ),
    "no hooks path": (
        lambda f: _edit(f.root / TEMPLATE_UNIT, "Environment=BUILDKITE_HOOKS_PATH=", "X="),
        "agent-lockdown",
        (),
        "no BUILDKITE_HOOKS_PATH",
    ),
}


@pytest.mark.parametrize("case", list(BREAKAGES))
def test_each_breakage_fails_its_check(fake, case):
    breakage, failing, skipping, words = BREAKAGES[case]
    breakage(fake)
    results = fake.check()
    got = {n: r.status for n, r in results.items()}
    want = {
        n: Status.FAIL if n == failing else Status.SKIP if n in skipping else Status.PASS
        for n in ALL
    }
    assert got == want, {n: r.detail for n, r in results.items()}
    assert words in results[failing].detail
    assert TOKEN not in json.dumps([r.as_dict() for r in results.values()])


def test_healthy_host_reports_signed_pipelines_off(fake):
    lockdown = fake.check()["agent-lockdown"]
    assert lockdown.status is Status.PASS and "signed pipelines off" in lockdown.detail
    assert lockdown.data["signed_pipelines"] is False


def test_signed_pipelines_need_the_verification_jwks_on_the_host(fake, tmp_path):
    """With a verification JWKS configured the file must exist and be root's, read-only to others."""
    (tmp_path / "signed").mkdir()
    signed = FakeHost(tmp_path / "signed", verification_jwks_file="/etc/kitebench/verify.jwks")
    results = signed.check()
    assert results["agent-lockdown"].status is Status.FAIL
    assert (
        "verification JWKS /etc/kitebench/verify.jwks missing" in results["agent-lockdown"].detail
    )
    jwks = signed.root / "etc/kitebench/verify.jwks"
    jwks.write_text('{"keys": []}\n')
    jwks.chmod(0o644)
    lockdown = signed.check()["agent-lockdown"]
    assert lockdown.status is Status.PASS, lockdown.detail
    assert "signed pipelines on (/etc/kitebench/verify.jwks)" in lockdown.detail
    jwks.chmod(0o666)
    assert "group/world-writable" in signed.check()["agent-lockdown"].detail


def test_low_disk_fails(fake):
    results = fake.check(min_free_gib=10**9)
    assert results["disk"].status is Status.FAIL
    assert "GiB free" in results["disk"].detail
    assert all(r.status is Status.PASS for n, r in results.items() if n != "disk")


def test_cli_json_and_table(fake, monkeypatch, capsys):
    for key, value in fake.env().items():
        monkeypatch.setenv(key, value)
    assert (
        main(["vendor", "check", "--root", str(fake.root), "--json", "--min-free-gb", "0.001"]) == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True and [c["id"] for c in report["checks"]] == ALL

    fake.token.chmod(0o640)
    fake.env()
    assert main(["vendor", "check", "--root", str(fake.root), "--min-free-gb", "0.001"]) == 1
    out = capsys.readouterr().out
    assert any(line.startswith("FAIL  token-file") for line in out.splitlines()), out
    assert out.splitlines()[-1].startswith("FAIL:")
    assert TOKEN not in out


def test_missing_tools_fail_cleanly(tmp_path, monkeypatch):
    """A bare root with no tools at all: FAILs with reasons, never a traceback."""
    root = tmp_path / "empty"
    root.mkdir()
    env = dict(os.environ, PATH=str(tmp_path / "nobin"))
    results = run_checks(Host(root=root, run=SubprocessRunner(env=env)), min_free_gib=0.001)
    by = {r.id: r for r in results}
    assert (
        by["agents"].status is Status.FAIL
        and "no kitebench-agent@<i> drop-ins" in by["agents"].detail
    )
    assert by["docker"].status is Status.FAIL and "command not found" in by["docker"].detail
    assert by["gpu-binding"].status is Status.FAIL
    assert by["token-file"].status is Status.FAIL
    assert stat.S_ISDIR(root.stat().st_mode)
