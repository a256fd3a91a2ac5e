"""``kitebench pipeline render``: the upload-free pipeline YAML, from the GPU registry."""

from __future__ import annotations

from pathlib import Path

import click


@click.group("pipeline")
def pipeline() -> None:
    """The Buildkite pipeline of the GPU agents (see pipeline.yml)."""


@pipeline.command("render")
@click.option("--gpus-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="GPU registry merged over the shipped one (or $KITEBENCH_GPUS_FILE).")
def render_cmd(gpus_file: Path | None) -> None:
    """Print one `kitebench job` step per GPU queue, each guarded by
    if: build.env("GPU_QUEUE") == "<queue>", for the pipeline settings' YAML editor."""
    from host.pipeline import render
    from launcher.errors import UsageError
    from launcher.gpus import load_registry

    registry = load_registry(gpus_file)
    if not registry.gpus:
        raise UsageError("the GPU registry is empty: nothing to render")  # exit 2, not 1
    click.echo(render(registry), nl=False)
