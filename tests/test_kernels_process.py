"""The runner kills a submission's whole process tree on timeout, caps its output, and reports
timeouts the field's way (exit_code 114, duration = the timeout). Real processes throughout."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest

from runner.kernels.capture import HeadBuffer, TailBuffer
from runner.kernels.process import run_process
from tests.kernels_support import (
    REPO,
    marker_procs,
    new_marker,
    py_payload,
    run_runner,
    sleeper_cmd,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def marker() -> Iterator[str]:
    mark = new_marker()
    yield mark
    for pid in marker_procs(mark):  # never leave a 300 s sleeper behind, even on failure
        os.kill(pid, signal.SIGKILL)


def _assert_timed_out(run, marker: str) -> None:  # type: ignore[no-untyped-def]
    test = run.result.runs["test"].run
    assert test is not None
    assert test.exit_code == 114
    assert test.duration == 5
    assert not test.success and not test.passed
    assert run.result.kitebench.stage == "run"
    assert "timed out after 5 s" in run.result.error
    assert run.exit_code == 1
    # Generous bound (shared CI cores); the acceptance figure is measured in the report.
    assert run.wall_s < 30, run.wall_s
    print(f"[timeout] runner wall time {run.wall_s:.2f} s for test_timeout 5")
    assert marker_procs(marker) == [], "a process of the submission survived"


HANG = """
import sys, time
print("about to hang", flush=True)
time.sleep(300)  # {marker}
"""


def test_hang_is_killed_with_exit_114(runner_env, marker) -> None:
    run = run_runner(py_payload(HANG.format(marker=marker), test_timeout=5), runner_env)
    _assert_timed_out(run, marker)
    assert "about to hang" in run.result.runs["test"].run.stdout


def test_hang_in_harness_submission_is_killed(runner_env, marker) -> None:
    """The issue's case: a submission doing time.sleep(300) inside a task using the harness."""
    from contract import codec
    from launcher.task import build_payload

    sub = REPO / "examples" / "vectoradd_np" / "solutions" / "correct" / "submission.py"
    payload = build_payload(REPO / "examples" / "vectoradd_np", sub, overrides={"test_timeout": 5})
    sources = dict(payload.sources)
    sources["submission.py"] = (
        f"import time\n\ndef custom_kernel(data):\n    time.sleep(300)  # {marker}\n"
    )
    payload = payload.model_copy(update={"sources": sources})
    run = run_runner(codec.encode(payload, limit=None), runner_env)
    _assert_timed_out(run, marker)


FORKED = """
import os, subprocess, time
subprocess.Popen({cmd})          # a grandchild in the same session
time.sleep(300)  # {marker}
"""

SETSID = """
import os, subprocess, time
# A grandchild that leaves the session and whose parent exits: it is orphaned at once.
subprocess.Popen({cmd}, start_new_session=True)
pid = os.fork()
if pid == 0:
    os.setsid()
    if os.fork() == 0:
        time.sleep(300)  # {marker}
    os._exit(0)
time.sleep(300)  # {marker}
"""

IGNORE_TERM = """
import signal, subprocess, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
subprocess.Popen({cmd}, preexec_fn=lambda: signal.signal(signal.SIGTERM, signal.SIG_IGN))
time.sleep(300)  # {marker}
"""


@pytest.mark.parametrize(
    "src", [FORKED, SETSID, IGNORE_TERM], ids=["fork", "setsid", "sigterm-ignored"]
)
def test_whole_tree_is_killed(runner_env, marker, src: str) -> None:
    code = src.format(cmd=sleeper_cmd(marker), marker=marker)
    run = run_runner(py_payload(code, test_timeout=5), runner_env)
    _assert_timed_out(run, marker)


def test_daemon_left_behind_after_a_normal_exit_is_killed(runner_env, marker) -> None:
    code = f"""
    import os, subprocess
    subprocess.Popen({sleeper_cmd(marker)}, start_new_session=True)
    with os.fdopen(int(os.environ["POPCORN_FD"]), "w") as out:
        out.write("check: pass\\n")
    """
    run = run_runner(py_payload(code, test_timeout=60), runner_env)
    test = run.result.runs["test"].run
    assert test.exit_code == 0 and test.passed
    assert marker_procs(marker) == []
    if "ns" not in run.result.kitebench.isolation["sandbox"]["mode"]:
        # in a pid namespace the daemon dies with the harness: nothing is left to find
        assert "processes left running were killed" in test.stderr


def test_stdout_flood_is_capped_and_memory_bounded(runner_env, capsys) -> None:
    flood = """
    import os, sys
    chunk = b"x" * 65535 + b"\\n"
    for _ in range(800):                       # 800 * 64 KiB = 50 MiB
        sys.stdout.buffer.write(chunk)
    sys.stdout.buffer.write(b"THE-END\\n")
    sys.stdout.flush()
    os.write(int(os.environ["POPCORN_FD"]), b"check: pass\\n")
    """
    trivial = """
    import os
    os.write(int(os.environ["POPCORN_FD"]), b"check: pass\\n")
    """
    base = run_runner(py_payload(trivial), runner_env)
    run = run_runner(py_payload(flood), runner_env)
    test = run.result.runs["test"].run
    assert test.passed
    assert test.stdout.startswith("[kitebench: ")
    assert "bytes of stdout dropped" in test.stdout
    assert test.stdout.rstrip().endswith("THE-END")
    dropped = int(test.stdout.split("[kitebench: ", 1)[1].split(" ", 1)[0])
    assert dropped + len(test.stdout.split("\n", 1)[1]) == 800 * 65536 + len("THE-END\n")
    assert len(test.stdout) < 2 * 1024 * 1024
    rss_base = base.result.kitebench.details["runner_max_rss_mib"]
    rss = run.result.kitebench.details["runner_max_rss_mib"]
    with capsys.disabled():
        print(
            f"\n[flood] runner peak RSS {rss} MiB (trivial run {rss_base} MiB), "
            f"50 MiB of stdout, {dropped} bytes dropped"
        )
    assert rss - rss_base < 16, (rss, rss_base)


def test_tail_buffer_keeps_the_tail() -> None:
    buf = TailBuffer(10)
    for piece in (b"abc", b"defgh", b"ijklmnop", b"q"):
        buf.write(piece)
    assert buf.getvalue() == b"hijklmnopq"
    assert buf.dropped == 7
    buf.write(b"0123456789ABCDEF")  # one chunk over the cap
    assert buf.getvalue() == b"6789ABCDEF" and buf.dropped == 23
    assert buf.text().startswith("[kitebench: 23 bytes of output dropped")


def test_head_buffer_flags_overflow() -> None:
    buf = HeadBuffer(5)
    buf.write(b"abc")
    buf.write(b"defg")
    assert buf.getvalue() == b"abcde" and buf.overflowed and buf.dropped == 2


def test_run_process_in_process(tmp_path, marker) -> None:
    """The same kill, called directly (the runner's building block)."""
    import sys

    code = f"import subprocess, time; subprocess.Popen({sleeper_cmd(marker)}); time.sleep(300)"
    out = run_process(
        [sys.executable, "-c", code, marker], cwd=tmp_path, env=dict(os.environ), timeout_s=2
    )
    assert out.timed_out and out.exit_code == 114 and out.duration == 2
    assert marker_procs(marker) == []


def test_unstartable_command_is_a_result(tmp_path) -> None:
    out = run_process([str(tmp_path / "missing")], cwd=tmp_path, env={}, timeout_s=5)
    assert out.exit_code == 127 and "cannot start" in out.start_error


def test_wait_exit_returns_the_code_and_times_out_like_wait(marker) -> None:
    import subprocess
    import sys
    import time

    from runner.procs import wait_exit

    quick = subprocess.Popen(["/bin/sh", "-c", "exit 3"])
    assert wait_exit(quick, 30) == 3 and quick.returncode == 3
    slow = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)", marker])
    t0 = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired):
        wait_exit(slow, 0.3)
    assert time.monotonic() - t0 >= 0.3 and slow.poll() is None  # still running, not reaped
    slow.kill()
    assert wait_exit(slow, 30) == -signal.SIGKILL
