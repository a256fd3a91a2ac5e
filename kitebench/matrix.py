"""``kitebench matrix plan|run``: campaigns over a matrix file.

Exit codes of ``run``: 0 every cell passed, 1 a cell failed, 2 usage, 3 infrastructure (a
launcher failure, an interrupted cell).
"""

from __future__ import annotations

import json
from pathlib import Path

import click

_FILE = click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
_STORE = click.option("--store", "store_url", envvar="KITEBENCH_STORE",
                      help="Results store URL (sqlite:///PATH.db, postgresql://USER@HOST/DB) "
                           "[env KITEBENCH_STORE; default an SQLite file in the user data dir].")


@click.group()
def matrix() -> None:
    """Plan and run campaigns: tasks × submissions × GPUs × modes × variants."""


@matrix.command()
@_FILE
@click.option("--json", "as_json", is_flag=True, help="Print the cells as JSON.")
def plan(file: Path, as_json: bool) -> None:
    """Print the cells of FILE without running anything."""
    from launcher.campaign.matrix import load_matrix
    from launcher.campaign.plan import plan as make_plan

    m = load_matrix(file)
    cells = make_plan(m)
    if as_json:
        click.echo(json.dumps({"name": m.name, "cells": [c.to_json() for c in cells]}, indent=2))
        return
    for c in cells:
        click.echo(f"{c.key}  {c.task}  {c.submission}  {c.gpu}  {c.mode}  {c.variant}")
    click.echo(f"{len(cells)} cells", err=True)


@matrix.command()
@_FILE
@click.option("--backend", type=click.Choice(["local", "buildkite"]),
              help="Default: buildkite when BUILDKITE_API_TOKEN is set, else local.")
@click.option("--parallel", "-j", type=click.IntRange(min=1),
              help="Local backend: cells at once (default 1: timings on one machine "
                   "interfere). Buildkite: every cell is in flight at once.")
@_STORE
@click.option("--resume", "resume", metavar="RUN_ID",
              help="Continue this run: terminal cells are kept, builds re-attached.")
@click.option("--isolation", type=click.Choice(["auto", "docker", "process"]), default="auto",
              show_default=True, help="Local backend: Docker container or plain subprocess.")
@click.option("--org", help="Buildkite organisation slug [env BUILDKITE_ORG].")
@click.option("--pipeline", help="Buildkite pipeline slug [env BUILDKITE_PIPELINE].")
@click.option("--api-url", help="API base URL [env BUILDKITE_API_URL].")
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=1),
              help="Time budget per cell in seconds (default: from the task's timeouts).")
@click.option("--json", "as_json", is_flag=True, help='Print {"run_id", "cells"} as JSON.')
@click.option("--quiet", "-q", is_flag=True, help="No live progress.")
def run(file: Path, backend: str | None, parallel: int | None, store_url: str | None,
        resume: str | None, isolation: str, org: str | None, pipeline: str | None,
        api_url: str | None, timeout_s: float | None, as_json: bool, quiet: bool) -> int:
    """Run every cell of FILE, record every attempt, print the pass/fail table."""
    from launcher.base import default_backend
    from launcher.campaign.execute import Campaign
    from launcher.campaign.matrix import load_matrix
    from launcher.campaign.plan import plan as make_plan
    from launcher.campaign.progress import Progress, cell_table, console, summary_line
    from launcher.campaign.store import Store

    m = load_matrix(file)
    cells = make_plan(m)
    backend = backend or default_backend()
    store = Store.open(store_url)
    campaign = Campaign(store=store, cells=cells, backend=backend, name=m.name,
                        parallel=parallel or 1,
                        run_id=resume, matrix_json=m.model_dump_json(by_alias=True),
                        extra={k: v for k, v in (("isolation", isolation), ("org", org),
                                                 ("pipeline", pipeline), ("api_url", api_url))
                               if v is not None},
                        timeout_s=timeout_s)
    todo = campaign.prepare()  # the plan is in the store before anything is submitted
    progress = Progress(campaign.states, quiet=quiet)
    campaign.on_change = progress
    click.echo(f"run {campaign.run_id}: {len(cells)} cells, {len(todo)} to run on the "
               f"{backend} backend, store {store.url} (resume: --resume {campaign.run_id})",
               err=True)
    try:
        with progress:
            states = campaign.run()
    except KeyboardInterrupt:
        flying = sum(1 for s in campaign.states if s.status == "partial" and s.finished is None)
        click.echo(f"interrupted: resume with --resume {campaign.run_id}"
                   + (f" ({flying} local cell(s) in flight end their current run first; "
                      "Ctrl-C again leaves them)" if flying and backend == "local" else ""),
                   err=True)
        raise
    if as_json:
        click.echo(json.dumps({"run_id": campaign.run_id, "status": campaign.overall(),
                               "cells": [s.to_json() for s in states]}, indent=2))
    else:
        console().print(cell_table(states, title=f"run {campaign.run_id}"))
    click.echo(f"run {campaign.run_id}: {summary_line(states)}", err=True)
    store.close()
    return campaign.exit_code()


@matrix.command()
@click.argument("run_id")
@click.option("--html", "html_file", required=True, type=click.Path(dir_okay=False),
              help="Write the self-contained HTML page here.")
@_STORE
def report(run_id: str, html_file: str, store_url: str | None) -> None:
    """Write RUN_ID as one HTML page: pass/fail grid, score charts, failures."""
    from launcher.campaign.html_report import write_report
    from launcher.campaign.store import Store

    with Store.open(store_url) as store:
        n = write_report(store, run_id, html_file)
    click.echo(f"{html_file}: run {run_id}, {n} cells", err=True)
