"""``kitebench leaderboard TASK [--gpu G]``: the best passing ranked attempt per submission."""

from __future__ import annotations

import json

import click

from kitebench.matrix import _STORE


@click.command()
@click.argument("task")
@click.option("--gpu", help="Only attempts on this GPU.")
@_STORE
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list, best first.")
def leaderboard(task: str, gpu: str | None, store_url: str | None, as_json: bool) -> None:
    """Rank the submissions of TASK (its name) by their best passing leaderboard-mode score;
    a submission with a secret (private) run shows only when that run passed too."""
    from launcher.campaign.queries import leaderboard as query
    from launcher.campaign.store import Store

    with Store.open(store_url) as store:
        rows = query(store, task, gpu=gpu)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo(f"no passing ranked attempt of {task}" + (f" on {gpu}" if gpu else ""), err=True)
        return
    better = "lower" if rows[0]["ascending"] else "higher"
    click.echo(f"{task}" + (f" on {gpu}" if gpu else "") + f": {rows[0]['metric']} ({better} is better)")
    for r in rows:
        click.echo(f"{r['rank']:>3}  {r['score']:<12.6g} {r['submission']}  "
                   f"{r['submission_sha256'][:12]}  {r['gpu']}  attempt {r['attempt_id']}")
