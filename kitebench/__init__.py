"""The ``kitebench`` command: one click group, one small module per command.

Commands are loaded lazily (``--help`` stays fast and a command's heavy imports happen only when
it runs). Library errors are translated here, once: one line on stderr and an exit code
(0 ok/passed, 1 submission failed, 2 usage or bad input, 3 infrastructure/internal).
Set ``KITEBENCH_DEBUG=1`` for a traceback on unexpected errors.
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback

import click

from contract import __version__
from launcher.errors import KitebenchError

#: command name → "module:attribute". Add a command by adding its module and one line here.
COMMANDS: dict[str, str] = {
    "schema": "kitebench.schema:schema",
    "payload": "kitebench.payload:payload",
    "submit": "kitebench.submit:submit",
    "job": "kitebench.job:job",
    "pipeline": "kitebench.pipeline:pipeline",
    "image": "kitebench.image:image",
    "vendor": "kitebench.vendor:vendor",
    "gpus": "kitebench.gpus:gpus",
    "wait": "kitebench.wait:wait",
    "status": "kitebench.status:status",
    "cancel": "kitebench.cancel:cancel",
    "matrix": "kitebench.matrix:matrix",
    "runs": "kitebench.runs:runs",
    "leaderboard": "kitebench.leaderboard:leaderboard",
    "webhook": "kitebench.webhook:webhook",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(COMMANDS))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return super().get_command(ctx, cmd_name)
        module, _, attr = target.partition(":")
        return getattr(importlib.import_module(module), attr)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="kitebench")
def cli() -> None:
    """kitebench: run GPU kernel and LLM-serving benchmarks on Buildkite or locally."""


def main(argv: list[str] | None = None) -> int:
    try:
        rv = cli.main(args=argv, prog_name="kitebench", standalone_mode=False)
    except click.exceptions.Exit as e:
        return e.exit_code
    except click.exceptions.NoArgsIsHelpError as e:  # bare `kitebench` / group: the help text
        e.show()
        return e.exit_code
    except click.UsageError as e:
        # One line, not click's usage block: the help hint goes at the end of the same line.
        hint = f" (see '{e.ctx.command_path} --help')" if e.ctx is not None else ""
        click.echo(f"Error: {' '.join(e.format_message().split())}{hint}", err=True)
        return e.exit_code
    except click.ClickException as e:
        e.show()
        return e.exit_code
    except (click.Abort, KeyboardInterrupt):
        click.echo("Aborted.", err=True)
        return 130
    except KitebenchError as e:
        click.echo(f"Error: {e.message}", err=True)
        return e.exit_code
    except Exception as e:
        if os.environ.get("KITEBENCH_DEBUG"):
            traceback.print_exc()
        click.echo(f"Error: internal error: {type(e).__name__}: {e}", err=True)
        return 3
    return rv if isinstance(rv, int) else 0


def run() -> None:
    sys.exit(main())
