"""``kitebench job``: the pipeline step on a vendor GPU host (a thin shim over host).

Exit codes (pipeline.yml retries 75 automatically):
  0    the job ran; result.json holds the verdict, pass or fail
  75   infrastructure failure (docker engine, container start, publishing): retry
  78   this host is misconfigured (runner image missing, bad KITEBENCH_* setting): fix the host
  143  interrupted by SIGTERM (cancel / agent stop); the partial result was published
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import click


@click.command("job")
@click.option("--result", "result_path", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("result.json"), show_default=True,
              help="Where result.json is written (and uploaded from).")
@click.option("--publish/--no-publish", default=None,
              help="Call buildkite-agent (default: when running in a Buildkite job).")
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=1), default=None,
              help="Container time limit in seconds (default: the payload's timeouts + margin).")
@click.option("--payload-env", default="SUBMISSION_PAYLOAD", show_default=True,
              help="Environment variable holding the encoded payload.")
def job(result_path: Path, publish: bool | None, timeout_s: float | None, payload_env: str) -> int:
    """Run SUBMISSION_PAYLOAD in an isolated container pinned to this agent's GPU and publish
    result.json (artifact, meta-data, annotation). Isolation comes from KITEBENCH_* variables."""
    from contract.resultio import write_result
    from host.job import HostExit, run_job
    from host.publish import publish as do_publish
    from host.settings import HostSettings, SettingsError

    env = dict(os.environ)
    cancel = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        click.echo(f"kitebench job: {signal.Signals(signum).name}: stopping the container", err=True)
        cancel.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)

    def status(state: str, message: str) -> None:
        click.echo(f"--- kitebench job: {state}: {message}", err=True)

    try:
        settings = HostSettings.from_env(env)
    except SettingsError as e:
        from contract.result import FullResult, RunnerExit

        outcome_result = FullResult.failure(f"host misconfigured: {e}", "container", RunnerExit.INTERNAL)
        code = HostExit.CONFIG
    else:
        outcome = run_job(env.get(payload_env), settings, host_env=env, cancel=cancel,
                          on_status=status, timeout_s=timeout_s)
        outcome_result, code = outcome.result, outcome.exit_code

    write_result(outcome_result, result_path.parent if str(result_path.parent) else Path("."),
                 name=result_path.name)
    verdict = "passed" if outcome_result.passed else ("failed" if outcome_result.success else "error")
    line = f"kitebench job: {verdict}"
    if outcome_result.error:
        line += f": {outcome_result.error.splitlines()[0][:300]}"
    click.echo(line, err=True)

    if publish is None:
        publish = bool(env.get("BUILDKITE_JOB_ID"))
    if publish:
        report = do_publish(outcome_result, result_path.resolve(), env=env)
        for err in report.errors:
            click.echo(f"kitebench job: publishing failed: {err}", err=True)
        if not report.ok and code == HostExit.RAN:
            code = HostExit.INFRA
    return int(code)
