"""Run a ``py`` or ``cu`` payload: the field's mode → runs sequence, one fresh work dir per run."""

from __future__ import annotations

import datetime as dt
import math
import resource
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

from contract import ranking
from contract.payload import CuPayload, PyPayload, TestCase, runs_for_mode
from contract.result import (
    CompileResult,
    EvalResult,
    FullResult,
    HarnessExit,
    IntegrityCheck,
    KitebenchInfo,
    Phase,
    ProfileResult,
    RunnerExit,
    RunResult,
    ScoreInfo,
    Stage,
    SystemInfo,
    runs_passed,
)
from runner.context import RunContext
from runner.kernels import compile as nvcc
from runner.kernels import integrity
from runner.kernels.environment import child_env
from runner.kernels.failures import describe_failure
from runner.kernels.judged import judge_options, run_judged
from runner.kernels.process import (
    ProcessOutcome,
    become_subreaper,
    hide_from_same_user,
    run_process,
)
from runner.kernels.protocol import (
    MAX_KEYS,
    bounded_count,
    count_problem,
    mean_ns,
    parse_popcorn,
)
from runner.kernels.workdir import CASES_NAME, cases_text, private_dir, write_files
from runner.sandbox import Sandbox
from runner.sandbox import from_env as sandbox_from_env
from runner.system import collect_system, pids_limit_hits

KernelPayload = PyPayload | CuPayload

def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def cases_for_run(payload: KernelPayload, run: str) -> list[TestCase]:
    """The cases a run gets: tests for ``test``; benchmarks otherwise, only the last one with
    ``ranking_by: last``; ``profile.N`` gets benchmark N of those."""
    if run == "test":
        return list(payload.tests)
    benches = list(payload.benchmarks)
    if payload.ranking_by == "last" and benches:
        benches = benches[-1:]
    if run.startswith("profile."):
        i = int(run.split(".", 1)[1])
        return benches[i : i + 1]
    return benches


def run_names(payload: KernelPayload) -> list[str]:
    n = 1 if payload.ranking_by == "last" else len(payload.benchmarks)
    return runs_for_mode(payload.mode, n)


def harness_mode(run: str) -> str:
    return "profile" if run.startswith("profile.") else run


def score(result: dict[str, str], ranking_by: str, cases: int | None = None) -> float | None:
    """Seconds: the benchmark means (ns) combined by ranking_by; custom = the harness's ``score``.
    ``benchmark-count`` is the harness's claim: above ``cases`` (the payload's benchmarks for the
    run, when known) or above what the protocol can hold there is no score, and the loop never
    runs longer than that."""
    if ranking_by == "custom":
        try:
            value = float(result["score"])
        except (KeyError, ValueError):
            return None
        return value if math.isfinite(value) else None
    if count_problem(result, MAX_KEYS if cases is None else cases) is not None:
        return None
    count = bounded_count(result, "benchmark", cases)
    means = [mean_ns(result, i) for i in range(count)]
    if any(m is None for m in means):
        return None
    return ranking.combine([m / 1e9 for m in means if m is not None], ranking_by)


def _run_result(outcome: ProcessOutcome, cases: int | None = None) -> RunResult:
    """The run as result.json holds it. ``cases``: how many cases the run was given; counts the
    harness claims above it fail the run (see :func:`_hold_to_cases`)."""
    result, warnings = parse_popcorn(outcome.popcorn)
    stderr = outcome.stderr
    if outcome.start_error:
        stderr += outcome.start_error
    if outcome.timed_out:
        stderr += f"\n[kitebench: timed out after {outcome.duration:g} s; process tree killed]"
    if outcome.popcorn_overflowed:
        warnings.append("the harness output on POPCORN_FD was over its size limit")
    if outcome.leftovers_killed:
        warnings.append(f"{outcome.leftovers_killed} processes left running were killed")
    if outcome.unfinished_pipes:
        warnings.append(f"output pipes still open after the kill: {outcome.unfinished_pipes}")
    if outcome.survivors:
        warnings.append(f"processes that could not be killed: {outcome.survivors}")
    if warnings:
        stderr += "".join(f"\n[kitebench: {w}]" for w in warnings)
    success = not outcome.timed_out and outcome.exit_code in (0, int(HarnessExit.VALIDATE_FAIL))
    # Stricter than the field: a pass needs a clean exit too, and untruncated protocol output.
    passed = (
        success
        and outcome.exit_code == 0
        and result.get("check") == "pass"
        and not outcome.popcorn_overflowed
    )
    run = RunResult(
        success=success,
        passed=passed,
        command=outcome.command,
        stdout=outcome.stdout,
        stderr=stderr,
        exit_code=outcome.exit_code,
        duration=round(outcome.duration, 6),
        result=result,
    )
    if cases is not None:
        _hold_to_cases(run, cases)
    return run


def _hold_to_cases(run: RunResult, cases: int) -> None:
    """A passed run whose harness claims more cases than the run had (or a count that is not a
    number) is failed: the runner only vouches for what it can check. Idempotent."""
    problem = count_problem(run.result, cases)
    if run.passed and problem is not None:
        run.passed = False
        run.stderr += f"\n[kitebench: {problem}]"


class _Job:
    """The state of one kernel job; ``result()`` assembles a FullResult at any point."""

    def __init__(
        self, payload: KernelPayload, ctx: RunContext, system: SystemInfo, sandbox: Sandbox
    ) -> None:
        self.payload = payload
        self.sandbox = sandbox
        self.ctx = ctx
        self.system = system
        self.runs: dict[str, EvalResult] = {}
        self.phases: list[Phase] = []
        self.warnings: list[str] = []
        self.details: dict[str, object] = {"ranking_by": payload.ranking_by}
        #: What the job is doing (named in an internal error).
        self.step = "setup"
        #: Where the per-run work dirs go (default: the temp dir).
        self.work_base = ctx.env.get("KITEBENCH_WORK_DIR") or None
        #: Cross-checks of the harness's numbers (runner.kernels.integrity).
        self.integrity: list[IntegrityCheck] = []

    def phase(self, name: str, start: dt.datetime, ok: bool, detail: str = "") -> None:
        end = _now()
        self.phases.append(
            Phase(
                name=name,
                start=start,
                end=end,
                duration_s=round((end - start).total_seconds(), 6),
                success=ok,
                detail=detail,
            )
        )

    def cases(self, run: str) -> int:
        return len(cases_for_run(self.payload, run))

    def result(self) -> FullResult:
        for name, ev in self.runs.items():
            if ev.run is not None:
                _hold_to_cases(ev.run, self.cases(name))
        passed = runs_passed(self.runs) and len(self.runs) == len(run_names(self.payload))
        stage: Stage | None = None
        error = ""
        if not passed:
            for name, ev in self.runs.items():
                if not (ev.run is not None and ev.run.passed) or (
                    ev.compilation is not None and not ev.compilation.success
                ):
                    error = describe_failure(name, ev, self.cases(name))
                    comp_failed = ev.compilation is not None and not ev.compilation.success
                    stage = "compile" if comp_failed else "run"
                    break
            else:
                error, stage = "no run finished", "run"
        # the cross-checks (runner.kernels.integrity): one fail and the job has not passed
        failed = [c for c in self.integrity if c.verdict == "fail"]
        if passed and failed:
            passed, stage = False, "run"
            error = f"integrity check {failed[0].check} failed: {failed[0].detail}"[:500]
        scored = [
            (n, ev.run)
            for n, ev in self.runs.items()
            if n in ("benchmark", "leaderboard") and ev.run is not None
        ]
        value = None
        if passed and scored:
            last, run = scored[-1]
            value = score(run.result, self.payload.ranking_by, self.cases(last))
        self.details["runner_max_rss_mib"] = peak_rss_mib()
        # read after the runs: the host samples the same counter, but a short job can end
        # (and its cgroup vanish) between two samples
        hits = pids_limit_hits()
        if hits is not None:
            self.details["pids_limit_hits"] = hits
        return FullResult(
            success=True,
            error=error,
            system=self.system,
            runs=dict(self.runs),
            kitebench=KitebenchInfo(
                passed=passed,
                stage=stage,
                exit_code=int(RunnerExit.PASSED if passed else RunnerExit.FAILED),
                score=value,
                # seconds (the benchmark means), or a custom harness's own score; lower is better
                score_info=None
                if value is None
                else ScoreInfo(
                    metric="score" if self.payload.ranking_by == "custom" else "time",
                    unit="" if self.payload.ranking_by == "custom" else "s",
                    ascending=True,
                ),
                phases=list(self.phases),
                warnings=list(self.warnings),
                details=dict(self.details),
                isolation={"sandbox": self.sandbox.describe()},
                integrity=list(self.integrity),
            ),
        )


def run_kernel(payload: KernelPayload, ctx: RunContext) -> FullResult:
    """Execute a kernel payload and return its FullResult (never raises, except Interrupted)."""
    become_subreaper()
    hide_from_same_user()
    system = collect_system()
    # The submission never sees where the verdict is written, nor the runner's processes.
    sb = sandbox_from_env(ctx.env, hidden=[str(ctx.output_dir)])
    job = _Job(payload, ctx, system, sb)
    if not sb.hardened:
        job.warnings.append("sandbox: " + str(sb.describe()["meaning"]))
    env = child_env(
        ctx.env,
        seed=payload.seed,
        gpus=system.device_count if payload.multi_gpu else None,
    )
    if isinstance(payload, CuPayload) and system.device_count == 0:
        job.warnings.append("no GPU was found on this machine: CUDA code can compile but not run")
    try:
        if isinstance(payload, CuPayload):
            with private_dir("kitebench-build-", base=job.work_base) as build:
                job.step = "compile"
                comp = _compile(payload, build, env, job)
                if not comp.success:
                    now = _now()
                    job.runs[run_names(payload)[0]] = EvalResult(
                        start=now, end=now, compilation=comp
                    )
                    return job.result()
                binary = build / nvcc.BINARY_NAME

                def prepare_cu(wd: Path) -> list[str]:
                    # Only the binary goes into the run dir: the sources are not left for it to
                    # read, as the field does.
                    shutil.copy2(binary, wd / nvcc.BINARY_NAME)
                    return [f"./{nvcc.BINARY_NAME}"]

                _run_all(payload, job, env, prepare_cu, comp)
        else:
            main = payload.main

            def prepare_py(wd: Path) -> list[str]:
                write_files(wd, payload.sources)
                return [sys.executable, main]

            _run_all(payload, job, env, prepare_py, None)
        return job.result()
    except Exception as e:  # a runner-side failure: keep what finished, say where it broke
        partial = job.result()
        return FullResult.failure(
            f"internal error during {job.step}: {type(e).__name__}: {e}",
            "setup" if job.step.startswith("setup") else "internal",
            RunnerExit.INTERNAL,
            system=system,
            runs=partial.runs,
            phases=partial.kitebench.phases,
            warnings=partial.kitebench.warnings,
            details=partial.kitebench.details,
            isolation=partial.kitebench.isolation,
        )


def _compile(payload: CuPayload, build: Path, env: dict[str, str], job: _Job) -> CompileResult:
    start = _now()
    write_files(build, payload.sources)
    write_files(build, payload.headers)
    arch = payload.arch
    if arch is None:
        arch = nvcc.detect_arch(env)
        if arch is None:
            job.warnings.append("no GPU found to detect the arch from; nvcc's default arch used")
    job.details["arch"] = arch
    comp = nvcc.compile_cuda(payload, build, env, arch=arch)
    job.phase("compile", start, comp.success, f"exit {comp.exit_code}")
    return comp


def _run_all(
    payload: KernelPayload,
    job: _Job,
    env: dict[str, str],
    prepare: Callable[[Path], list[str]],
    comp: CompileResult | None,
) -> None:
    for name in run_names(payload):
        start = _now()
        job.step = f"setup of {name}"
        with private_dir(base=job.work_base) as wd:
            argv = prepare(wd)
            (wd / CASES_NAME).write_text(cases_text(cases_for_run(payload, name)), encoding="utf-8")
            # written by the runner first, then handed to the submission's uid: its HOME and
            # TMPDIR live here, so nothing it leaves is seen by the next run
            job.sandbox.give(wd)
            run_env = {**env, **job.sandbox.home_env(wd)} if job.sandbox.separate_uid else env
            job.step = name
            outcome = _start_run(payload, job, argv, name, wd, run_env)
        run = _run_result(outcome)
        profile = None
        if name.startswith("profile.") and "benchmark.0.report" in run.result:
            profile = ProfileResult(
                profiler="kitebench.harness", trace=run.result["benchmark.0.report"]
            )
        job.runs[name] = EvalResult(
            start=start, end=_now(), compilation=comp, run=run, profile=profile
        )
        job.phase(name, start, run.passed, f"exit {run.exit_code}")
        job.ctx.checkpoint(job.result(), after=name)
        if not run.passed:
            break
    integrity.after_runs(payload, job, env, prepare)


def _start_run(
    payload: KernelPayload, job: _Job, argv: list[str], name: str, wd: Path, env: dict[str, str]
) -> ProcessOutcome:
    """The built-in harness's stub: the runner starts the judge (runner.kernels.judged); any
    other harness runs as the submission."""
    options = judge_options(payload)
    if options is not None and isinstance(payload, PyPayload):
        return run_judged(payload, options, mode=harness_mode(name), wd=wd, env=env,
                          sandbox=job.sandbox, timeout_s=payload.timeout_for(name),
                          work_base=job.work_base)
    return run_process(
        [*argv, harness_mode(name), CASES_NAME],
        cwd=wd,
        env=env,
        timeout_s=payload.timeout_for(name),
        sandbox=job.sandbox,
    )


def peak_rss_mib() -> float:
    """This process's peak RSS. VmHWM starts afresh at exec; ru_maxrss does not (a child forked
    from a large parent reports the parent's size), so it is only the fallback."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
