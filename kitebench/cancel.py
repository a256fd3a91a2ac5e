"""``kitebench cancel BUILD_NUMBER``."""

from __future__ import annotations

import click

from kitebench.wait import buildkite_options, make_launcher


@click.command("cancel")
@click.argument("build_number", type=click.IntRange(min=1))
@buildkite_options
def cancel(build_number: int, org: str | None, pipeline: str | None, api_url: str | None) -> int:
    """Cancel build BUILD_NUMBER (a build that already finished is reported, not an error)."""
    launcher = make_launcher(org, pipeline, api_url)
    with launcher.client:
        st = launcher.cancel(build_number)
    click.echo(f"build #{st.number}: {st.state}  {st.web_url}")
    return 0
