"""``kitebench image validate IMAGE``: the image checks a vendor runs before going live."""

from __future__ import annotations

import json

import click


@click.group("image")
def image() -> None:
    """Runner images (see images/README.md)."""


@image.command("validate")
@click.argument("image_ref", metavar="IMAGE")
@click.option("--gpu", default=None, metavar="UUID|INDEX",
              help="The GPU this image will be pinned to (enables the GPU checks).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def validate(image_ref: str, gpu: str | None, as_json: bool) -> int:
    """Check IMAGE check by check (PASS / FAIL / SKIP with a reason). Exit 1 on any FAIL."""
    from host.engine import EngineUnavailable, docker_client
    from host.image_validate import format_plan, format_table, validate_image
    from launcher.errors import InfraError

    try:
        client = docker_client()
    except EngineUnavailable as e:
        raise InfraError(e.message) from None

    if not as_json:
        click.echo(format_plan(image_ref, gpu))
        click.echo()

    def progress(c):  # type: ignore[no-untyped-def]
        if not as_json:
            click.echo(f"  ... {c.title}: {c.status}", err=True)

    report = validate_image(image_ref, gpu=gpu, client=client, on_result=progress)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        click.echo(format_table(report))
    return 1 if report.failed else 0
