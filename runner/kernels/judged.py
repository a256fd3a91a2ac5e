"""The built-in harness, started by the runner: the judge as the runner's user, its worker (the
submission) under the job's sandbox.

A ``py`` payload whose ``main`` is the documented stub (:mod:`runner.harness.stub`) does not run
as the submission: the runner runs ``python -m runner.harness.judge`` itself, in a judge dir of
its own (0700, the task's files, never given to the submission), and tells the judge which
sandbox and which work dir its worker gets. Any other main is a foreign harness and runs as the
submission, as before.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from contract.payload import CuPayload, PyPayload
from runner.harness.stub import stub_options
from runner.kernels.process import ProcessOutcome, run_process
from runner.kernels.workdir import CASES_NAME, private_dir, write_files
from runner.sandbox import Sandbox

ENV_OPTIONS = "KITEBENCH_JUDGE_OPTIONS"


def judge_options(payload: PyPayload | CuPayload) -> dict[str, str] | None:
    """main()'s options when the payload's main is the built-in stub, else None."""
    if not isinstance(payload, PyPayload):
        return None
    return stub_options(payload.sources.get(payload.main, ""))


def run_judged(
    payload: PyPayload,
    options: dict[str, str],
    *,
    mode: str,
    wd: Path,
    env: dict[str, str],
    sandbox: Sandbox | None,
    timeout_s: float,
    work_base: str | None = None,
) -> ProcessOutcome:
    """One run of the built-in harness. ``wd`` (the submission's work dir, already holding the
    sources and the cases file) becomes the worker's; the judge gets a private copy."""
    # here, not at the top: every kernel job imports this module (judge_options), and the judge's
    # own modules are most of the runner's import time outside the contract
    from runner.harness.judge import ENV_SANDBOX, ENV_WORKER_DIR, sandbox_to_env

    sandbox = sandbox or Sandbox(mode="none")
    with private_dir("kitebench-judge-", base=work_base) as jd:
        write_files(jd, payload.sources)
        shutil.copyfile(wd / CASES_NAME, jd / CASES_NAME)
        judge_env = {
            **env,
            ENV_SANDBOX: sandbox_to_env(sandbox),
            ENV_WORKER_DIR: str(wd),
            ENV_OPTIONS: json.dumps(options),
            # the judge's bytecode stays out of every dir (nothing for a later run to find)
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        outcome = run_process(
            [sys.executable, "-m", "runner.harness.judge", mode, CASES_NAME],
            cwd=jd,
            env=judge_env,
            timeout_s=timeout_s,
        )
        # the judge stops its worker; anything of the submission's uid still alive dies here
        killed, survivors = sandbox.kill_all()
    outcome.leftovers_killed += killed
    outcome.survivors = sorted(set(outcome.survivors) | set(survivors))
    return outcome
