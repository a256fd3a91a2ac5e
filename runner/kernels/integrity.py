"""Cross-checks that trust no harness: ``kitebench.integrity``.

A task with its own ``eval.py`` (reference-kernels) runs as the submission, in one process with
it, so its numbers are only as good as the submission allows. These checks look at them from
outside, with what the runner owns:

- ``static_scan``: the submission's source, for the usual tools of harness tampering (warn);
- ``secret_recheck``: after a ranked run, the tests again with a fresh secret seed in a new
  process and work dir; they must pass (the field's secret run; defeats answers keyed on seeds);
- ``physical_floor``: task.yml's bytes/flops per case over the machine's peak rates give a time
  no kernel can beat; a reported mean below it fails;
- ``reference_ceiling``: (foreign harnesses, ranked runs) the task's harness on a shim submission
  that calls the reference, in a clean process; a claimed speedup above the ceiling fails.

A ``fail`` makes the run not passed (``_Job.result``); ``warn`` is reported only.
"""

from __future__ import annotations

import ast
import math
import re
import secrets
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from contract.payload import CuPayload, PyPayload
from contract.result import IntegrityCheck, RunResult
from runner.kernels.judged import judge_options
from runner.kernels.workdir import CASES_NAME, cases_text, private_dir, write_files

if TYPE_CHECKING:
    from runner.kernels.execute import _Job

KernelPayload = PyPayload | CuPayload

#: (what, pattern) of the static scan; each hit is a warning with its line.
PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    ("the protocol descriptor", re.compile(r"POPCORN_FD|/proc/[^\"']*/fd")),
    ("a hard exit", re.compile(r"\bos\._exit\b|\bos\.kill\b")),
    ("frame inspection", re.compile(r"_getframe|\bf_back\b|\bf_globals\b|\bf_locals\b|"
                                    r"inspect\.(stack|currentframe|getouterframes)")),
    ("gc inspection", re.compile(r"\bgc\.get_(objects|referrers|referents)\b")),
    ("ctypes", re.compile(r"\bctypes\b")),
    ("patching the clock", re.compile(
        r"\btime\.(perf_counter(_ns)?|time(_ns)?|monotonic(_ns)?|process_time(_ns)?)\s*=(?!=)|"
        r"setattr\(\s*time\b")),
    ("patching CUDA events", re.compile(
        r"\bcuda\.Event\b[\w.]*\s*=(?!=)|\belapsed_time\s*=(?!=)|setattr\([^)]*Event")),
    ("patching the harness", re.compile(r"sys\.modules\[|\bbuiltins\b|__builtins__")),
]
#: Files of a task (not of the submission) in reference-kernels' layout.
_TASK_FILES = {"eval.py", "reference.py", "task.py", "utils.py", "eval.cu", "task.h"}
MAX_HITS = 20


def submission_files(payload: KernelPayload) -> dict[str, str]:
    """The submitted files: ``submission.*`` when there is one, else all but the task's."""
    sources = payload.sources
    named = {n: t for n, t in sources.items() if Path(n).stem == "submission"}
    if named:
        return named
    main = getattr(payload, "main", None)
    return {n: t for n, t in sources.items() if n not in _TASK_FILES and n != main}


def static_scan(payload: KernelPayload) -> IntegrityCheck:
    hits: list[str] = []
    for name, text in sorted(submission_files(payload).items()):
        for no, line in enumerate(text.splitlines(), 1):
            code = line.split("#", 1)[0] if not name.endswith((".cu", ".h")) else line
            for what, pat in PATTERNS:
                if pat.search(code):
                    hits.append(f"{name}:{no}: {what}: {line.strip()[:120]}")
    if not hits:
        return IntegrityCheck(check="static_scan", verdict="pass", detail="nothing found")
    more = f" (+{len(hits) - MAX_HITS} more)" if len(hits) > MAX_HITS else ""
    return IntegrityCheck(check="static_scan", verdict="warn",
                          detail="; ".join(hits[:MAX_HITS]) + more)


# ---------------------------------------------------------------------------------------------
# secret recheck
# ---------------------------------------------------------------------------------------------


def rerun(payload: KernelPayload, job: _Job, env: dict[str, str],
          prepare: Callable[[Path], list[str]], name: str) -> RunResult:
    """One more run of ``name``'s cases in a new work dir and process, as the runs were made."""
    from runner.kernels.execute import _run_result, _start_run, cases_for_run

    with private_dir(base=job.work_base) as wd:
        argv = prepare(wd)
        (wd / CASES_NAME).write_text(cases_text(cases_for_run(payload, name)), encoding="utf-8")
        job.sandbox.give(wd)
        run_env = dict(env)
        if job.sandbox.separate_uid:
            run_env.update(job.sandbox.home_env(wd))
        return _run_result(_start_run(payload, job, argv, name, wd, run_env))


def secret_recheck(
    payload: KernelPayload, job: _Job, env: dict[str, str], prepare: Callable[[Path], list[str]]
) -> IntegrityCheck:
    """The tests again, seeded with a secret the submission has never seen, in a new process."""
    from runner.kernels.failures import describe_failure

    seed = secrets.randbelow(2**31 - 2) + 1
    run = rerun(payload, job, {**env, "POPCORN_SEED": str(seed)}, prepare, "test")
    if run.passed:
        return IntegrityCheck(check="secret_recheck", verdict="pass",
                              detail=f"tests passed again with a fresh secret seed ({run.duration:.2f} s)")
    from contract.result import EvalResult

    now = job_now()
    why = describe_failure("secret recheck", EvalResult(start=now, end=now, run=run))
    return IntegrityCheck(check="secret_recheck", verdict="fail", detail=why)


def job_now() -> Any:
    import datetime as dt

    return dt.datetime.now(dt.UTC)


# ---------------------------------------------------------------------------------------------
# reference ceiling
# ---------------------------------------------------------------------------------------------

SHIM = """# kitebench's reference-ceiling shim: the task's reference as the submission
from {module} import {function} as _reference


def custom_kernel(data):
    return _reference(data)
"""


def reference_ceiling(payload: KernelPayload, job: _Job, env: dict[str, str],
                      claimed_s: float) -> IntegrityCheck | None:
    """The task's own harness on a shim submission that calls the reference, in a clean
    process: a claimed speedup over it above the ceiling fails (warns above warn_ceiling)."""
    from runner.kernels.execute import score

    cfg = payload.integrity
    subs = [n for n in submission_files(payload) if n.endswith(".py")]
    if not isinstance(payload, PyPayload) or len(subs) != 1:
        return None
    module, function = cfg.reference.split(":", 1)
    sources = {**payload.sources, subs[0]: SHIM.format(module=module, function=function)}
    shim = payload.model_copy(update={"sources": sources})

    def prepare(wd: Path) -> list[str]:
        write_files(wd, sources)
        return [sys.executable, payload.main]

    run = rerun(shim, job, env, prepare, "benchmark")
    ref_s = score(run.result, payload.ranking_by) if run.passed else None
    if ref_s is None:
        return IntegrityCheck(check="reference_ceiling", verdict="warn",
                              detail="the reference could not be timed by the task's harness")
    speedup = ref_s / claimed_s if claimed_s > 0 else math.inf
    text = (f"{speedup:.3g}x the reference ({claimed_s * 1e6:.4g} µs vs {ref_s * 1e6:.4g} µs;"
            f" fail above {cfg.ceiling:g}x, warn above {cfg.warn_ceiling:g}x)")
    verdict = ("fail" if speedup > cfg.ceiling else
               "warn" if speedup > cfg.warn_ceiling else "pass")
    return IntegrityCheck(check="reference_ceiling", verdict=verdict, detail=text)


# ---------------------------------------------------------------------------------------------
# physical floor
# ---------------------------------------------------------------------------------------------

_OPS = (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Pow, ast.Mod, ast.USub, ast.UAdd)


def evaluate(expr: str, case: dict[str, Any]) -> float:
    """Arithmetic of the case's keys (``"3 * 4 * size"``): numbers, names, + - * / // % **."""
    tree = ast.parse(expr, mode="eval")

    def ev(node: ast.AST) -> float:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) \
                and not isinstance(node.value, bool):
            return float(node.value)
        if isinstance(node, ast.Name):
            value = case.get(node.id)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"case key {node.id!r} is not a number")
            return float(value)
        if isinstance(node, ast.BinOp) and isinstance(node.op, _OPS):
            a, b = ev(node.left), ev(node.right)
            if isinstance(node.op, ast.Pow) and abs(b) > 64:
                raise ValueError("exponent too large")
            ops: dict[type, Callable[[], float]] = {
                ast.Add: lambda: a + b, ast.Sub: lambda: a - b, ast.Mult: lambda: a * b,
                ast.Div: lambda: a / b if b else math.inf,
                ast.FloorDiv: lambda: a // b if b else math.inf,
                ast.Mod: lambda: a % b if b else math.nan, ast.Pow: lambda: a**b,
            }
            try:
                return float(ops[type(node.op)]())
            except OverflowError:
                return math.inf
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            v = ev(node.operand)
            return -v if isinstance(node.op, ast.USub) else v
        raise ValueError(f"not allowed in a floor expression: {ast.dump(node)[:60]}")

    return ev(tree)


_bandwidth: float | None = None


def cpu_bandwidth(nbytes: int = 64 * 2**20, rounds: int = 5) -> float:
    """Bytes/s of this machine's memory copy (best of a few), measured once per runner: read +
    write of ``nbytes``. A kernel cannot move bytes faster than this, times a margin."""
    global _bandwidth
    if _bandwidth is None:
        src = bytearray(nbytes)
        dst = bytearray(nbytes)
        best = math.inf
        for _ in range(rounds):
            t0 = time.perf_counter()
            dst[:] = src
            best = min(best, time.perf_counter() - t0)
        _bandwidth = 2 * nbytes / best
    return _bandwidth


#: A kernel may beat the measured copy (caches, several cores): only this far below is a fail.
FLOOR_MARGIN = 4.0


def physical_floor(payload: KernelPayload, result: dict[str, str], cases: list[Any],
                   peak_bw: float | None = None, judged: bool = False) -> IntegrityCheck | None:
    """``judged``: the result came from the built-in judge, whose pipe the submission cannot
    write; then its raw clock (``raw_mean``, overhead included) is the evidence, since the mean
    after subtracting a noisy calibration can read 1 ns for an honest tiny kernel."""
    cfg = payload.integrity
    if not cfg.bytes or not cases:
        return None
    bw = peak_bw or cpu_bandwidth()
    bad, worst = [], 0.0
    for i, case in enumerate(cases):
        if not isinstance(case, dict):
            continue
        mean = result.get(f"benchmark.{i}.mean")
        if judged:
            mean = result.get(f"benchmark.{i}.raw_mean", mean)
        try:
            floor_s = evaluate(cfg.bytes, case) / bw / FLOOR_MARGIN
            got = float(mean) / 1e9 if mean is not None else None
        except (ValueError, SyntaxError, ZeroDivisionError, OverflowError) as e:
            return IntegrityCheck(check="physical_floor", verdict="warn",
                                  detail=f"cannot evaluate bytes {cfg.bytes!r}: {e}")
        if got is None:
            continue
        worst = max(worst, floor_s / got if got > 0 else math.inf)
        if got < floor_s:
            bad.append(f"benchmark {i}: {got * 1e6:.3g} µs is below the floor of "
                       f"{floor_s * 1e6:.3g} µs")
    rate = f"{bw / 1e9:.1f} GB/s ({'peak' if peak_bw else 'measured copy'}), margin {FLOOR_MARGIN:g}x"
    if bad:
        return IntegrityCheck(check="physical_floor", verdict="fail",
                              detail="; ".join(bad) + f" at {rate}")
    return IntegrityCheck(check="physical_floor", verdict="pass",
                          detail=f"every mean is above bytes/bandwidth at {rate}")


# ---------------------------------------------------------------------------------------------
# after the runs
# ---------------------------------------------------------------------------------------------


def after_runs(
    payload: KernelPayload, job: _Job, env: dict[str, str], prepare: Callable[[Path], list[str]]
) -> None:
    """Append the cross-checks to ``job.integrity`` once the runs are done."""
    from runner.kernels.execute import cases_for_run

    checks: list[IntegrityCheck] = []

    def guarded(name: str, fn: Callable[[], IntegrityCheck | None]) -> None:
        # a check that breaks says so; it never takes the job's verdict down with it
        try:
            check = fn()
        except Exception as e:
            check = IntegrityCheck(check=name, verdict="warn",
                                   detail=f"could not run: {type(e).__name__}: {e}"[:400])
        if check is not None:
            checks.append(check)

    guarded("static_scan", lambda: static_scan(payload))
    fallback = next((ev.run.result["judge"] for ev in job.runs.values()
                     if ev.run is not None and "judge" in ev.run.result), None)
    if fallback is not None:  # the built-in harness could not judge (CUDA inputs)
        checks.append(IntegrityCheck(check="judge", verdict="warn", detail=fallback[:400]))
    finished = [n for n, ev in job.runs.items() if ev.run is not None and ev.run.passed]
    timed = [n for n in ("leaderboard", "benchmark") if n in finished]
    foreign = judge_options(payload) is None
    if timed:
        run = job.runs[timed[0]].run
        assert run is not None
        judged = not foreign and fallback is None  # the judge's own clock, not the submission's
        guarded("physical_floor", lambda: physical_floor(
            payload, run.result, cases_for_run(payload, timed[0]), judged=judged))
    claimed = job.result().kitebench.score
    if ("leaderboard" in finished and foreign and claimed is not None
            and payload.integrity.reference_ceiling):
        job.step = "reference ceiling"
        guarded("reference_ceiling", lambda: reference_ceiling(payload, job, env, claimed))
    if "leaderboard" in finished and payload.integrity.secret_recheck:
        job.step = "secret recheck"
        guarded("secret_recheck", lambda: secret_recheck(payload, job, env, prepare))
    job.integrity = [*job.integrity, *checks]
