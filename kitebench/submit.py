"""``kitebench submit``: run a submission against a task and print the verdict.

Exit codes: 0 every run passed, 1 the submission failed, 2 usage/bad input, 3 infrastructure.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from contract.payload import MODES
from kitebench.status_line import StatusLine
from kitebench.wait import webhook_options

if TYPE_CHECKING:
    from launcher.base import SubmitOptions
    from launcher.campaign.record import SubmitRecord


@click.command()
@click.argument("task_dir", type=click.Path(path_type=Path))
@click.option(
    "--submission",
    "-s",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The submitted source file (kernel tasks).",
)
@click.option(
    "--archive",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The fork archive (.tar.gz/.tgz/.zip; model tasks).",
)
@click.option(
    "--archive-url",
    help="Model tasks: an http(s) URL serving exactly the --archive file (for big archives).",
)
@click.option("--mode", "-m", type=click.Choice(MODES), default="test", show_default=True)
@click.option(
    "--backend",
    type=click.Choice(["local", "buildkite"]),
    help="Default: buildkite when BUILDKITE_API_TOKEN is set, else local.",
)
@click.option("--gpu", help="GPU kind from the registry (buildkite backend).")
@click.option("--queue", help="Buildkite queue (bypasses the GPU registry).")
@click.option("--org", help="Buildkite organisation slug [env BUILDKITE_ORG].")
@click.option("--pipeline", help="Buildkite pipeline slug [env BUILDKITE_PIPELINE].")
@click.option(
    "--api-url", help="API base URL [env BUILDKITE_API_URL; default the Buildkite API]."
)
@click.option("--arch", help="GPU arch for cu tasks, e.g. 90a (default: detected where it runs).")
@click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(min=1),
    help="Overall time budget in seconds (default: from the task's timeouts).",
)
@click.option(
    "--gpus-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="GPU registry file (buildkite backend).",
)
@click.option(
    "--isolation",
    type=click.Choice(["auto", "docker", "process"]),
    default="auto",
    show_default=True,
    help="Local backend: Docker container or plain subprocess.",
)
@click.option(
    "--output",
    "-o",
    type=click.Path(),  # a str: Path() would drop the trailing "/" that marks a directory
    help="Write result.json here (a file, or a directory to hold result.json).",
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print the result JSON instead of the report."
)
@click.option("--quiet", "-q", is_flag=True, help="No live status line.")
@click.option("--store", "store_url", envvar="KITEBENCH_STORE",
              help="Results store URL that records this attempt [env KITEBENCH_STORE; default "
                   "an SQLite file in the user data dir].")
@click.option("--no-store", is_flag=True, help="Do not record this attempt in the results store.")
@webhook_options
def submit(
    task_dir: Path,
    submission: Path | None,
    archive: Path | None,
    archive_url: str | None,
    mode: str,
    backend: str | None,
    gpu: str | None,
    queue: str | None,
    org: str | None,
    pipeline: str | None,
    api_url: str | None,
    arch: str | None,
    timeout_s: float | None,
    gpus_file: Path | None,
    isolation: str,
    output: str | None,
    as_json: bool,
    quiet: bool,
    store_url: str | None,
    no_store: bool,
    webhook_port: int | None,
    webhook_host: str,
) -> int:
    """Run a submission against TASK_DIR (a reference-kernels task.yml dir) and print the verdict."""
    from contract.resultio import write_result
    from launcher.api import options, submit_options
    from launcher.campaign.outcome import exit_class
    from launcher.errors import UsageError
    from launcher.report import render_result

    opts = options(
        task_dir,
        submission,
        mode=mode,
        backend=backend,
        archive=archive,
        gpu=gpu,
        queue=queue,
        arch=arch,
        timeout_s=timeout_s,
        gpus_file=gpus_file,
        isolation=isolation,
        archive_url=archive_url,
        org=org,
        pipeline=pipeline,
        api_url=api_url,
        webhook_port=webhook_port,
        webhook_host=webhook_host if webhook_port is not None else None,
    )
    status = StatusLine(quiet=quiet)
    record = None if no_store else _record(opts, store_url)
    try:
        result = submit_options(opts, on_status=record.wrap(status) if record else status)
    except BaseException as e:
        status.done()
        if record is not None and not isinstance(e, UsageError):
            _quietly(record.failed, e)
        raise
    status.done()
    if record is not None:
        _quietly(record.done, result)
    if output is not None:
        out = Path(output)
        try:
            if out.is_dir() or output.endswith(("/", "\\")):
                where = write_result(result, out)
            else:
                where = write_result(result, out.parent, out.name)
        except OSError as e:
            # The run is done: show its verdict, then the (usage) error about the output path.
            click.echo(result.to_json() if as_json else render_result(result))
            raise UsageError(f"cannot write the result to {output}: {e.strerror or e}") from None
        if not as_json:
            click.echo(f"result: {where}", err=True)
    click.echo(result.to_json() if as_json else render_result(result))
    return exit_class(result)


def _record(opts: SubmitOptions, store_url: str | None) -> SubmitRecord | None:
    """The store record of this attempt; a store that cannot be opened costs a warning, not the
    run (the verdict matters more than its bookkeeping)."""
    from launcher.errors import InfraError, UsageError

    if opts.submission is None and opts.archive is None:
        return None  # the payload build reports the usage error
    try:
        from launcher.campaign.record import SubmitRecord
        from launcher.campaign.store import Store
    except ImportError as e:  # an install without the store's libraries still runs jobs
        click.echo(f"warning: not recorded in the results store: {e} "
                   "(pip install kitebench's dependencies, or pass --no-store)", err=True)
        return None
    try:
        store = Store.open(store_url)
    except (InfraError, UsageError) as e:
        if isinstance(e, UsageError) and store_url:
            raise  # a bad --store URL is the user's to fix
        click.echo(f"warning: not recorded in the results store: {e.message}", err=True)
        return None
    try:
        return SubmitRecord(store, opts)
    except (UsageError, OSError):
        store.close()
        return None  # a task or submission that cannot be read: the run says so, in one line
    except InfraError as e:
        store.close()
        click.echo(f"warning: not recorded in the results store: {e.message}", err=True)
        return None


def _quietly(fn: Callable[[Any], None], arg: Any) -> None:
    from launcher.errors import KitebenchError

    try:
        fn(arg)
    except KitebenchError as e:
        click.echo(f"warning: not recorded in the results store: {e.message}", err=True)
