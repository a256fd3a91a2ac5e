"""``kitebench image validate IMAGE``: is this runner image fit to go live on a GPU host?

Each check gives PASS / FAIL / SKIP with a reason a vendor can act on. Containers run with the
vendor host's isolation (host.container.container_kwargs: read-only root, no network,
non-root, limits), so an image that passes here behaves the same under ``kitebench job``.
The image is never pulled. GPU checks SKIP without ``--gpu`` or without an NVIDIA runtime.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from host import image_probes as probes
from host.checks import CheckResult, Status, counts
from host.image_probes import CONTAINER_TIMEOUT_S, ProbeContainer, payload_env

#: The limits the limits check sets and expects to see inside.
PROBE_MEMORY = 256 * 2**20
PROBE_CPUSET = "0"
#: The per-run timeout of the sleeping payload, and the host's hard limit around it.
SLEEP_TIMEOUT_S = 3

@dataclass
class Report:
    image: str
    gpu: str | None
    checks: list[CheckResult] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return any(c.status == "FAIL" for c in self.checks)

    def counts(self) -> dict[str, int]:
        return counts(self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {"image": self.image, "gpu": self.gpu, "ok": not self.failed,
                "counts": self.counts(), "checks": [c.as_dict() for c in self.checks]}


#: (id, title, what it proves) in the order they run: the plan printed before any runs.
PLAN: list[tuple[str, str, str]] = [
    ("image", "image present", "the image is on this host (kitebench never pulls)"),
    ("user", "non-root user", "the image's USER is not root"),
    ("python", "python", "the image's Python runs; version reported"),
    ("runner", "runner installed", "`import runner` works in the image's Python"),
    ("torch", "torch", "torch imports; version and its CUDA reported"),
    ("cuda", "CUDA toolkit", "nvcc is present (needed for lang: cu); version reported"),
    ("entrypoint", "entry point", "the ENTRYPOINT runs a bundled payload and writes a valid result.json"),
    ("limits", "limits visible", "the container sees its memory limit and cpuset"),
    ("sandbox", "submission uid", "the runner starts the submission under its own uid, not its own"),
    ("timeout", "payload timeout", "a sleeping payload is killed at its timeout"),
    ("missing_payload", "missing payload", "no payload → a failed result.json with a clear error"),
    ("invalid_payload", "invalid payload", "a broken payload → a failed result.json with a clear error"),
    ("gpu_visible", "one GPU visible", "exactly the pinned GPU is visible (nvidia-smi -L)"),
    ("cuda_matmul", "CUDA matmul", "a torch matmul runs on the GPU"),
]


def parse_gpu(value: str | None) -> dict[str, Any]:
    """``--gpu`` → HostSettings fields: a UUID (GPU-.../MIG-...) or a host index."""
    if not value:
        return {}
    if value.isdigit():
        return {"gpu_index": int(value)}
    return {"gpu_uuid": value}


def _tail(text: str, n: int = 3) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return " | ".join(lines[-n:])[-400:]


def _python_of(image_attrs: dict[str, Any]) -> list[str]:
    ep = (image_attrs.get("Config") or {}).get("Entrypoint") or []
    if ep and "python" in Path(ep[0]).name:
        return [ep[0]]
    return ["python3"]


def validate_image(
    image: str,
    *,
    gpu: str | None = None,
    client: Any = None,
    on_result: Callable[[CheckResult], None] | None = None,
) -> Report:
    """Run every check of :data:`PLAN` against ``image`` (present on this docker engine)."""
    from host.settings import HostSettings

    report = Report(image=image, gpu=gpu)
    titles = {cid: title for cid, title, _ in PLAN}

    def add(cid: str, status: str, reason: str, **details: Any) -> None:
        r = CheckResult(cid, Status(status), reason, details, title=titles[cid])
        report.checks.append(r)
        if on_result is not None:
            on_result(r)

    def skip_rest(reason: str) -> None:
        done = {c.id for c in report.checks}
        for cid, _t, _w in PLAN:
            if cid not in done:
                add(cid, "SKIP", reason)

    if client is None:
        from host.engine import docker_client

        client = docker_client()
    from docker.errors import ImageNotFound

    # -- image present ---------------------------------------------------------------------
    try:
        img = client.images.get(image)
    except ImageNotFound:
        add("image", "FAIL", f"{image} is not on this host: build it (images/README.md) or "
                             f"`docker pull {image}`; kitebench never pulls implicitly")
        skip_rest("the image is missing")
        return report
    labels = img.labels or {}
    version = labels.get("org.opencontainers.image.version", "?")
    revision = labels.get("org.opencontainers.image.revision", "?")
    add("image", "PASS", f"{img.id[:19]} (version {version}, revision {revision[:12]})",
        id=img.id, version=version, revision=revision, digests=img.attrs.get("RepoDigests") or [])

    # -- user --------------------------------------------------------------------------------
    user = (img.attrs.get("Config") or {}).get("User") or ""
    if user.split(":")[0] in ("", "0", "root"):
        add("user", "FAIL", f"the image runs as {user or 'root (no USER)'}: add a "
                            "non-root USER to the Dockerfile (kitebench job starts it as root "
                            "with four capabilities and runs the submission as 10001, but run "
                            "by hand it must not be root)", user=user)
    else:
        add("user", "PASS", f"USER {user}", user=user)

    gpu_fields = parse_gpu(gpu)
    base = HostSettings(memory_bytes=1024 * 2**20, pids_limit=512, **gpu_fields)
    box = ProbeContainer(client, img.id, base)
    nogpu = HostSettings(memory_bytes=1024 * 2**20, pids_limit=512)
    python = _python_of(img.attrs)

    # -- versions (one container) ----------------------------------------------------------
    ver = box.run({}, entrypoint=python, command=["-c", probes.VERSIONS], settings=nogpu, timeout_s=120)
    found: dict[str, Any] = {}
    for line in (ver.get("logs") or "").splitlines():
        if line.startswith("KITEBENCH-VERSIONS "):
            found = json.loads(line.split(" ", 1)[1])
    if not found:
        why = ver.get("start_error") or _tail(ver.get("logs") or "") or "no output"
        add("python", "FAIL", f"{' '.join(python)} does not run in the image ({why}): the image "
                              "needs Python 3.11+ (the ENTRYPOINT's interpreter)", **ver_summary(ver))
        for cid in ("runner", "torch", "cuda"):
            add(cid, "SKIP", "Python does not run")
    else:
        add("python", "PASS", f"Python {found['python']} ({' '.join(python)})", python=found["python"])
        if "runner" in found and "runner_error" not in found:
            add("runner", "PASS", f"runner {found['runner']}", version=found["runner"])
        else:
            add("runner", "FAIL", f"`import runner` fails ({found.get('runner_error')}): install the "
                                  "runner into the image's Python as images/runner/Dockerfile does "
                                  "(runner/ into site-packages + pydantic)")
        if "torch" in found:
            add("torch", "PASS", f"torch {found['torch']}, CUDA {found.get('torch_cuda') or 'none (CPU build)'}",
                version=found["torch"], cuda=found.get("torch_cuda"))
        else:
            add("torch", "SKIP", "torch is not installed in this image (built with INSTALL_TORCH=0?): "
                                 "tasks that import torch will fail; fine for NumPy/plain-Python tasks")
        if found.get("nvcc"):
            add("cuda", "PASS", found["nvcc"], nvcc=found["nvcc"])
        else:
            add("cuda", "SKIP", "no nvcc in the image (not a CUDA devel base): lang cu tasks cannot "
                                "compile; use an nvidia/cuda *devel* BASE_IMAGE for them")

    # -- entry point + limits (one probe run through the ENTRYPOINT) ---------------------------
    probe_settings = HostSettings(memory_bytes=PROBE_MEMORY, cpuset=PROBE_CPUSET, pids_limit=512)
    probe = box.run(payload_env(probes.PROBE), settings=probe_settings)
    result = probe.get("result")
    if result is not None and result.passed:
        add("entrypoint", "PASS", f"bundled payload passed in {probe.get('duration_s')} s; "
                                  "result.json valid", duration_s=probe.get("duration_s"))
        facts = result.runs["test"].run.result if result.runs.get("test") and result.runs["test"].run else {}
        mem_ok = facts.get("memory_limit") == str(PROBE_MEMORY)
        cpu_ok = facts.get("cpuset") == PROBE_CPUSET
        if mem_ok and cpu_ok:
            add("limits", "PASS", f"memory limit {PROBE_MEMORY // 2**20} MiB and cpuset "
                                  f"{PROBE_CPUSET} seen inside", **facts)
        else:
            add("limits", "FAIL", f"inside the container memory limit = {facts.get('memory_limit')!r} "
                                  f"(want {PROBE_MEMORY}), cpuset = {facts.get('cpuset')!r} (want "
                                  f"{PROBE_CPUSET!r}): check the docker engine's cgroup setup", **facts)
        sandbox = result.kitebench.isolation.get("sandbox") or {}
        want_uid = str(probe_settings.submission_ids[0])
        if sandbox.get("mode") == "uid" and facts.get("uid") == want_uid:
            add("sandbox", "PASS", f"the submission ran as uid {want_uid}, the runner as root "
                                   "with four capabilities", uid=want_uid)
        else:
            add("sandbox", "FAIL", f"the submission ran as uid {facts.get('uid')!r} (sandbox "
                                   f"{sandbox.get('mode')!r}; want uid {want_uid}): the image's "
                                   "runner is older than the host's or cannot change uid",
                **{"uid": facts.get("uid"), "sandbox": sandbox.get("mode")})
    else:
        add("entrypoint", "FAIL", _entrypoint_failure(probe, img.attrs), **ver_summary(probe))
        add("limits", "SKIP", "the entry point does not run")
        add("sandbox", "SKIP", "the entry point does not run")

    runs_ok = result is not None and result.passed
    # -- payload timeout -----------------------------------------------------------------------
    if not runs_ok:
        add("timeout", "SKIP", "the entry point does not run")
    else:
        slept = box.run(payload_env(probes.SLEEP, test_timeout=SLEEP_TIMEOUT_S), timeout_s=60)
        r = slept.get("result")
        if r is not None and "timed out" in r.error and not r.passed:
            add("timeout", "PASS", f"killed at its {SLEEP_TIMEOUT_S} s timeout "
                                   f"(container done in {slept.get('duration_s')} s)")
        else:
            add("timeout", "FAIL", "a payload sleeping past its timeout was not killed by the runner "
                                   f"({_describe(slept)}): the runner in the image is too old or broken")

    # -- missing / invalid payload -------------------------------------------------------------
    for cid, env, expect in (
        ("missing_payload", {}, "SUBMISSION_PAYLOAD"),
        ("invalid_payload", {"SUBMISSION_PAYLOAD": "this is not base64!"}, "base64"),
    ):
        if not runs_ok:
            add(cid, "SKIP", "the entry point does not run")
            continue
        got = box.run(env, timeout_s=60)
        r = got.get("result")
        if r is not None and not r.success and expect in r.error and r.kitebench.stage in ("decode", "validate"):
            add(cid, "PASS", f"failed result.json: {r.error[:120]}")
        else:
            add(cid, "FAIL", f"expected a failed result.json naming {expect!r} ({_describe(got)})")

    # -- GPU ---------------------------------------------------------------------------------------
    gpu_skip = _gpu_skip_reason(client, gpu)
    if gpu_skip:
        add("gpu_visible", "SKIP", gpu_skip)
        add("cuda_matmul", "SKIP", gpu_skip)
    else:
        g = box.run({}, entrypoint=python, command=["-c", probes.GPU], timeout_s=300)
        info: dict[str, Any] = {}
        for line in (g.get("logs") or "").splitlines():
            if line.startswith("KITEBENCH-GPU "):
                info = json.loads(line.split(" ", 1)[1])
        lines = [ln for ln in (info.get("nvidia_smi") or "").splitlines() if ln.startswith("GPU ")]
        want = gpu_fields.get("gpu_uuid")
        if len(lines) == 1 and (want is None or want in lines[0]):
            add("gpu_visible", "PASS", lines[0].strip())
        else:
            add("gpu_visible", "FAIL", f"{len(lines)} GPUs visible (want exactly {gpu}): "
                                       f"{info.get('nvidia_smi_error') or '; '.join(lines) or _describe(g)}")
        if "torch" not in found:
            add("cuda_matmul", "SKIP", "torch is not installed in this image")
        elif info.get("matmul") == "ok":
            add("cuda_matmul", "PASS", f"matmul on {info.get('device')}")
        else:
            add("cuda_matmul", "FAIL", f"torch matmul on the GPU failed: {info.get('matmul_error')}")
    return report


def ver_summary(run: dict[str, Any]) -> dict[str, Any]:
    return {k: run.get(k) for k in ("exit_code", "timed_out", "start_error", "result_error")
            if run.get(k) is not None}


def _describe(run: dict[str, Any]) -> str:
    if run.get("start_error"):
        return f"the container did not start: {run['start_error']}"
    r = run.get("result")
    if r is not None:
        return f"result.json: success={r.success}, error={r.error[:160]!r}"
    return f"exit code {run.get('exit_code')}, {run.get('result_error')}; log: {_tail(run.get('logs') or '')}"


def _entrypoint_failure(run: dict[str, Any], attrs: dict[str, Any]) -> str:
    ep = " ".join((attrs.get("Config") or {}).get("Entrypoint") or []) or "(none)"
    fix = ("the ENTRYPOINT must be the image's Python with `-m runner` "
           "(images/runner/Dockerfile), running as a non-root user on a read-only root")
    if run.get("start_error"):
        return f"the container did not start ({run['start_error']}); {fix}"
    if run.get("timed_out"):
        return f"ENTRYPOINT {ep} did not finish a trivial payload in {CONTAINER_TIMEOUT_S:g} s; {fix}"
    r = run.get("result")
    if r is not None:
        return (f"ENTRYPOINT {ep} wrote result.json but the bundled payload did not pass: "
                f"{r.error[:300]!r}; check the runner in the image")
    return (f"ENTRYPOINT {ep} exited with code {run.get('exit_code')} and wrote no valid result.json "
            f"({run.get('result_error')}); last log lines: {_tail(run.get('logs') or '') or 'none'}; "
            f"fix: {fix}")


def _gpu_skip_reason(client: Any, gpu: str | None) -> str | None:
    if not gpu:
        return "no --gpu given (pass the GPU UUID or index this image will run on)"
    try:
        runtimes = client.info().get("Runtimes") or {}
    except Exception as e:
        return f"cannot ask the docker engine for its runtimes: {e}"
    if "nvidia" not in runtimes:
        return ("no NVIDIA runtime in this docker engine (install nvidia-container-toolkit and run "
                "`nvidia-ctk runtime configure --runtime=docker`)")
    return None


def format_plan(report_image: str, gpu: str | None) -> str:
    lines = [f"kitebench image validate {report_image}" + (f" --gpu {gpu}" if gpu else ""),
             f"Plan ({len(PLAN)} checks):"]
    for i, (_cid, title, what) in enumerate(PLAN, 1):
        lines.append(f"  {i:2d}. {title:<18} {what}")
    return "\n".join(lines)


def format_table(report: Report) -> str:
    width = max(len(c.title) for c in report.checks) if report.checks else 10
    lines = ["Results:", f"  {'CHECK':<{width}}  STATUS  REASON"]
    for c in report.checks:
        lines.append(f"  {c.title:<{width}}  {c.status:<6}  {c.detail}")
    n = report.counts()
    verdict = "FIT to go live" if not report.failed else "NOT fit to go live"
    lines.append(f"{n['PASS']} passed, {n['FAIL']} failed, {n['SKIP']} skipped: {report.image} is {verdict}")
    return "\n".join(lines)
