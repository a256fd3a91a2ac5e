"""``kitebench schema payload|result|matrix``: the JSON Schemas generated from the models."""

from __future__ import annotations

import json

import click


@click.command()
@click.argument("which", type=click.Choice(["payload", "result", "matrix"]))
def schema(which: str) -> None:
    """Print the JSON Schema of the payload, of result.json or of a matrix file."""
    from contract.payload import payload_json_schema
    from contract.result import result_json_schema

    if which == "matrix":
        from launcher.campaign.matrix import matrix_json_schema

        doc = matrix_json_schema()
    else:
        doc = payload_json_schema() if which == "payload" else result_json_schema()
    click.echo(json.dumps(doc, indent=2))
