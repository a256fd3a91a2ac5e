"""``kitebench payload encode|decode``."""

from __future__ import annotations

import json
import os
import sys

import click

from contract.payload import MODES
from launcher.errors import UsageError


@click.group()
def payload() -> None:
    """Build payloads from task dirs and inspect encoded ones."""


@payload.command()
@click.argument("task_dir", type=click.Path(file_okay=True, dir_okay=True))
@click.option("--submission", "-s", type=click.Path(dir_okay=False), help="The submitted file.")
@click.option("--mode", "-m", type=click.Choice(MODES), default="test", show_default=True)
@click.option("--arch", help="GPU arch for cu tasks, e.g. 90a (default: detect on the host).")
@click.option("--json", "as_json", is_flag=True, help="Print the JSON config, not the encoded payload.")
@click.option("--no-limit", is_flag=True, help="Allow payloads over the 96 KiB inline limit.")
def encode(task_dir: str, submission: str | None, mode: str, arch: str | None, as_json: bool, no_limit: bool) -> None:
    """Encode TASK_DIR/task.yml + a submission as a SUBMISSION_PAYLOAD value."""
    from contract import codec
    from contract.payload import dump_payload
    from launcher.task import build_payload

    model = build_payload(task_dir, submission, mode=mode, arch=arch)
    if as_json:
        click.echo(json.dumps(dump_payload(model), indent=2))
        return
    try:
        click.echo(codec.encode(model, limit=None if no_limit else codec.INLINE_LIMIT))
    except codec.PayloadError as e:
        raise UsageError(e.message) from None


@payload.command()
@click.option("--file", "-f", "path", type=click.Path(dir_okay=False, allow_dash=True),
              help="Read the payload from a file ('-' for stdin).")
@click.option("--raw", is_flag=True, help="Print the JSON as decoded, without validating it.")
def decode(path: str | None, raw: bool) -> None:
    """Decode a payload (from --file, stdin, or $SUBMISSION_PAYLOAD) and print it as JSON."""
    from contract import codec
    from contract.payload import dump_payload

    if path == "-" or (path is None and not os.environ.get("SUBMISSION_PAYLOAD") and not sys.stdin.isatty()):
        text: str | None = sys.stdin.read()
    elif path is not None:
        try:
            with open(path, encoding="ascii", errors="replace") as f:
                text = f.read()
        except OSError as e:
            raise UsageError(f"cannot read {path}: {e.strerror}") from None
    else:
        text = os.environ.get("SUBMISSION_PAYLOAD")
    try:
        data = codec.decode_json(text) if raw else dump_payload(codec.decode(text))
    except codec.PayloadError as e:
        raise UsageError(e.message) from None
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))
