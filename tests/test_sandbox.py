"""runner.sandbox: the submission's uid / namespaces, the kill that leaves nothing, cleanup."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from runner import procs, sandbox

ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="changing uid needs root")


def _bwrap() -> str | None:
    path = sandbox.bwrap_path()
    return path if path and sandbox.bwrap_works(path) else None


needs_bwrap = pytest.mark.skipif(_bwrap() is None, reason="bubblewrap cannot make namespaces here")


def test_remove_tree_takes_a_locked_tree_back_and_touches_nothing_outside(tmp_path: Path) -> None:
    root = tmp_path / "work"
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "b" / "f").write_text("x")
    outside = tmp_path / "outside"
    outside.mkdir()
    os.chmod(outside, 0o755)
    (root / "link").symlink_to(outside)
    os.chmod(root / "a" / "b", 0)
    os.chmod(root / "a", 0)
    os.chmod(tmp_path, 0o755)
    procs.remove_tree(root)
    assert not root.exists()
    assert outside.exists() and os.stat(outside).st_mode & 0o777 == 0o755
    assert os.stat(tmp_path).st_mode & 0o777 == 0o755  # the parent is never chmod'ed


def test_reachable_by_others_sees_a_closed_parent() -> None:
    base = Path(tempfile.mkdtemp(dir="/tmp"))  # pytest's own tmp root is 0700
    try:
        os.chmod(base, 0o755)
        inner = base / "closed" / "pkg"
        inner.mkdir(parents=True)
        os.chmod(base / "closed", 0o700)
        assert not sandbox.reachable_by_others([str(inner)])
        os.chmod(base / "closed", 0o755)
        assert sandbox.reachable_by_others([str(inner)])
    finally:
        procs.remove_tree(base)


def test_without_a_uid_or_namespaces_it_says_not_hardened() -> None:
    sb = sandbox.from_env({sandbox.ENV_NAMESPACES: "0"})
    if sb.separate_uid:
        pytest.skip("this process can change uid")
    assert sb.mode == "none" and not sb.hardened
    assert "not hardened" in sb.describe()["meaning"]


ZOMBIE_LEADER = textwrap.dedent("""
    import ctypes, os, sys, threading, time
    libc = ctypes.CDLL(None)
    def worker():
        while True:
            time.sleep(0.05)
    threading.Thread(target=worker).start()
    time.sleep(0.2)
    libc.syscall(60, 0)  # SYS_exit of the main thread only: the leader shows Z, the group lives
""")


@needs_root
def test_kill_all_kills_daemons_and_zombie_leaders_of_the_uid() -> None:
    uid = 1_700_000_123
    sb = sandbox.Sandbox(mode="uid", uid=uid, gid=uid)
    python = next((p for p in (sys.executable, "/usr/bin/python3")
                   if os.path.exists(p) and sandbox.reachable_by_others([p])), None)
    if python is None:
        pytest.skip("no interpreter another uid can run")
    base = Path(tempfile.mkdtemp(dir="/tmp"))
    os.chmod(base, 0o755)
    script = base / "z.py"
    script.write_text(ZOMBIE_LEADER)
    os.chmod(script, 0o644)
    children = [subprocess.Popen([python, str(script)], **sb.popen_kwargs(),
                                 start_new_session=True) for _ in range(2)]
    children.append(subprocess.Popen(["sleep", "300"], **sb.popen_kwargs(), start_new_session=True))
    time.sleep(0.8)
    pids = procs.pids_of_uid(uid)
    leaders = [p for p in pids if Path(f"/proc/{p}/stat").read_bytes().rsplit(b")", 1)[1][1:2] == b"Z"]
    # the case a leader-state check misses: Z on the leader, yet the group still runs
    assert leaders and all(procs.alive(p) for p in leaders)
    killed, survivors = sb.kill_all()
    assert survivors == [] and killed >= 3
    for p in children:
        p.wait(timeout=10)
    assert not [p for p in procs.pids_of_uid(uid) if procs.alive(p)]
    procs.remove_tree(base)


@needs_bwrap
def test_namespace_sandbox_sees_no_runner_and_writes_only_its_work_dir(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    secret = tmp_path / "out"
    secret.mkdir()
    (secret / "result.json").write_text("{}")
    sb = sandbox.Sandbox(mode="ns", bwrap=_bwrap(), hidden=(str(secret),), tmpfs_bytes=1 << 20)
    escape = f"/var/tmp/kb-sandbox-escape-{os.getpid()}"  # not under its private /tmp
    probe = textwrap.dedent(f"""
        import os
        pids = [p for p in os.listdir("/proc") if p.isdigit()]
        print("pids", len(pids))
        print("hidden", os.listdir({str(secret)!r}))
        for target in ("/etc/kb-sandbox-probe", {escape!r}):
            try:
                open(target, "w").write("x")
                print("wrote", target)
            except OSError as e:
                print("refused", e.errno)
        open("inside", "w").write("ok")
        try:  # its private /tmp is a bounded tmpfs: RAM it cannot exhaust
            open("/tmp/fill", "wb").write(b"x" * (2 << 20))
            print("filled")
        except OSError as e:
            print("full", e.errno)
        os.kill(os.getppid(), 0)
        print("parent", os.getppid())
    """)
    argv = sb.command([sys.executable, "-c", probe], cwd=work)
    out = subprocess.run(argv, cwd=work, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert int(lines[0].split()[1]) <= 3  # its own pid namespace: bwrap's init, itself
    assert lines[1] == "hidden []"
    assert lines[2].startswith("refused") and lines[3].startswith("refused")
    assert (work / "inside").read_text() == "ok"
    assert lines[4] == "full 28"  # ENOSPC
    assert not Path("/etc/kb-sandbox-probe").exists() and not Path(escape).exists()


def test_the_probe_started_ahead_is_the_answer_from_env_reads(tmp_path: Path, monkeypatch) -> None:
    """start_probe (first thing in ``python -m runner``) runs the probe from_env will ask for,
    with an empty environment: the runner's still holds the payload then."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    seen = tmp_path / "seen"
    fake = bindir / "bwrap"
    fake.write_text(f"#!/bin/sh\necho \"$@\" > {seen}.args\n/usr/bin/env > {seen}.env\nexit 0\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setenv("SUBMISSION_PAYLOAD", "secret-payload")
    env = {sandbox.ENV_NAMESPACES: "1"}
    sandbox.start_probe(env)
    assert (str(fake), None) in sandbox._bwrap_running
    sb = sandbox.from_env(env)
    assert sb.bwrap == str(fake) and sb.namespaces  # the fake answered 0: namespaces work
    assert sandbox._bwrap_running == {}
    assert "--unshare-all" in Path(f"{seen}.args").read_text()
    assert "secret-payload" not in Path(f"{seen}.env").read_text()


def test_a_probe_nothing_read_is_killed(tmp_path: Path, monkeypatch) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / "bwrap"
    fake.write_text("#!/bin/sh\nexec /bin/sleep 60\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}")
    sandbox.start_probe({})
    proc = sandbox._bwrap_running[(str(fake), None)]
    sandbox.stop_probe()
    assert proc.returncode is not None and sandbox._bwrap_running == {}
