"""``kitebench vendor check``: the go-live checklist of a vendor host, as data.

Each check returns PASS, FAIL or SKIP (cannot be judged because something it needs failed) with
a one-line detail. Everything is read through a :class:`Host` (root dir + command runner), so
the same code runs on a real host and against a fake root with stand-in executables.
What is expected comes from the host itself: the rendered drop-ins and slices say which GPU,
CPU set and memory each agent was given; the check proves reality matches them.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from host.checks import CheckResult, Status
from host.provision.host import Host
from host.provision.perms import dirs_up, tamperable
from host.provision.plan import KitSettings, parse_cpulist, parse_nvidia_smi
from host.provision.render import NVIDIA_SMI_QUERY
from host.provision.templates import (
    AGENT_UNIT,
    DROPIN_NAME,
    HOOKS,
    POLICY_HOOKS,
    UNIT_DIR,
    agent_instance,
    gpu_slice,
    render_hook,
)
from host.provision.units import parse_show, parse_timespan_us, parse_unit, unit_environment
from launcher.errors import UsageError

DEFAULT_TOKEN_FILE = "/etc/kitebench/agent-token.env"
DEFAULT_HOOKS_DIR = "/etc/kitebench/hooks"
BUILD_ROOT = "/var/lib/kitebench"  # %S/kitebench/agent-<i>/builds of the template unit
#: Agent options (the unit's Environment=) that must be on: see the template unit's comment.
LOCKDOWN_ON = (
    "BUILDKITE_NO_LOCAL_HOOKS",
    "BUILDKITE_NO_PLUGINS",
    "BUILDKITE_ENABLE_ENVIRONMENT_VARIABLE_ALLOWLIST",
)
JWKS_KEY = "BUILDKITE_AGENT_VERIFICATION_JWKS_FILE"


@dataclass
class Agent:
    """One configured agent instance, as its drop-in and slice describe it."""

    index: int
    env: dict[str, str]
    slice_limits: dict[str, str] | None  # None: no slice file

    @property
    def uuid(self) -> str:
        return self.env.get("KITEBENCH_GPU_UUID", "")


class Checker:
    def __init__(self, host: Host, *, min_free_gib: float = 20.0) -> None:
        self.host = host
        self.min_free_gib = min_free_gib
        self._cache: dict[str, object] = {}

    # --- what the host is configured to be --------------------------------------------------

    def unit_dir(self) -> Path:
        return self.host.path(UNIT_DIR)

    def template(self) -> dict[str, list[str]]:
        try:
            return parse_unit((self.unit_dir() / AGENT_UNIT).read_text())
        except OSError:
            return {}

    def agents(self) -> list[Agent]:
        agents = []
        for dropin in self.unit_dir().glob(f"kitebench-agent@*.service.d/{DROPIN_NAME}"):
            m = re.fullmatch(r"kitebench-agent@(\d+)\.service\.d", dropin.parent.name)
            if not m:
                continue
            index = int(m.group(1))
            env = unit_environment(parse_unit(dropin.read_text()).get("Environment", []))
            slice_path = self.unit_dir() / gpu_slice(index)
            limits = None
            if slice_path.is_file():
                limits = {k: v[-1] for k, v in parse_unit(slice_path.read_text()).items()}
            agents.append(Agent(index, env, limits))
        return sorted(agents, key=lambda a: a.index)

    def visible_gpus(self):
        """(gpus, error) from nvidia-smi, run once."""
        if "gpus" not in self._cache:
            res = self.host.run(["nvidia-smi", *NVIDIA_SMI_QUERY])
            if not res.ok:
                self._cache["gpus"] = ([], f"nvidia-smi failed: {res.brief()}")
            else:
                try:
                    self._cache["gpus"] = (parse_nvidia_smi(res.stdout), None)
                except Exception as e:  # unparsable output is a failed check, not a crash
                    self._cache["gpus"] = ([], f"nvidia-smi output not understood: {e}")
        return self._cache["gpus"]

    def docker_runtimes(self):
        """(runtimes, error) from ``docker info``, run once."""
        if "docker" not in self._cache:
            res = self.host.run(["docker", "info", "--format", "{{json .Runtimes}}"])
            if not res.ok:
                self._cache["docker"] = (None, f"docker info failed: {res.brief()}")
            else:
                try:
                    self._cache["docker"] = (json.loads(res.stdout or "{}") or {}, None)
                except ValueError:
                    self._cache["docker"] = (None, "docker info output not understood")
        return self._cache["docker"]

    # --- the checks ---------------------------------------------------------------------------

    def check_agents(self) -> CheckResult:
        name = "agents"
        agents = self.agents()
        gpus, err = self.visible_gpus()
        if not agents:
            return CheckResult(name, Status.FAIL, f"no kitebench-agent@<i> drop-ins in {UNIT_DIR}")
        if not (self.unit_dir() / AGENT_UNIT).is_file():
            return CheckResult(name, Status.FAIL, f"{AGENT_UNIT} missing in {UNIT_DIR}")
        units = [agent_instance(a.index) for a in agents]
        res = self.host.run(["systemctl", "is-active", *units])
        states = res.stdout.split()
        if len(states) != len(units):
            return CheckResult(name, Status.FAIL, f"systemctl is-active failed: {res.brief()}")
        state_of = dict(zip(units, states, strict=True))
        inactive = [f"{u}={s}" for u, s in state_of.items() if s != "active"]
        data = {"units": state_of}
        problems = []
        if inactive:
            problems.append("not active: " + ", ".join(inactive))
        if err is None:
            configured = {a.index for a in agents}
            missing = sorted(g.index for g in gpus if g.index not in configured)
            if missing:
                problems.append(f"GPUs without an agent: {missing}")
            if len(agents) > len(gpus):
                problems.append(f"{len(agents)} agents for {len(gpus)} GPUs")
        if problems:
            return CheckResult(name, Status.FAIL, "; ".join(problems), data)
        detail = f"{len(agents)} agents active" + ("" if err else f" for {len(gpus)} GPUs")
        return CheckResult(name, Status.PASS, detail, data)

    def check_gpu_binding(self) -> CheckResult:
        name = "gpu-binding"
        agents = self.agents()
        gpus, err = self.visible_gpus()
        if err:
            return CheckResult(name, Status.FAIL, err)
        if not agents:
            return CheckResult(name, Status.SKIP, "no agents configured")
        visible = {g.uuid: g.index for g in gpus}
        problems = []
        seen: dict[str, int] = {}
        for a in agents:
            if not a.uuid:
                problems.append(f"agent {a.index} has no KITEBENCH_GPU_UUID")
            elif a.uuid in seen:
                problems.append(f"agents {seen[a.uuid]} and {a.index} share {a.uuid}")
            elif a.uuid not in visible:
                problems.append(f"agent {a.index}: {a.uuid} is not visible")
            elif visible[a.uuid] != a.index:
                problems.append(f"agent {a.index}: {a.uuid} is GPU {visible[a.uuid]}")
            seen.setdefault(a.uuid, a.index)
        data = {str(a.index): a.uuid for a in agents}
        if problems:
            return CheckResult(name, Status.FAIL, "; ".join(problems), data)
        return CheckResult(name, Status.PASS, f"{len(agents)} distinct visible GPU UUIDs", data)

    def check_slices(self) -> CheckResult:
        name = "slices"
        agents = self.agents()
        if not agents:
            return CheckResult(name, Status.SKIP, "no agents configured")
        problems = []
        data = {}
        claimed: dict[int, int] = {}
        for a in agents:
            unit = gpu_slice(a.index)
            if a.slice_limits is None:
                problems.append(f"{unit} missing")
                continue
            want = self._slice_expectation(a, problems)
            if want is None:
                continue
            for cpu in want["cpus"]:
                if cpu in claimed:
                    problems.append(
                        f"CPU {cpu} is in the slices of GPUs {claimed[cpu]} and {a.index}"
                    )
                claimed.setdefault(cpu, a.index)
            res = self.host.run(
                ["systemctl", "show", unit, "--property=AllowedCPUs,CPUQuotaPerSecUSec,MemoryMax"]
            )
            if not res.ok:
                problems.append(f"systemctl show {unit} failed: {res.brief()}")
                continue
            got = parse_show(res.stdout)
            got_cpus = parse_cpulist(got.get("AllowedCPUs", "")) if got.get("AllowedCPUs") else []
            got_mem = got.get("MemoryMax", "")
            got_quota = parse_timespan_us(got.get("CPUQuotaPerSecUSec", ""))
            data[unit] = got
            if got_cpus != want["cpus"]:
                problems.append(
                    f"{unit}: AllowedCPUs={got.get('AllowedCPUs', '')!r}, want {want['cpuset']}"
                )
            if got_mem != str(want["memory"]):
                problems.append(f"{unit}: MemoryMax={got_mem!r}, want {want['memory']}")
            if got_quota != want["quota_us"]:
                problems.append(
                    f"{unit}: CPUQuotaPerSecUSec={got.get('CPUQuotaPerSecUSec', '')!r}, want {want['quota_us']}us"
                )
        if problems:
            return CheckResult(name, Status.FAIL, "; ".join(problems), data)
        return CheckResult(name, Status.PASS, f"{len(agents)} slices carry their limits", data)

    @staticmethod
    def _slice_expectation(a: Agent, problems: list[str]) -> dict | None:
        """The limits the slice file configures, cross-checked with the drop-in's isolation env."""
        lim = a.slice_limits or {}
        unit = gpu_slice(a.index)
        try:
            cpus = parse_cpulist(lim["AllowedCPUs"])
            memory = int(lim["MemoryMax"])
            quota = lim["CPUQuota"]
            if not quota.endswith("%"):
                raise ValueError(quota)
            quota_us = round(float(quota[:-1]) * 10_000)
        except (KeyError, ValueError, UsageError) as e:
            problems.append(f"{unit}: AllowedCPUs/CPUQuota/MemoryMax not configured ({e})")
            return None
        if a.env.get("KITEBENCH_CPUSET") and parse_cpulist(a.env["KITEBENCH_CPUSET"]) != cpus:
            problems.append(f"{unit}: AllowedCPUs differs from the agent's KITEBENCH_CPUSET")
        if a.env.get("KITEBENCH_MEMORY") and a.env["KITEBENCH_MEMORY"] != str(memory):
            problems.append(f"{unit}: MemoryMax differs from the agent's KITEBENCH_MEMORY")
        return {"cpus": cpus, "cpuset": lim["AllowedCPUs"], "memory": memory, "quota_us": quota_us}

    def check_docker(self) -> CheckResult:
        runtimes, err = self.docker_runtimes()
        if err:
            return CheckResult("docker", Status.FAIL, err)
        return CheckResult(
            "docker", Status.PASS, "docker engine reachable", {"runtimes": sorted(runtimes)}
        )

    def check_nvidia_runtime(self) -> CheckResult:
        name = "nvidia-runtime"
        runtimes, err = self.docker_runtimes()
        if err:
            return CheckResult(name, Status.SKIP, "docker not reachable")
        if "nvidia" not in runtimes:
            return CheckResult(
                name,
                Status.FAIL,
                f"docker has no 'nvidia' runtime (has: {', '.join(sorted(runtimes)) or 'none'})",
            )
        return CheckResult(
            name, Status.PASS, f"nvidia runtime: {runtimes['nvidia'].get('path', '?')}"
        )

    def check_image(self) -> CheckResult:
        name = "runner-image"
        images = sorted(
            {a.env["KITEBENCH_IMAGE"] for a in self.agents() if a.env.get("KITEBENCH_IMAGE")}
        )
        if not images:
            return CheckResult(name, Status.FAIL, "no agent sets KITEBENCH_IMAGE")
        _, err = self.docker_runtimes()
        if err:
            return CheckResult(name, Status.SKIP, "docker not reachable", {"images": images})
        found, problems = {}, []
        for image in images:
            res = self.host.run(
                ["docker", "image", "inspect", "--format", "{{json .RepoDigests}} {{.Id}}", image]
            )
            if not res.ok:
                problems.append(f"{image} not present: {res.brief()}")
                continue
            digests_json, _, image_id = res.stdout.strip().rpartition(" ")
            try:
                digests = json.loads(digests_json or "[]") or []
            except ValueError:
                digests = []
            found[image] = {"id": image_id, "repo_digests": digests}
        if problems:
            return CheckResult(name, Status.FAIL, "; ".join(problems), {"images": found})
        detail = ", ".join(f"{i} {(v['repo_digests'] or [v['id']])[0]}" for i, v in found.items())
        return CheckResult(name, Status.PASS, detail, {"images": found})

    def check_token(self) -> CheckResult:
        name = "token-file"
        files = [f.lstrip("-") for f in self.template().get("EnvironmentFile", [])]
        path = files[0] if files else DEFAULT_TOKEN_FILE
        p = self.host.path(path)
        try:
            st = p.stat()
        except OSError:
            return CheckResult(name, Status.FAIL, f"{path} missing")
        problems = []
        if st.st_mode & 0o777 != 0o600:
            problems.append(f"mode {st.st_mode & 0o777:04o}, want 0600")
        if st.st_uid != 0:
            problems.append(f"owner uid {st.st_uid}, want root")
        try:
            # Only whether a non-empty token is set: the value itself is never read into output.
            has_token = any(
                re.match(r"\s*BUILDKITE_AGENT_TOKEN\s*=\s*\S", line)
                for line in p.read_text().splitlines()
            )
        except OSError as e:
            return CheckResult(name, Status.FAIL, f"{path} unreadable: {e.strerror}")
        if not has_token:
            problems.append("no BUILDKITE_AGENT_TOKEN= line")
        if problems:
            return CheckResult(name, Status.FAIL, f"{path}: " + "; ".join(problems), {"path": path})
        return CheckResult(name, Status.PASS, f"{path} 0600 root", {"path": path})

    def agent_environment(self) -> dict[str, str]:
        """The template unit's ``Environment=`` (host-wide; drop-ins are checked separately)."""
        return unit_environment(self.template().get("Environment", []))

    def check_hooks(self) -> CheckResult:
        """Every hook present, executable, root's and not writable by anyone else (the agent user
        must not be able to rewrite the job policy), the policy hooks exactly as render writes."""
        name = "hooks"
        hooks_dir = self.agent_environment().get("BUILDKITE_HOOKS_PATH", DEFAULT_HOOKS_DIR)
        problems = [
            f"{d}: {why}" for d in dirs_up(hooks_dir) if (why := tamperable(self.host.path(d)))
        ]
        for hook in HOOKS:
            p = self.host.path(f"{hooks_dir}/{hook}")
            if not p.is_file():
                problems.append(f"{hook} missing")
                continue
            if not p.stat().st_mode & 0o111:
                problems.append(f"{hook} not executable")
            if why := tamperable(p):
                problems.append(f"{hook}: {why}")
            if hook in POLICY_HOOKS and p.read_bytes() != render_hook(hook, KitSettings()).encode():
                problems.append(f"{hook} differs from what `kitebench vendor render` writes")
        data = {"hooks_dir": hooks_dir, "hooks": list(HOOKS)}
        if problems:
            return CheckResult(name, Status.FAIL, f"in {hooks_dir}: " + "; ".join(problems), data)
        return CheckResult(name, Status.PASS, f"{', '.join(HOOKS)} in {hooks_dir}, root's", data)

    def check_lockdown(self) -> CheckResult:
        """The agent options that keep code other than `kitebench job` off the host: the hooks
        path, no local hooks, no plugins, the env allow-list. Signed pipelines are reported."""
        name = "agent-lockdown"
        if not (self.unit_dir() / AGENT_UNIT).is_file():
            return CheckResult(name, Status.SKIP, f"{AGENT_UNIT} missing")
        template = self.agent_environment()
        problems = []
        if not template.get("BUILDKITE_HOOKS_PATH"):
            problems.append(f"{AGENT_UNIT}: no BUILDKITE_HOOKS_PATH (the job policy hooks)")
        for key in LOCKDOWN_ON:
            if template.get(key, "").lower() not in ("true", "1"):
                problems.append(f"{AGENT_UNIT}: {key}={template.get(key, '')!r}, want true")
        # A drop-in's Environment= overrides the template's for that agent.
        for a in self.agents():
            for key in (*LOCKDOWN_ON, "BUILDKITE_HOOKS_PATH", JWKS_KEY):
                if key in a.env and a.env[key] != template.get(key):
                    problems.append(
                        f"{agent_instance(a.index)}: its drop-in sets {key}={a.env[key]!r}"
                        f" over the template's {template.get(key)!r}"
                    )
        jwks = template.get(JWKS_KEY, "")
        data = {"signed_pipelines": bool(jwks), "verification_jwks_file": jwks or None}
        if jwks:
            p = self.host.path(jwks)
            if not p.is_file():
                problems.append(f"verification JWKS {jwks} missing")
            elif why := tamperable(p):
                problems.append(f"verification JWKS {jwks}: {why}")
        if problems:
            return CheckResult(name, Status.FAIL, "; ".join(problems), data)
        signed = f"signed pipelines on ({jwks})" if jwks else "signed pipelines off"
        return CheckResult(
            name, Status.PASS, f"no local hooks, no plugins, env allow-list; {signed}", data
        )

    def check_disk(self) -> CheckResult:
        name = "disk"
        p = self.host.path(BUILD_ROOT)
        while (
            not p.exists() and p != p.parent
        ):  # not created yet: measure the filesystem it will be on
            p = p.parent
        free = shutil.disk_usage(p).free / 2**30
        data = {"path": BUILD_ROOT, "free_gib": round(free, 1), "min_free_gib": self.min_free_gib}
        if free < self.min_free_gib:
            return CheckResult(
                name,
                Status.FAIL,
                f"{free:.1f} GiB free for {BUILD_ROOT}, want {self.min_free_gib:g}",
                data,
            )
        return CheckResult(name, Status.PASS, f"{free:.1f} GiB free for {BUILD_ROOT}", data)

    def all_checks(self) -> list[Callable[[], CheckResult]]:
        return [
            self.check_agents,
            self.check_gpu_binding,
            self.check_slices,
            self.check_docker,
            self.check_nvidia_runtime,
            self.check_image,
            self.check_token,
            self.check_hooks,
            self.check_lockdown,
            self.check_disk,
        ]

    def run(self) -> list[CheckResult]:
        results = []
        for check in self.all_checks():
            try:
                results.append(check())
            except Exception as e:  # a broken check is a FAIL with a reason, never a traceback
                results.append(
                    CheckResult(check.__name__.removeprefix("check_"), Status.FAIL, f"error: {e}")
                )
        return results


def run_checks(host: Host, *, min_free_gib: float = 20.0) -> list[CheckResult]:
    return Checker(host, min_free_gib=min_free_gib).run()


def format_table(results: list[CheckResult]) -> str:
    width = max(len(r.id) for r in results)
    lines = [f"{r.status:<4}  {r.id:<{width}}  {r.detail}" for r in results]
    failed = sum(r.status == Status.FAIL for r in results)
    skipped = sum(r.status == Status.SKIP for r in results)
    lines.append(
        f"{'FAIL' if failed else 'PASS'}: {failed} of {len(results)} checks failed"
        + (f", {skipped} skipped" if skipped else "")
    )
    return "\n".join(lines)
