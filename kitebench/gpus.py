"""``kitebench gpus``: the GPU registry (name → queue, arch, vendor)."""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.command("gpus")
@click.option("--gpus-file", type=click.Path(dir_okay=False, path_type=Path),
              envvar="KITEBENCH_GPUS_FILE", default=None,
              help="A registry file merged over the shipped one [env KITEBENCH_GPUS_FILE].")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def gpus(gpus_file: Path | None, as_json: bool) -> int:
    """List the GPUs `kitebench submit --gpu` knows and the queue each goes to."""
    from launcher.gpus import load_registry

    reg = load_registry(gpus_file)
    if as_json:
        click.echo(json.dumps({n: g.model_dump(exclude={"name"}) for n, g in reg.gpus.items()},
                              indent=2))
        return 0
    rows = [("GPU", "QUEUE", "ARCH", "VENDOR", "TAGS")]
    for name in sorted(reg.gpus):
        g = reg.gpus[name]
        rows.append((name, g.queue, g.arch or "-", g.vendor,
                     ",".join(f"{k}={v}" for k, v in g.tags.items()) or "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return 0
