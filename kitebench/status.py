"""``kitebench status BUILD_NUMBER``: one build's state, jobs and agents."""

from __future__ import annotations

import dataclasses
import json

import click

from kitebench.wait import buildkite_options, make_launcher


@click.command("status")
@click.argument("build_number", type=click.IntRange(min=1))
@buildkite_options
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(build_number: int, org: str | None, pipeline: str | None, api_url: str | None,
           as_json: bool) -> int:
    """Show the state of build BUILD_NUMBER."""
    launcher = make_launcher(org, pipeline, api_url)
    with launcher.client:
        st = launcher.status(build_number)
    if as_json:
        click.echo(json.dumps(dataclasses.asdict(st), indent=2))
        return 0
    click.echo(f"build #{st.number}: {st.state}  {st.web_url}")
    if st.message:
        click.echo(f"  {st.message}")
    for label, value in (("created", st.created_at), ("started", st.started_at),
                         ("finished", st.finished_at)):
        if value:
            click.echo(f"  {label:<9}{value}")
    for job in st.jobs:
        extra = "".join(f"  {k} {job[k]}" for k in ("exit_status", "signal_reason")
                        if job.get(k) is not None)
        click.echo(f"  job {job['name']}: {job['state']}"
                   + (f" on {job['agent']}" if job.get("agent") else "") + extra)
    return 0
