"""``kitebench matrix run`` on the local backend over the bundled examples, ``kill -9`` and
``--resume``, and ``kitebench submit`` recording its attempt."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from kitebench import main
from launcher.campaign.outcome import TERMINAL
from launcher.campaign.store import Store
from tests import store_support
from tests.taskdirs import write_py_task

REPO = Path(__file__).resolve().parent.parent
NP = REPO / "examples" / "vectoradd_np"
store_url = store_support.store_url  # the fixture


def _sigint_default() -> None:
    # a suite started in the background of a non-interactive shell inherits SIGINT ignored, and
    # Python then installs no Ctrl-C handler: the CLI must see Ctrl-C as a terminal user does
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _cli(args: list[str], store: str, **kw: object) -> subprocess.Popen[str]:
    env = {**os.environ, "KITEBENCH_STORE": store, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "kitebench", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_sigint_default, **kw)


@pytest.mark.slow
def test_kill_9_then_resume_runs_every_cell_once(tmp_path: Path) -> None:
    """12 cells (3 submissions × test/benchmark × 2 GPU names), killed with SIGKILL mid-run,
    then resumed: every cell ends in exactly one terminal attempt, the cells finished before the
    kill are not run again, and the attempts the kill cut short are closed as partial."""
    matrix = tmp_path / "m.yml"
    matrix.write_text(f"""name: kill9
defaults: {{gpus: [cpu-a, cpu-b]}}
entries:
  - task: {NP}
    submissions: ["{NP}/solutions/correct/*.py", "{NP}/solutions/wrong/*.py"]
    modes: [test, benchmark]
""")
    url = f"sqlite:///{tmp_path / 'store.db'}"
    args = ["matrix", "run", str(matrix), "-j", "2", "--isolation", "process", "--json", "-q"]
    first = _cli(args, url)
    deadline = time.monotonic() + 180
    done_before: dict[str, int] = {}
    while time.monotonic() < deadline:
        time.sleep(0.5)
        if not (tmp_path / "store.db").exists():
            continue
        with Store.open(url) as s:
            rows = s.attempts()
        done_before = {r["cell_key"]: r["id"] for r in rows if r["status"] in TERMINAL}
        if len(done_before) >= 3:
            break
    os.kill(first.pid, signal.SIGKILL)
    first.communicate(timeout=30)
    assert 3 <= len(done_before) < 12, "the run should be cut mid-way"

    with Store.open(url) as s:
        (run,) = s.list_runs()
        cut = [r for r in s.attempts() if r["status"] not in TERMINAL]
    assert run["status"] == "running" and len(cut) == 12 - len(done_before)
    assert {r["status"] for r in cut} <= {"running", "pending"}  # nothing lost: rows, not gaps

    second = _cli([*args, "--resume", run["id"]], url)
    out, err = second.communicate(timeout=300)
    assert second.returncode == 1, err[-3000:]  # the wrong submissions fail
    doc = json.loads(out)
    assert doc["run_id"] == run["id"] and len(doc["cells"]) == 12
    with Store.open(url) as s:
        rows = s.attempts(run_id=run["id"])
        assert s.get_run(run["id"])["status"] == "failed"
    terminal = Counter(r["cell_key"] for r in rows if r["status"] in TERMINAL)
    assert len(terminal) == 12 and set(terminal.values()) == {1}
    per_cell = Counter(r["cell_key"] for r in rows)
    for key, attempt_id in done_before.items():  # finished before the kill: never run again
        assert per_cell[key] == 1 and doc_cell(doc, key)["attempt_id"] == attempt_id
        assert doc_cell(doc, key)["resumed"] is True
    partial = [r for r in rows if r["status"] == "partial"]
    assert all(r["failure_stage"] == "interrupted" for r in partial)
    assert len(rows) == 12 + len(partial)
    by_sub = {(Path(r["submission"]).name, r["status"]) for r in rows if r["status"] in TERMINAL}
    assert by_sub == {("submission.py", "success"), ("nan_tail.py", "failed"),
                      ("scaled.py", "failed")}
    ok = [r for r in rows if r["status"] == "success" and r["mode"] == "benchmark"]
    assert len(ok) == 2 and all(r["score"] > 0 and r["metric"] == "time" for r in ok)


def doc_cell(doc: dict, key: str) -> dict:
    return next(c for c in doc["cells"] if c["key"] == key)


def test_matrix_run_exit_codes_table_and_json(tmp_path: Path, store_url: str,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """On SQLite and on PostgreSQL."""
    task = write_py_task(tmp_path)
    (task / "submission_bad.py").write_text("def custom_kernel(x):\n    return 3 * x\n")
    url = store_url
    good = tmp_path / "good.yml"
    good.write_text(f"name: good\nentries:\n  - task: {task}\n    submissions: [{task}/submission_ok.py]\n")
    both = tmp_path / "both.yml"
    both.write_text(f"name: both\nentries:\n  - task: {task}\n    submissions: [\"{task}/submission_*.py\"]\n")

    assert main(["matrix", "run", str(good), "--store", url, "--isolation", "process"]) == 0
    captured = capsys.readouterr()
    assert "success" in captured.out and "1 cells: 1 success" in captured.err
    assert main(["matrix", "run", str(both), "--store", url, "--isolation", "process",
                 "--json", "-q"]) == 1
    doc = json.loads(capsys.readouterr().out)
    status = {Path(c["submission"]).name: (c["status"], c["failure_stage"]) for c in doc["cells"]}
    assert status == {"submission_ok.py": ("success", None), "submission_bad.py": ("failed", "run")}
    # resuming a finished run runs nothing and gives the same answer
    assert main(["matrix", "run", str(both), "--store", url, "--resume", doc["run_id"],
                 "--json", "-q"]) == 1
    again = json.loads(capsys.readouterr().out)
    assert all(c["resumed"] for c in again["cells"])
    with Store.open(url) as s:
        assert len(s.attempts(run_id=doc["run_id"])) == 2
    assert main(["matrix", "run", str(both), "--store", url, "--resume", "nosuchrun"]) == 2
    assert "no run nosuchrun" in capsys.readouterr().err


def test_submit_records_its_attempt_unless_no_store(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    task = write_py_task(tmp_path)
    url = f"sqlite:///{tmp_path / 'store.db'}"
    sub = task / "submission_ok.py"
    base = ["submit", str(task), "-s", str(sub), "--isolation", "process", "-q", "--store", url]
    assert main(base) == 0
    with Store.open(url) as s:
        (row,) = s.attempts(with_result=True)
        (run,) = s.list_runs()
    assert row["status"] == "success" and row["task"] == "double_py" and row["mode"] == "test"
    assert row["backend"] == "local" and row["gpu"] == "local" and len(row["submission_sha256"]) == 64
    assert row["started_at"] and row["finished_at"] and row["exit_code"] == 0
    assert json.loads(row["result_json"])["kitebench"]["passed"] is True
    assert run["kind"] == "submit" and run["status"] == "success"
    assert main([*base, "--no-store"]) == 0
    with Store.open(url) as s:
        assert s.count_attempts() == 1
    capsys.readouterr()


def test_ctrl_c_leaves_partial_attempts_that_resume_reruns(tmp_path: Path) -> None:
    task = write_py_task(tmp_path)
    (task / "submission_slow.py").write_text(
        "import time\ndef custom_kernel(x):\n    time.sleep(10)\n    return 2 * x\n")
    matrix = tmp_path / "m.yml"
    matrix.write_text(f"name: int\ndefaults: {{gpus: [a, b]}}\nentries:\n  - task: {task}\n"
                      f"    submissions: [{task}/submission_slow.py]\n")
    url = f"sqlite:///{tmp_path / 'store.db'}"
    args = ["matrix", "run", str(matrix), "-j", "2", "--isolation", "process", "-q"]
    proc = _cli(args, url)
    deadline = time.monotonic() + 120
    seen: list[str] = []
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.3)
        if (tmp_path / "store.db").exists():
            with Store.open(url) as s:
                seen = [r["status"] for r in s.attempts()]
            if seen == ["running", "running"]:
                break
    # the interrupt must land while both cells run (a loaded machine may take a while to start them)
    assert seen == ["running", "running"] and proc.poll() is None, (seen, proc.poll())
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted: resume with --resume" in err and "Traceback" not in err
    with Store.open(url) as s:
        (run,) = s.list_runs()
        cut = s.attempts()
    assert run["status"] == "partial"
    assert [(r["status"], r["failure_stage"]) for r in cut] == [("partial", "interrupted")] * 2
    done = _cli([*args, "--resume", run["id"]], url)
    _, err = done.communicate(timeout=120)
    assert done.returncode == 0, err[-2000:]
    with Store.open(url) as s:
        assert [r["status"] for r in s.attempts()] == ["partial", "partial", "success", "success"]
