"""``kitebench webhook serve``: receive Buildkite webhooks, verify them, print each as a line.

The receiver a waiter uses runs inside ``kitebench submit/wait --webhook-port P`` itself; this
command is the same receiver on its own: to check a new webhook registration end to end (Buildkite's
``ping`` shows up), or to feed other tools one JSON line per verified event on stdout.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import click

from launcher.webhook import DEFAULT_HOST, DEFAULT_PORT


def event_line(event: dict[str, Any]) -> str:
    """One JSON line for a verified event (no secrets: the body never carries them)."""
    line: dict[str, Any] = {"event": event.get("event")}
    build = event.get("build") if isinstance(event.get("build"), dict) else None
    if build is not None:
        line.update(build=build.get("number"), state=build.get("state"))
    job = event.get("job") if isinstance(event.get("job"), dict) else None
    if job is not None:
        line.update(job_state=job.get("state"), exit_status=job.get("exit_status"))
    pipeline = event.get("pipeline") if isinstance(event.get("pipeline"), dict) else None
    if pipeline is not None:
        line["pipeline"] = pipeline.get("slug")
    if build is not None and build.get("web_url"):
        line["url"] = build["web_url"]
    return json.dumps(line)


def serve_until(host: str, port: int, stop: threading.Event) -> None:
    """Run the receiver until ``stop`` is set (or Ctrl-C), printing each event."""
    from launcher.events import BuildEvents
    from launcher.webhook import WebhookServer, WebhookSettings

    events = BuildEvents()
    events.subscribe(lambda ev: click.echo(event_line(ev)))
    with WebhookServer(WebhookSettings(port=port, host=host), events) as srv:
        click.echo(f"listening on {srv.url} ({srv.app.auth.mode} mode); Ctrl-C stops",
                   err=True)
        while not stop.wait(0.5):
            pass


@click.group("webhook")
def webhook() -> None:
    """Buildkite webhooks: completion without polling (see docs/webhooks.md)."""


@webhook.command("serve")
@click.option("--port", type=click.IntRange(0, 65535), default=DEFAULT_PORT, show_default=True,
              help="Port to listen on.")
@click.option("--host", default=DEFAULT_HOST, show_default=True,
              help="Address to listen on (put a TLS proxy in front for Buildkite to reach it).")
def serve(port: int, host: str) -> None:
    """Verify deliveries (KITEBENCH_WEBHOOK_SECRET: signature mode, or KITEBENCH_WEBHOOK_TOKEN:
    token mode) and print one JSON line per accepted event."""
    serve_until(host, port, threading.Event())
