"""``kitebench wait BUILD_NUMBER``: follow an existing build to its result (e.g. after the
submitting process was killed), and the options/output helpers the Buildkite commands share."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from kitebench.status_line import StatusLine
from launcher.webhook import DEFAULT_HOST

F = Callable[..., Any]


def buildkite_options(f: F) -> F:
    """--org / --pipeline / --api-url (token only from BUILDKITE_API_TOKEN: never a flag, so it
    stays out of shell history and process listings)."""
    f = click.option("--api-url", envvar="BUILDKITE_API_URL", default=None,
                     help="API base URL [env BUILDKITE_API_URL; default the Buildkite API].")(f)
    f = click.option("--pipeline", envvar="BUILDKITE_PIPELINE", default=None,
                     help="Pipeline slug [env BUILDKITE_PIPELINE].")(f)
    f = click.option("--org", envvar="BUILDKITE_ORG", default=None,
                     help="Organisation slug [env BUILDKITE_ORG].")(f)
    return f


def webhook_options(f: F) -> F:
    """--webhook-port / --webhook-host: receive Buildkite's webhooks while waiting."""
    f = click.option("--webhook-host", default=DEFAULT_HOST, show_default=True,
                     help="Address the webhook receiver listens on.")(f)
    f = click.option("--webhook-port", type=click.IntRange(1, 65535), default=None,
                     help="Receive Buildkite webhooks on this port while waiting and poll only "
                          "as a safety net (KITEBENCH_WEBHOOK_SECRET or KITEBENCH_WEBHOOK_TOKEN; "
                          "see docs/webhooks.md).")(f)
    return f


def make_launcher(org: str | None, pipeline: str | None, api_url: str | None,
                  webhook_port: int | None = None, webhook_host: str = DEFAULT_HOST) -> Any:
    from launcher.buildkite import BuildkiteLauncher
    from launcher.client import BuildkiteClient

    webhook = None
    if webhook_port is not None:
        from launcher.webhook import WebhookAuth, WebhookSettings

        # The secret is checked before any API call: a missing one is a usage error up front.
        webhook = WebhookSettings(port=webhook_port, host=webhook_host,
                                  auth=WebhookAuth.from_env())
    return BuildkiteLauncher(BuildkiteClient(org=org, pipeline=pipeline, base_url=api_url),
                             webhook=webhook)


def emit_result(result: Any, as_json: bool, output: Path | None) -> int:
    """Print (and optionally save) a result; return the exit code: 0 passed, 1 the submission
    failed, 3 infrastructure (including a build that was cancelled or lost its agent)."""
    from contract.resultio import write_result
    from launcher.campaign.outcome import exit_class

    if output is not None:
        write_result(result, output.parent, output.name)
    if as_json:
        click.echo(result.to_json())
    else:
        from launcher.report import render_result

        click.echo(render_result(result))
    return exit_class(result)


@click.command("wait")
@click.argument("build_number", type=click.IntRange(min=1))
@buildkite_options
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=1), default=None,
              help="Give up after this many seconds (default: the payload's timeouts + margin).")
@click.option("--cancel-on-timeout", is_flag=True, help="Cancel the build when giving up (timeout or Ctrl-C); by default it keeps running.")
@click.option("--json", "as_json", is_flag=True, help="Print result.json instead of a report.")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the result to this file.")
@click.option("--quiet", "-q", is_flag=True, help="No status lines on stderr.")
@webhook_options
def wait(build_number: int, org: str | None, pipeline: str | None, api_url: str | None,
         timeout_s: float | None, cancel_on_timeout: bool, as_json: bool, output: Path | None,
         quiet: bool, webhook_port: int | None, webhook_host: str) -> int:
    """Wait for build BUILD_NUMBER and print its result (result.json, or why there is none)."""
    launcher = make_launcher(org, pipeline, api_url, webhook_port, webhook_host)
    status = StatusLine(quiet=quiet)
    try:
        with launcher.client:
            result = launcher.wait(build_number, on_status=status, timeout_s=timeout_s,
                                   cancel_on_timeout=cancel_on_timeout)
    finally:
        status.done()
    return emit_result(result, as_json, output)
