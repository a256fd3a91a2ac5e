"""``kitebench vendor render|check``: provision per-GPU agents and prove a host ready to go live."""

from __future__ import annotations

import json
from pathlib import Path

import click

from host.provision.plan import DEFAULT_RESERVE_MEMORY_MIB, KitSettings

#: The CLI's defaults are the settings model's: one place for each.
_KIT = KitSettings()

@click.group()
def vendor() -> None:
    """Vendor host provisioning: per-GPU Buildkite agents and the go-live checklist."""


@vendor.command()
@click.option(
    "--gpus",
    "gpus_spec",
    default="auto",
    show_default=True,
    help="'auto' (ask nvidia-smi) or INDEX:UUID:MODEL[,INDEX:UUID:MODEL...].",
)
@click.option("--queue", help="Buildkite queue of these agents [default: the GPU registry's].")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("/"),
    show_default=True,
    help="Root to write into (the host's / installs; another dir previews).",
)
@click.option("--image", default=_KIT.image, show_default=True, help="Runner image.")
@click.option("--cpus", help="CPU pool to split, e.g. 0-63 [default: the online CPUs].")
@click.option("--memory-total", help="Memory to split, e.g. 512G [default: MemTotal].")
@click.option(
    "--reserve-cpus",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="CPUs kept for the host (taken from the start of the pool).",
)
@click.option("--reserve-memory", default=f"{DEFAULT_RESERVE_MEMORY_MIB}M", show_default=True,
              help="Memory kept for the host.")
@click.option("--pids-limit", type=click.IntRange(min=16), default=_KIT.pids_limit, show_default=True)
@click.option("--tag", "extra_tags", multiple=True, help="Extra agent tag KEY=VALUE (repeatable).")
@click.option("--agent-bin", default=_KIT.agent_bin, show_default=True)
@click.option("--user", default=_KIT.user, show_default=True, help="Agent user.")
@click.option(
    "--verification-jwks-file",
    help="Signed pipelines: public JWKS on this host the agents verify step signatures with.",
)
@click.option(
    "--cgroup-parent/--no-cgroup-parent",
    default=False,
    show_default=True,
    help="Also put job containers in the GPU's slice (docker systemd cgroup driver).",
)
def render(
    gpus_spec: str,
    queue: str | None,
    out: Path,
    image: str,
    cpus: str | None,
    memory_total: str | None,
    reserve_cpus: int,
    reserve_memory: str,
    pids_limit: int,
    extra_tags: tuple[str, ...],
    agent_bin: str,
    user: str,
    cgroup_parent: bool,
    verification_jwks_file: str | None,
) -> None:
    """Write the per-GPU agent units, drop-ins, slices and hooks."""
    from pydantic import ValidationError

    from host.provision.host import Host
    from host.provision.plan import parse_size_mib
    from host.provision.render import render as do_render
    from launcher.errors import UsageError

    try:
        kit = KitSettings(
            image=image,
            pids_limit=pids_limit,
            extra_tags=extra_tags,
            agent_bin=agent_bin,
            user=user,
            group=user,
            cgroup_parent=cgroup_parent,
            verification_jwks_file=verification_jwks_file,
        )
    except ValidationError as e:
        err = e.errors()[0]
        raise UsageError(f"{'.'.join(map(str, err['loc']))}: {err['msg']}") from None
    result = do_render(
        Host(),
        out,
        gpus_spec=gpus_spec,
        queue=queue,
        kit=kit,
        cpus=cpus,
        memtotal_mib=parse_size_mib(memory_total) if memory_total else None,
        reserve_cpus=reserve_cpus,
        reserve_memory_mib=parse_size_mib(reserve_memory),
    )
    for g in result.gpus:
        click.echo(
            f"GPU {g.index} {g.uuid} {g.model}: queue={g.queue} cpus={g.cpuset} "
            f"memory={g.memory_bytes // 2**20}MiB"
        )
    for path in result.written:
        click.echo(f"wrote {path}")
    for path in result.removed:
        click.echo(f"removed {path} (GPU gone: disable its agent)")
    indices = " ".join(f"kitebench-agent@{g.index}" for g in result.gpus)
    click.echo(
        f"next: put BUILDKITE_AGENT_TOKEN=... in {kit.token_file} (root, 0600), then\n"
        f"  systemctl daemon-reload && systemctl enable --now {indices}\n"
        "  kitebench vendor check"
    )


@vendor.command()
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.option(
    "--root",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    default=Path("/"),
    show_default=True,
    help="Host root to inspect.",
)
@click.option(
    "--min-free-gb",
    type=float,
    default=20.0,
    show_default=True,
    help="Free disk wanted for the build paths (GiB).",
)
def check(as_json: bool, root: Path, min_free_gb: float) -> None:
    """Go-live checklist: agents, GPU binding, slices, Docker, image, token, hooks, job policy,
    disk. Exit 1 on FAIL."""
    from host.provision.check import Status, format_table, run_checks
    from host.provision.host import Host

    results = run_checks(Host(root=root), min_free_gib=min_free_gb)
    failed = any(r.status == Status.FAIL for r in results)
    if as_json:
        click.echo(
            json.dumps({"ok": not failed, "checks": [r.as_dict() for r in results]}, indent=2)
        )
    else:
        click.echo(format_table(results))
    if failed:
        raise click.exceptions.Exit(1)
