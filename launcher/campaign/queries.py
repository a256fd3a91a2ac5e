"""Questions asked of the results store: the latest attempt per cell, leaderboards, and the
comparison of two runs (e.g. the same cells on the local and the Buildkite backend)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import select

from launcher.campaign.schema import attempts
from launcher.campaign.store import ATTEMPT_FIELDS, Store

#: The mode whose score ranks; ``private`` is the secret run that gates it (kernelbot's rule).
RANKED_MODE = "leaderboard"
SECRET_MODE = "private"
#: default tolerance of ``runs compare`` (a vendor guide asks for < 5 % between launchers)
DEFAULT_TOLERANCE = 0.05


def latest_per_cell(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """cell_key → its newest attempt (rows in id order: a retry supersedes what came before)."""
    out: dict[str, dict[str, Any]] = {}
    for r in rows:
        out[r["cell_key"]] = r
    return out


def leaderboard(store: Store, task: str, *, gpu: str | None = None) -> list[dict[str, Any]]:
    """Best passing ranked attempt per submission, best first in the task's direction.

    A submission is listed only when its ranked attempt passed and, where a secret run was asked
    for (a ``private`` attempt of that submission exists), a secret run passed too.
    """
    cols = [attempts.c[n] for n in ("id", "run_id", "submission", "submission_sha256", "gpu",
                                    "mode", "status", "score", "metric", "ascending",
                                    "finished_at", "backend", "variant")]
    q = select(*cols).where(attempts.c.task == task,
                            attempts.c.mode.in_([RANKED_MODE, SECRET_MODE]))
    if gpu is not None:
        q = q.where(attempts.c.gpu == gpu)
    with store._connect() as conn:
        rows = [dict(r) for r in conn.execute(q.order_by(attempts.c.id)).mappings()]

    secret_asked: set[str] = set()
    secret_passed: set[str] = set()
    ranked: list[dict[str, Any]] = []
    for r in rows:
        if r["mode"] == SECRET_MODE:
            secret_asked.add(r["submission_sha256"])
            if r["status"] == "success":
                secret_passed.add(r["submission_sha256"])
        elif r["status"] == "success" and r["score"] is not None and math.isfinite(r["score"]):
            ranked.append(r)
    if not ranked:
        return []
    # the task's direction: what its newest scored attempt says (kernels: lower time is better)
    ascending = bool(ranked[-1]["ascending"]) if ranked[-1]["ascending"] is not None else True
    best: dict[str, dict[str, Any]] = {}
    for r in ranked:
        sha = r["submission_sha256"]
        if sha in secret_asked and sha not in secret_passed:
            continue
        cur = best.get(sha)
        if cur is None or _better(r["score"], cur["score"], ascending):
            best[sha] = r
    order = sorted(best.values(), key=lambda r: (r["score"] if ascending else -r["score"], r["id"]))
    return [{"rank": i, "submission": r["submission"], "submission_sha256": r["submission_sha256"],
             "score": r["score"], "metric": r["metric"], "ascending": ascending, "gpu": r["gpu"],
             "attempt_id": r["id"], "run_id": r["run_id"], "backend": r["backend"],
             "variant": r["variant"], "secret_run": r["submission_sha256"] in secret_passed,
             "finished_at": r["finished_at"]}
            for i, r in enumerate(order, 1)]


def _better(a: float, b: float, ascending: bool) -> bool:
    return a < b if ascending else a > b


@dataclass
class CellDiff:
    cell_key: str
    task: str
    submission: str
    gpu: str
    mode: str
    variant: str
    status_a: str | None
    status_b: str | None
    score_a: float | None
    score_b: float | None
    ratio: float | None  #: score_b / score_a
    ok: bool
    why: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def compare_runs(store: Store, run_a: str, run_b: str, *,
                 tolerance: float = DEFAULT_TOLERANCE) -> list[CellDiff]:
    """Per cell of either run: both verdicts, the score ratio, and whether it is within
    ``tolerance`` (|ratio - 1| ≤ tolerance) with the same verdict."""
    a = latest_per_cell(store.attempts(run_id=run_a))
    b = latest_per_cell(store.attempts(run_id=run_b))
    out: list[CellDiff] = []
    for key in [*a, *(k for k in b if k not in a)]:
        ra, rb = a.get(key), b.get(key)
        ref = ra or rb
        assert ref is not None
        sa, sb = (ra or {}).get("score"), (rb or {}).get("score")
        sta, stb = (ra or {}).get("status"), (rb or {}).get("status")
        ratio = sb / sa if sa and sb is not None else None
        why = ""
        if ra is None or rb is None:
            why = f"only in run {run_a if rb is None else run_b}"
        elif sta != stb:
            why = f"verdict changed: {sta} → {stb}"
        elif ratio is not None and abs(ratio - 1) > tolerance:
            why = f"score ratio {ratio:.3f} outside ±{tolerance:.0%}"
        out.append(CellDiff(cell_key=key, task=ref["task"], submission=ref["submission"],
                            gpu=ref["gpu"], mode=ref["mode"], variant=ref["variant"],
                            status_a=sta, status_b=stb, score_a=sa, score_b=sb, ratio=ratio,
                            ok=not why, why=why))
    return out


__all__ = ["ATTEMPT_FIELDS", "CellDiff", "compare_runs", "latest_per_cell", "leaderboard"]
