"""The campaign planner and the results store at campaign scale.

* plan: a matrix of 1,000 cells (50 submissions × 4 GPUs × 5 modes, one task) → cells;
* store: 10,000 attempts inserted (one transaction per 1,000), 500 attempts moved through their
  lifecycle one write at a time (insert pending → running → success, as a campaign writes them),
  then ``leaderboard`` over all of it (median of 5) — on SQLite and, when a URL is given (or
  ``KITEBENCH_TEST_PG_URL`` is set), on PostgreSQL.

    python benchmarks/campaign_store.py [--pg postgresql://USER@HOST/DB]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from launcher.campaign.matrix import parse_matrix  # noqa: E402
from launcher.campaign.plan import plan  # noqa: E402
from launcher.campaign.queries import leaderboard  # noqa: E402
from launcher.campaign.store import Store  # noqa: E402
from tests.taskdirs import write_py_task  # noqa: E402


def bench_plan(tmp: Path) -> None:
    task = write_py_task(tmp)
    subs = tmp / "subs"
    subs.mkdir()
    for i in range(50):
        (subs / f"s{i:02d}.py").write_text(f"def custom_kernel(x):\n    return 2 * x  # {i}\n")
    m = parse_matrix({"name": "big", "entries": [{
        "task": str(task), "submissions": [f"{subs}/*.py"],
        "gpus": ["H100", "H200", "B200", "A100"],
        "modes": ["test", "benchmark", "leaderboard", "private", "profile"]}]})
    t0 = time.perf_counter()
    cells = plan(m)
    print(f"plan: {len(cells)} cells in {time.perf_counter() - t0:.3f} s")


def rows(run_id: str, n: int, rng: random.Random) -> list[dict]:
    out = []
    for _ in range(n):
        sub = rng.randrange(200)
        out.append({
            "run_id": run_id, "cell_key": uuid.uuid4().hex[:24], "task": f"task{rng.randrange(5)}",
            "task_hash": "t" * 64, "lang": "py", "submission": f"s{sub}.py",
            "submission_sha256": f"{sub:064d}", "gpu": rng.choice(["H100", "A100"]),
            "backend": "local", "mode": rng.choice(["test", "leaderboard", "leaderboard", "private"]),
            "variant": "default", "status": rng.choice(["success"] * 4 + ["failed"]),
            "score": rng.uniform(1e-6, 1e-3), "metric": "time", "ascending": True,
            "result_json": '{"success": true}',
        })
    return out


def bench_store(label: str, url: str) -> None:
    rng = random.Random(7)
    with Store.open(url) as s:
        rid = s.create_run(name="bench", kind="matrix", backend="local")
        t0 = time.perf_counter()
        for _ in range(10):
            s.add_attempts(rows(rid, 1000, rng))
        bulk = time.perf_counter() - t0
        t0 = time.perf_counter()
        for r in rows(rid, 500, rng):
            status = r.pop("status")
            a = s.add_attempt(**r, status="pending")
            s.update_attempt(a, status="running")
            s.update_attempt(a, status=status)
        one = (time.perf_counter() - t0) / 500
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            board = leaderboard(s, "task0", gpu="H100")
            times.append(time.perf_counter() - t0)
        n = s.count_attempts()
    print(f"{label}: {n} attempts; 10,000 inserted in {bulk:.2f} s ({bulk / 10:.3f} s per 1,000); "
          f"one attempt's lifecycle (3 writes) {one * 1e3:.1f} ms; leaderboard over them "
          f"{statistics.median(times) * 1e3:.1f} ms median ({len(board)} rows)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pg", default=os.environ.get("KITEBENCH_TEST_PG_URL"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        bench_plan(Path(d))
        bench_store("sqlite", f"sqlite:///{d}/bench.db")
    if args.pg:
        schema = "kbbench_" + uuid.uuid4().hex[:8]
        import sqlalchemy as sa

        admin = sa.create_engine(args.pg.replace("postgresql://", "postgresql+psycopg://", 1))
        with admin.begin() as c:
            c.execute(sa.text(f"CREATE SCHEMA {schema}"))
        try:
            sep = "&" if "?" in args.pg else "?"
            bench_store("postgresql", f"{args.pg}{sep}options=-csearch_path%3D{schema}")
        finally:
            with admin.begin() as c:
                c.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
    else:
        print("postgresql: skipped (no --pg URL and no KITEBENCH_TEST_PG_URL)")


if __name__ == "__main__":
    main()
