"""The results store on SQLite and on a real PostgreSQL server: migrations, attempts, two
writers at once, leaderboards (direction, secret-run gating), run comparison, URL masking."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from kitebench import cli, main
from launcher.campaign.queries import compare_runs, leaderboard
from launcher.campaign.store import Store, default_url, mask
from tests import store_support
from tests.store_support import attempt_row

REPO = Path(__file__).resolve().parent.parent
store_url = store_support.store_url  # the fixtures: every test on SQLite and PostgreSQL
store = store_support.store


def _run(store: Store, **kw: object) -> str:
    return store.create_run(name="t", kind="matrix", backend="local", **kw)  # type: ignore[arg-type]


def test_open_migrates_once_and_reopens(store_url: str) -> None:
    with Store.open(store_url) as s:
        assert s.revision() == "0001"
        rid = _run(s)
    with Store.open(store_url) as s:  # second open: nothing to migrate, data kept
        assert s.revision() == "0001"
        assert s.get_run(rid)["status"] == "running"


def test_attempt_moves_and_filters(store: Store) -> None:
    rid = _run(store, cells=2)
    a = store.add_attempt(**attempt_row(rid, status="pending", mode="test"))
    b = store.add_attempt(**attempt_row(rid, status="pending", task="other"))
    store.update_attempt(a, status="running", build_number=7, build_url="https://x/7")
    store.update_attempt(a, status="failed", failure_stage="run", error="check failed",
                         result_json='{"success": true}')
    rows = store.attempts(run_id=rid)
    assert [r["id"] for r in rows] == [a, b]
    assert rows[0]["status"] == "failed" and rows[0]["build_number"] == 7
    assert "result_json" not in rows[0]  # big: only on request
    assert store.attempts(run_id=rid, with_result=True)[0]["result_json"] == '{"success": true}'
    assert [r["id"] for r in store.attempts(task="other")] == [b]
    assert [r["id"] for r in store.attempts(status="failed")] == [a]
    assert store.attempts(run_id="nope") == []


def test_two_writers_at_once(store_url: str) -> None:
    """Two processes, each creating a run and moving 60 attempts through pending → running →
    success, at the same time: every write lands, none fails with a lock error."""
    with Store.open(store_url):
        pass  # migrated before the writers race (a migration race is covered by the lock)
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(REPO)!r})
        from launcher.campaign.store import Store
        from tests.store_support import attempt_row
        s = Store.open(sys.argv[1])
        rid = s.create_run(name=sys.argv[2], kind="matrix", backend="local")
        for i in range(60):
            a = s.add_attempt(**attempt_row(rid, status="pending"))
            s.update_attempt(a, status="running")
            s.update_attempt(a, status="success", score=float(i))
        print(rid)
    """)
    procs = [subprocess.Popen([sys.executable, "-c", code, store_url, f"w{i}"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    with Store.open(store_url) as s:
        for out, _ in outs:
            rows = s.attempts(run_id=out.strip())
            assert len(rows) == 60 and {r["status"] for r in rows} == {"success"}


def test_kernel_leaderboard_ascending_best_per_submission(store: Store) -> None:
    rid = _run(store)
    add = lambda sha, score, **kw: store.add_attempt(  # noqa: E731
        **attempt_row(rid, submission=f"{sha}.py", submission_sha256=sha * 64, score=score, **kw))
    add("a", 3e-5)
    best_a = add("a", 2e-5)
    add("b", 1e-5, status="failed")  # better score, but it failed: not ranked
    best_b = add("b", 4e-5)
    add("c", 1e-6, mode="test")  # test mode has no ranked score
    add("d", 1e-7, gpu="A100")  # another GPU
    rows = leaderboard(store, "vectoradd_np", gpu="H100")
    assert [(r["rank"], r["submission_sha256"][0], r["attempt_id"]) for r in rows] == \
        [(1, "a", best_a), (2, "b", best_b)]
    assert rows[0]["score"] == 2e-5 and rows[0]["ascending"] is True
    assert [r["submission_sha256"][0] for r in leaderboard(store, "vectoradd_np")] == ["d", "a", "b"]
    assert leaderboard(store, "unknown_task") == []


def test_model_leaderboard_descending_throughput(store: Store) -> None:
    rid = _run(store)
    for sha, score in (("a", 80.0), ("b", 120.0), ("c", 95.0), ("b", 110.0)):
        store.add_attempt(**attempt_row(rid, task="vllm_tiny", lang="model", submission_sha256=sha * 64,
                                        score=score, metric="request_throughput", ascending=False))
    rows = leaderboard(store, "vllm_tiny")
    assert [(r["submission_sha256"][0], r["score"]) for r in rows] == \
        [("b", 120.0), ("c", 95.0), ("a", 80.0)]
    assert rows[0]["metric"] == "request_throughput" and rows[0]["ascending"] is False


def test_secret_run_gates_the_public_score(store: Store) -> None:
    """kernelbot's rule: a public score ranks only when the matching secret run passed."""
    rid = _run(store)
    for sha, score, secret in (("a", 1.0, "success"), ("b", 0.5, "failed"), ("c", 0.7, "pending"),
                               ("d", 2.0, None)):
        store.add_attempt(**attempt_row(rid, submission_sha256=sha * 64, score=score))
        if secret is not None:
            store.add_attempt(**attempt_row(rid, submission_sha256=sha * 64, mode="private",
                                            status=secret, score=score * 1.01))
    rows = leaderboard(store, "vectoradd_np")
    assert [(r["submission_sha256"][0], r["secret_run"]) for r in rows] == [("a", True), ("d", False)]


def test_compare_runs_ratio_tolerance_and_verdicts(store: Store) -> None:
    a, b = _run(store), _run(store)
    for rid, scores in ((a, (1.0, 1.0, 1.0, None)), (b, (1.03, 1.2, None, None))):
        for key, score in zip(("k1", "k2", "k3", "k4"), scores, strict=True):
            status = "success" if score is not None else "failed"
            store.add_attempt(**attempt_row(rid, cell_key=key, score=score, status=status))
    store.add_attempt(**attempt_row(a, cell_key="k5", score=1.0))  # only in run a
    diffs = {d.cell_key: d for d in compare_runs(store, a, b, tolerance=0.05)}
    assert diffs["k1"].ok and diffs["k1"].ratio == pytest.approx(1.03)
    assert not diffs["k2"].ok and "outside" in diffs["k2"].why
    assert not diffs["k3"].ok and "success → failed" in diffs["k3"].why
    assert diffs["k4"].ok  # failed in both: no change
    assert not diffs["k5"].ok and "only in run" in diffs["k5"].why
    assert all(d.ok for k, d in diffs.items() if k != "k2" and k in ("k1", "k4"))
    loose = {d.cell_key: d.ok for d in compare_runs(store, a, b, tolerance=0.25)}
    assert loose["k2"] is True


def test_cli_runs_leaderboard_compare_json(store_url: str) -> None:
    with Store.open(store_url) as s:
        a, b = _run(s), _run(s)
        for rid, score in ((a, 2e-5), (b, 2.02e-5)):
            s.add_attempt(**attempt_row(rid, cell_key="k", score=score, started_at="x",
                                        finished_at="y"))
    r = CliRunner()
    out = r.invoke(cli, ["runs", "--store", store_url, "--json", "--run", a])
    assert out.exit_code == 0, out.output
    (row,) = json.loads(out.stdout)
    for key in ("id", "run_id", "task", "submission", "submission_sha256", "gpu", "backend",
                "mode", "status", "failure_stage", "error", "score", "started_at", "finished_at"):
        assert key in row
    out = r.invoke(cli, ["leaderboard", "vectoradd_np", "--store", store_url, "--json"])
    (top,) = json.loads(out.stdout)
    assert {"rank", "submission", "submission_sha256", "score", "attempt_id"} <= set(top)
    assert top["score"] == 2e-5
    assert main(["runs", "--store", store_url, "compare", a, b]) == 0
    assert main(["runs", "compare", a, b, "--store", store_url, "--tolerance", "0.001"]) == 1
    assert main(["runs", "compare", a, "nope", "--store", store_url]) == 2


def test_store_url_password_is_masked(capsys: pytest.CaptureFixture[str]) -> None:
    url = "postgresql://kb:s3cr3t-pw@127.0.0.1:1/kb"
    assert "s3cr3t-pw" not in mask(url) and "***" in mask(url)
    code = main(["runs", "--store", url, "--json"])
    err = capsys.readouterr().err
    assert code == 3 and err.count("\n") == 1 and err.startswith("Error: results store")
    assert "s3cr3t-pw" not in err and "Traceback" not in err
    assert main(["runs", "--store", "not a url"]) == 2


def test_default_store_is_a_user_sqlite_file() -> None:
    assert default_url({"HOME": "/h", "XDG_DATA_HOME": "/d"}) == "sqlite:////d/kitebench/store.db"
    assert default_url({"KITEBENCH_STORE": "postgresql://x@y/z"}) == "postgresql://x@y/z"
