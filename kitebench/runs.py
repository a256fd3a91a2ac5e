"""``kitebench runs [--run ID] [--task T] [--status S]`` and ``kitebench runs compare A B``:
the attempts in the results store."""

from __future__ import annotations

import json

import click

from kitebench.matrix import _STORE
from launcher.campaign.outcome import STATUSES


@click.group(invoke_without_command=True)
@click.option("--run", "run_id", help="Only the attempts of this run.")
@click.option("--task", help="Only this task (its name, e.g. vectoradd_np).")
@click.option("--status", type=click.Choice(STATUSES), help="Only attempts with this status.")
@_STORE
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of attempts.")
@click.pass_context
def runs(ctx: click.Context, run_id: str | None, task: str | None, status: str | None,
         store_url: str | None, as_json: bool) -> None:
    """List attempts of the results store (newest last)."""
    if ctx.invoked_subcommand is not None:
        ctx.obj = {"store_url": store_url}
        return
    from rich.table import Table

    from launcher.campaign.progress import console
    from launcher.campaign.store import Store

    with Store.open(store_url) as store:
        rows = store.attempts(run_id=run_id, task=task, status=status)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    t = Table()
    for col in ("id", "run", "task", "submission", "gpu", "backend", "mode", "status", "score",
                ):
        t.add_column(col, no_wrap=True)
    t.add_column("stage / error", overflow="ellipsis", no_wrap=True, max_width=60)
    for r in rows:
        err = f"{r['failure_stage']}: {' '.join((r['error'] or '').split())[:200]}" \
            if r["failure_stage"] else ""
        score = f"{r['score']:.4g}" if r["score"] is not None else ""
        t.add_row(str(r["id"]), r["run_id"], r["task"], r["submission"], r["gpu"], r["backend"],
                  r["mode"], r["status"], score, err)
    console().print(t)
    click.echo(f"{len(rows)} attempts", err=True)


@runs.command()
@click.argument("run_a")
@click.argument("run_b")
@click.option("--tolerance", type=click.FloatRange(min=0), default=0.05, show_default=True,
              help="Largest accepted |score_b / score_a - 1| per cell.")
# no envvar here: `runs --store URL compare` (the group's option, env included) must win over it
@click.option("--store", "store_url", help="Results store URL (as for `kitebench runs`).")
@click.option("--json", "as_json", is_flag=True, help="Print the per-cell comparison as JSON.")
@click.pass_obj
def compare(obj: dict[str, str | None] | None, run_a: str, run_b: str, tolerance: float,
            store_url: str | None, as_json: bool) -> int:
    """Per-cell score ratios and verdict changes between RUN_A and RUN_B; exit 1 when a cell
    changed verdict, is missing from one run or differs by more than the tolerance."""
    from launcher.campaign.queries import compare_runs
    from launcher.campaign.store import Store
    from launcher.errors import UsageError

    url = store_url or (obj or {}).get("store_url")
    with Store.open(url) as store:
        for rid in (run_a, run_b):
            if store.get_run(rid) is None:
                raise UsageError(f"no run {rid} in the store {store.url}")
        diffs = compare_runs(store, run_a, run_b, tolerance=tolerance)
    bad = [d for d in diffs if not d.ok]
    if as_json:
        click.echo(json.dumps({"run_a": run_a, "run_b": run_b, "tolerance": tolerance,
                               "ok": not bad, "cells": [d.to_json() for d in diffs]}, indent=2))
    else:
        for d in diffs:
            ratio = f"{d.ratio:.3f}" if d.ratio is not None else "-"
            mark = "ok  " if d.ok else "DIFF"
            click.echo(f"{mark} {d.task} {d.submission} {d.gpu} {d.mode}/{d.variant}: "
                       f"{d.status_a} → {d.status_b}, ratio {ratio}" + (f" ({d.why})" if d.why else ""))
        click.echo(f"{len(diffs)} cells, {len(bad)} outside ±{tolerance:.0%} or changed", err=True)
    return 1 if bad else 0
