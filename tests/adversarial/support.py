"""The adversarial suite's machinery: the attacks, the four ways a submission is run, and what is
checked after each run.

Modes:

``job``            ``kitebench job`` (the vendor host) with a real Docker engine, publishing to
                   the recording stand-in ``buildkite-agent`` (tests/bin)
``local-docker``   ``kitebench submit --isolation docker``
``process-root``   ``kitebench submit --isolation process`` as root
``process-user``   ``kitebench submit --isolation process`` as an unprivileged uid, with a venv of
                   the system python3 (:func:`tests.adversarial.world.build_user_venv`; the suite's interpreter may live
                   under a 0700 home no other uid can enter)

Every run gets its own ``TMPDIR`` (``/tmp/kbadv-*``): where the launcher and the host job make
their temp dirs, so the attacks find the suite's runs (and never another developer's), and so
the suite can check that nothing was left there.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from contract.result import FullResult
from tests.adversarial.residue import (
    force_remove,
    kill_marked,
    leftover_files,
    marked_processes,
    remove_leftovers,
    tree_bytes,
)
from tests.adversarial.world import (
    TASK,
    World,
    share_code,
)
from tests.common import REPO

HERE = Path(__file__).resolve().parent
ATTACKS_DIR = HERE / "attacks"
AGENT_BIN = REPO / "tests" / "bin"
MODES = ("job", "local-docker", "process-root", "process-user")
#: The uid of the "normal user" mode (no account needed: setpriv takes numbers).
USER_UID = 10_077
#: The budget of one local run (a stopped runner must not hold the suite for the task's 120 s).
RUN_BUDGET_S = 45
#: What the host may end up holding for one run, at most.
MAX_RESULT_BYTES = 8 * 1024 * 1024
MAX_ANNOTATION_BYTES = 256 * 1024
TRACEBACK = "Traceback (most recent call last)"


# ---------------------------------------------------------------------------------------------
# attacks
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Attack:
    name: str
    #: The class of attack (the issue's list), for the report table.
    kind: str
    #: ``test`` or ``benchmark``: the mode it is submitted in.
    mode: str = "test"
    #: Host paths it aims at ({token}: the case's token, {home}: the launcher user's home).
    targets: tuple[str, ...] = ()
    #: Host dirs it would create (checked only when they did not exist before the run).
    creates: tuple[str, ...] = ()


_K_FORGE, _K_PROC, _K_SIG, _K_COUNT, _K_FILE = (
    "forge by rlimits", "zombie/fork/daemon", "signals to the runner", "huge counts",
    "odd result.json",
)
ATTACKS: dict[str, Attack] = {a.name: a for a in [
    Attack("forge_prlimit_fsize", _K_FORGE),
    Attack("forge_prlimit_nofile", _K_FORGE),
    Attack("forge_prlimit_as", _K_FORGE),
    Attack("zombie_leader", _K_PROC),
    Attack("fork_daemon", _K_PROC),
    Attack("fork_chain", _K_PROC),
    Attack("fork_ignore_term", _K_PROC),
    Attack("signal_stop_runner", _K_SIG),
    Attack("signal_kill_runner", _K_SIG),
    Attack("signal_term_runner", _K_SIG),
    Attack("huge_test_count", _K_COUNT),
    Attack("huge_benchmark_count", _K_COUNT, mode="benchmark"),
    Attack("count_not_a_number", _K_COUNT),
    Attack("popcorn_flood", _K_COUNT),
    Attack("result_dir", _K_FILE),
    Attack("result_fifo", _K_FILE),
    Attack("result_symlink", _K_FILE),
    Attack("result_huge", _K_FILE),
    Attack("result_sparse", _K_FILE),
    Attack("disk_fill_out", "disk fill"),
    Attack("disk_fill_work", "disk fill",
           targets=("/tmp/kbadv-fill-{token}", "/dev/shm/kbadv-fill-{token}")),
    Attack("html_markdown", "HTML/Markdown in outputs"),
    Attack("traceback_error", "HTML/Markdown in outputs"),
    Attack("chmod_parents", "chmod of parents"),
    Attack("pth_user_site", "persistence via .pth",
           targets=("{home}/.local/lib/python3*/site-packages/kbadv-{token}.pth",
                    "/root/.local/lib/python3*/site-packages/kbadv-{token}.pth",
                    "{purelib}/kbadv-{token}.pth", "{purelib}/kbadv_{token}_usercustomize.py"),
           creates=("{home}/.local", "/root/.local")),
    Attack("read_environ", "/proc/<pid>/environ"),
    Attack("read_payload", "payload file / secret seed"),
    Attack("write_etc", "writes to /etc",
           targets=("/etc/kbadv-{token}", "/etc/profile.d/kbadv-{token}.sh",
                    "/etc/cron.d/kbadv-{token}")),
    Attack("write_root", "writes to /root",
           targets=("/root/kbadv-{token}", "/root/.cache/kbadv-{token}",
                    "/root/.config/kbadv-{token}")),
    Attack("write_launcher_tmp", "launcher temp dir"),
    Attack("exit_early_zero", "exit codes"),
    Attack("fd_hijack", "inherited fds"),
    Attack("ptrace_runner", "signals to the runner"),
    Attack("docker_socket", "host services (sockets)"),
    Attack("read_host_secrets", "host secrets"),
    Attack("output_flood", "host bytes"),
    Attack("bad_bytes", "huge counts"),
]}
#: The honest examples: (solution file under the task, expected verdict).
HONEST = {
    "honest_correct": ("solutions/correct/submission.py", True),
    "honest_wrong": ("solutions/wrong/scaled.py", False),
}


def submission_source(name: str, token: str) -> str:
    """The one file a hostile submission is: its attack with the shared tools inlined (a
    submission has no other module to import) and the case's token filled in."""
    text = (ATTACKS_DIR / f"{name}.py").read_text(encoding="utf-8")
    tools = (ATTACKS_DIR / "hostile.py").read_text(encoding="utf-8")
    line = "from hostile import *\n"
    assert line in text, f"{name}.py must import the shared tools with {line!r}"
    doc, _, body = text.partition(line)
    return (doc + "# --- hostile.py, inlined ---\n" + tools + "# --- the attack ---\n"
            + body).replace("@TOKEN@", token)


# ---------------------------------------------------------------------------------------------
# the world the runs share (one per session)
# ---------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------
# one run
# ---------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    mode: str
    case: str
    token: str
    exit_code: int | None
    stdout: str
    stderr: str
    result_path: Path
    result_text: str | None
    result: FullResult | None
    result_error: str
    annotation: str | None
    run_tmp: Path
    wall_s: float
    tmp_mode_after: int
    leftover_procs: list[str]
    leftover_files: list[str]
    bytes_left: int


def _parse(path: Path) -> tuple[str | None, FullResult | None, str]:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None, None, f"{path.name} was not written"
    if not stat.S_ISREG(st.st_mode):
        return None, None, f"{path.name} is not a regular file"
    if st.st_size > MAX_RESULT_BYTES:
        return None, None, f"{path.name} is {st.st_size} bytes"
    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        return text, FullResult.model_validate_json(text), ""
    except ValueError as e:
        return text, None, f"{path.name} is not valid: {str(e)[:300]}"


def _base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("KITEBENCH_", "BUILDKITE_", "SUBMISSION_"))}
    env["PYTHONPATH"] = str(REPO)
    env["KBADV_CANARY"] = "canary-" + uuid.uuid4().hex  # a secret of the launcher's user
    return env


def _docker_env(world: World, run_tmp: Path, token: str) -> dict[str, str]:
    assert world.image is not None
    return {
        "KITEBENCH_IMAGE": world.image,
        "KITEBENCH_SLOT": f"kbadv-{token}",
        "KITEBENCH_MEMORY": "512m",
        "KITEBENCH_CPUSET": "0",
        "KITEBENCH_PIDS_LIMIT": "128",
        "KITEBENCH_TMPFS_SIZE": "64m",
        "KITEBENCH_JOB_TIMEOUT": "90",
        "TMPDIR": str(run_tmp),
    }


def run_case(world: World, mode: str, case: str) -> Outcome:
    """Submit one attack (or honest example) in one mode; collect everything the checks need."""
    token = uuid.uuid4().hex[:8]
    attack = ATTACKS.get(case)
    user = mode == "process-user"
    run_tmp = Path(tempfile.mkdtemp(prefix="kbadv-"))  # the launcher's TMPDIR for this run
    # the case's files live in the world-readable root: the normal user must reach them
    tmp = sub_dir = world.root / f"case-{token}"
    sub_dir.mkdir()
    os.chmod(sub_dir, 0o755)
    home = tmp / "home"
    home.mkdir()
    os.chmod(home, 0o755)
    if user and os.geteuid() == 0:
        for d in (run_tmp, home):
            os.chown(d, USER_UID, USER_UID)
        os.chmod(run_tmp, 0o700)
    else:
        # like /tmp, whose place it takes: a submission uid must pass through to its work dir
        os.chmod(run_tmp, 0o755)
    if attack is not None:
        sub = sub_dir / "submission.py"
        sub.write_text(submission_source(case, token), encoding="utf-8")
        submit_mode = attack.mode
    else:
        sub = sub_dir / "submission.py"
        shutil.copy(TASK / HONEST[case][0], sub)
        submit_mode = "test"
    os.chmod(sub, 0o644)
    out_dir = tmp / "out"
    out_dir.mkdir(mode=0o777)
    os.chmod(out_dir, 0o777)
    result_path = out_dir / "result.json"
    env = _base_env()
    env["HOME"] = str(home)
    annotation_path: Path | None = None
    creates = [c.format(home=home) for c in (attack.creates if attack else ())]
    creates = [c for c in creates if not os.path.lexists(c)]
    t0 = time.monotonic()
    if mode == "job":
        from contract import codec
        from launcher.task import build_payload

        job_dir = out_dir
        env.update(_docker_env(world, run_tmp, token))
        state = tmp / "agent-state"
        env.update(
            PATH=f"{AGENT_BIN}{os.pathsep}{env.get('PATH', '')}",
            BUILDKITE_AGENT_ACCESS_TOKEN="bkaj_adversarial_secret",
            BUILDKITE_JOB_ID=f"job-{token}", BUILDKITE_BUILD_NUMBER="7",
            KITEBENCH_AGENT_LOG=str(tmp / "agent.jsonl"), KITEBENCH_AGENT_STATE=str(state),
            KITEBENCH_AGENT_ARTIFACTS=str(tmp / "artifacts"),
            SUBMISSION_PAYLOAD=codec.encode(build_payload(world.task, sub, mode=submit_mode)),
        )
        cmd = [sys.executable, "-m", "kitebench", "job"]
        cwd = job_dir
        annotation_path = state / "annotations.json"
    else:
        iso = "docker" if mode == "local-docker" else "process"
        args = ["-m", "kitebench", "submit", str(world.task), "--submission", str(sub),
                "--mode", submit_mode, "--isolation", iso, "--output", str(result_path),
                "--json", "--quiet", "--timeout", str(RUN_BUDGET_S),
                "--no-store"]  # the subject is the isolation, not the bookkeeping
        cwd = home
        env["TMPDIR"] = str(run_tmp)
        if mode == "local-docker":
            env.update(_docker_env(world, run_tmp, token))
            cmd = [sys.executable, *args]
        elif mode == "process-root":
            cmd = [sys.executable, *args]
        else:
            assert world.user_python is not None
            env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8",
                   "PYTHONPATH": str(share_code(world)), "TMPDIR": str(run_tmp),
                   "KBADV_CANARY": env["KBADV_CANARY"]}
            cmd = [str(world.user_python), *args]
            if os.geteuid() == 0:
                cmd = ["setpriv", f"--reuid={USER_UID}", f"--regid={USER_UID}",
                       "--clear-groups", "--", *cmd]
                os.chown(out_dir, USER_UID, USER_UID)
    try:
        proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                              timeout=RUN_BUDGET_S + 60, check=False, start_new_session=True)
        code: int | None = proc.returncode
        stdout, stderr = proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as e:
        code, stdout, stderr = None, str(e.stdout or ""), f"timed out: {e.stderr or ''}"
    wall = time.monotonic() - t0
    tmp_mode = stat.S_IMODE(os.stat("/tmp").st_mode)
    procs = marked_processes(token)
    text, result, problem = _parse(result_path)
    note = None
    if annotation_path is not None and annotation_path.exists():
        with contextlib.suppress(ValueError, KeyError):
            note = json.loads(annotation_path.read_text())["kitebench"]["body"]
    purelibs = _purelibs(world)
    files = leftover_files(attack, token, str(home), purelibs)
    files += [c for c in creates if os.path.lexists(c)]
    left = [str(p) for p in run_tmp.rglob("*")] if run_tmp.exists() else []
    bytes_left = tree_bytes(run_tmp) + tree_bytes(out_dir) - (
        os.lstat(result_path).st_blocks * 512 if result_path.is_file() else 0)
    outcome = Outcome(
        mode=mode, case=case, token=token, exit_code=code, stdout=stdout[-20000:],
        stderr=stderr[-20000:], result_path=result_path, result_text=text, result=result,
        result_error=problem, annotation=note, run_tmp=run_tmp, wall_s=wall,
        tmp_mode_after=tmp_mode, leftover_procs=procs, leftover_files=files + left,
        bytes_left=bytes_left,
    )
    keep = os.environ.get("KBADV_KEEP")  # debugging: keep every run's result and output
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        Path(keep, f"{mode}-{case}.txt").write_text(
            f"exit {code}\n--- stdout\n{stdout[-5000:]}\n--- stderr\n{stderr[-5000:]}\n"
            f"--- result.json\n{text or problem}\n--- annotation\n{note}\n")
    # leave the machine as it was, whatever the attack managed
    kill_marked(token)
    if tmp_mode != 0o1777:
        os.chmod("/tmp", 0o1777)
    remove_leftovers(files)
    force_remove(run_tmp)
    force_remove(sub_dir)
    return outcome


def _purelibs(world: World) -> list[str]:
    import sysconfig

    libs = {sysconfig.get_paths()["purelib"]}
    if world.user_python is not None:
        libs |= set((world.user_python.parent.parent / "lib").glob("python3*/site-packages"))
    return sorted(str(p) for p in libs)


# ---------------------------------------------------------------------------------------------
# the checks
# ---------------------------------------------------------------------------------------------


def problems(o: Outcome, expect_pass: bool = False) -> list[str]:
    """Everything wrong with one run's outcome (empty: the defences held)."""
    bad: list[str] = []
    if o.result is None:
        bad.append(f"no valid result.json: {o.result_error} (exit {o.exit_code}; "
                   f"{_tail(o.stderr)})")
    else:
        r = o.result
        if r.passed != expect_pass:
            bad.append(f"verdict passed={r.passed} (expected {expect_pass}): {r.error[:200]}")
        elif not expect_pass and r.kitebench.passed:
            bad.append("kitebench.passed is true")
        if TRACEBACK in r.error:
            bad.append("a traceback in error")
        text = o.result_text or ""
        # the forged document's own marker (an attack printing it is just output)
        if any(w.startswith("FORGED-") for w in r.kitebench.warnings):
            bad.append("the forged result.json was taken")
        if "ADV-LEAK" in text:
            leaks = sorted(set(re.findall(r"ADV-LEAK ([^\n\\\"]{0,80})", text)))
            bad.append(f"the submission read secrets: {leaks[:4]}")
    ok_codes = {0} if o.mode == "job" else ({0} if expect_pass else {1, 3})
    if o.exit_code not in ok_codes:
        bad.append(f"exit code {o.exit_code} (expected one of {sorted(ok_codes)}): {_tail(o.stderr)}")
    if TRACEBACK in o.stderr and o.mode != "job":
        bad.append("a traceback from the launcher")
    if o.annotation is not None:
        if TRACEBACK in o.annotation:
            bad.append("a traceback in the annotation")
        if re.search(r"<\s*[A-Za-z/!?]", o.annotation):
            bad.append("raw HTML in the annotation")
        if len(o.annotation.encode()) > MAX_ANNOTATION_BYTES:
            bad.append("annotation over its size limit")
    elif o.mode == "job":
        bad.append("no annotation was published")
    if o.leftover_procs:
        bad.append(f"processes of the submission left running: {o.leftover_procs[:5]}")
    if o.tmp_mode_after != 0o1777:
        bad.append(f"/tmp is now mode {oct(o.tmp_mode_after)}")
    if o.leftover_files:
        bad.append(f"files left outside the work dir: {o.leftover_files[:5]}")
    if o.bytes_left > 1024 * 1024:
        bad.append(f"{o.bytes_left} bytes left on the host")
    if o.result_path.exists() and o.result_path.is_file() and \
            o.result_path.stat().st_size > MAX_RESULT_BYTES:
        bad.append("result.json over its size limit")
    return bad


def _tail(text: str, n: int = 300) -> str:
    return " | ".join(text.strip().splitlines()[-3:])[-n:]


def ensure_image(client: Any) -> str:
    """The runner image of this checkout: the shared test image, or (``KITEBENCH_ADV_IMAGE``)
    a tag of its own, so that checkouts sharing one engine do not rebuild each other's."""
    from tests import docker_support as ds

    tag = os.environ.get("KITEBENCH_ADV_IMAGE")
    if not tag:
        return ds.ensure_test_image(client)
    from docker.errors import ImageNotFound

    ds.require_base(client)
    want = ds.runner_image_hash()
    with contextlib.suppress(ImageNotFound):
        if (client.images.get(tag).labels or {}).get(ds.HASH_LABEL) == want:
            return tag
    wheels = ds.ensure_wheels()
    with tempfile.TemporaryDirectory(prefix="kitebench-ctx-") as ctx_dir:
        ctx = ds.stage_context(Path(ctx_dir), wheels)
        ds.build(client, ctx, "images/runner/Dockerfile", tag,
                 {"BASE_IMAGE": ds.BASE_IMAGE, "INSTALL_TORCH": "0", "KITEBENCH_REVISION": want},
                 labels={ds.HASH_LABEL: want})
    return tag
