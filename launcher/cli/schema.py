"""``kitebench schema payload|result``: the JSON Schemas generated from the contract models."""

from __future__ import annotations

import json

import click


@click.command()
@click.argument("which", type=click.Choice(["payload", "result"]))
def schema(which: str) -> None:
    """Print the JSON Schema of the payload or of result.json."""
    from contract.models import payload_json_schema, result_json_schema

    doc = payload_json_schema() if which == "payload" else result_json_schema()
    click.echo(json.dumps(doc, indent=2))
