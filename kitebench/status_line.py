"""The live status line of ``submit`` and ``wait``: one line rewritten in place on a terminal,
a line per state change in CI logs."""

from __future__ import annotations

import sys

import click

from launcher.base import StatusEvent


class StatusLine:
    """One live status line on stderr: rewritten in place on a terminal, a line per event else."""

    def __init__(self, quiet: bool = False) -> None:
        self.tty = sys.stderr.isatty()
        self.quiet = quiet
        self.width = 0
        self.last_state = ""

    def __call__(self, event: StatusEvent) -> None:
        # Off a terminal (CI logs) a line per state change, not one per poll: elapsed-only
        # heartbeats carry no message.
        if self.quiet or (not self.tty and not event.message and event.state == self.last_state):
            return
        self.last_state = event.state
        text = f"[{event.elapsed_s:6.1f}s] {event.state}"
        if event.agent:
            text += f" [{event.agent}]"
        if event.message:
            text += f": {event.message}"
        if event.url:
            text += f" {event.url}"
        if self.tty:
            text = text[:200]
            pad = max(0, self.width - len(text))
            click.echo("\r" + text + " " * pad, err=True, nl=False)
            self.width = len(text)
        else:
            click.echo(text, err=True)

    def done(self) -> None:
        if self.tty and self.width and not self.quiet:
            click.echo("", err=True)
            self.width = 0
