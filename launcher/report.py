"""A result.json as a human-readable verdict (``kitebench submit``, ``wait``, ``status``)."""

from __future__ import annotations

import base64
import binascii

from contract.result import EvalResult, FullResult, RunResult
from runner.kernels.protocol import claimed_count, indices

_TAIL_LINES = 12


def fmt_ns(ns: float) -> str:
    """Nanoseconds in the unit that reads best (ns, µs, ms, s)."""
    if ns < 1e3:
        return f"{ns:.0f} ns"
    if ns < 1e6:
        return f"{ns / 1e3:.2f} µs"
    if ns < 1e9:
        return f"{ns / 1e6:.3f} ms"
    return f"{ns / 1e9:.3f} s"


def fmt_seconds(s: float) -> str:
    return fmt_ns(s * 1e9)


def verdict(result: FullResult) -> str:
    if result.passed:
        return "PASSED"
    if result.kitebench.interrupted or result.kitebench.stage == "interrupted":
        return "INTERRUPTED"
    if not result.success:
        return "ERROR"
    return "FAILED"


def render_result(result: FullResult) -> str:
    lines: list[str] = []
    sysinfo = result.system
    where = sysinfo.gpu or sysinfo.cpu or "unknown machine"
    bits = [where]
    if sysinfo.runtime:
        bits.append(sysinfo.runtime)
    if sysinfo.torch:
        bits.append(f"torch {sysinfo.torch}")
    if sysinfo.hostname:
        bits.append(sysinfo.hostname)
    if any([sysinfo.gpu, sysinfo.cpu, sysinfo.hostname]):
        lines.append("system: " + _printable(", ".join(bits)))
    iso = result.kitebench.isolation.get("mode")
    if iso:
        lines.append(f"isolation: {iso}{_sandbox_words(result.kitebench.isolation)}")
    for name, ev in result.runs.items():
        lines += _render_run(name, ev)
    info = result.kitebench
    if info.score is not None:
        ranking = info.details.get("ranking_by")
        # what the score is (e.g. request_throughput 92.73 req/s (higher is better)); a result
        # without score_info predates it and is a kernel score in seconds
        what = info.score_info.describe(info.score) if info.score_info else fmt_seconds(info.score)
        lines.append(f"score: {what}" + (f", ranking_by {ranking}" if ranking else ""))
    for c in info.integrity:
        if c.verdict != "pass":
            lines.append(_printable(f"integrity {c.verdict}: {c.check}: {c.detail}"))
    for w in info.warnings:
        lines.append(f"warning: {_printable(w)}")
    head = f"verdict: {verdict(result)}"
    if not result.passed:
        if info.stage:
            head += f" (stage: {info.stage})"
        if result.error:
            lines.append(f"error: {_printable(result.error)}")
    lines.append(head)
    return "\n".join(lines)


def _render_run(name: str, ev: EvalResult) -> list[str]:
    out: list[str] = []
    comp = ev.compilation
    if comp is not None:
        state = "ok" if comp.success else "FAILED"
        found = "" if comp.nvcc_found else " (nvcc not found)"
        out.append(
            f"[{name}] compile: {state}{found}"
            + (f" (nvcc {comp.nvcc_version})" if comp.nvcc_version else "")
        )
        if not comp.success:
            out += _tail(comp.stderr or comp.stdout, "    ")
    run = ev.run
    if run is None:
        if comp is None or comp.success:
            out.append(f"[{name}] did not run")
        return out
    state = "passed" if run.passed else "FAILED"
    out.append(f"[{name}] {state} (exit {run.exit_code}, {run.duration:.2f} s)")
    out += _render_cases(run)
    if not run.passed and not _has_case_errors(run):
        out += _tail(run.stderr or run.stdout, "    ")
    if ev.profile is not None and ev.profile.trace:
        out += _render_profile(ev.profile.trace)
    return out


#: Cases listed per kind; the rest are summed up in one line (a report stays readable).
MAX_LISTED_CASES = 200


def _count(result: dict[str, str], kind: str) -> tuple[int, int | None]:
    """(entries to list, the harness's claimed count when it disagrees with what is there).
    The claim is the harness's (the submission's) text: only the indices that really appear in
    the keys are listed, so a ``test-count: 10**15`` cannot make the report loop or grow."""
    present = indices(result, kind)
    n = (present[-1] + 1) if present else 0
    claimed = claimed_count(result, kind)
    raw = result.get(f"{kind}-count")
    if raw is None:
        return n, None
    if claimed is None:
        return n, -1  # not a number
    return min(claimed, n), (claimed if claimed != n else None)


def _render_cases(run: RunResult) -> list[str]:
    r = run.result
    out: list[str] = []
    tests, claim = _count(r, "test")
    out += _claim_note("test", tests, claim, r)
    for i in range(min(tests, MAX_LISTED_CASES)):
        status = r.get(f"test.{i}.status", "?")
        mark = "pass" if status == "pass" else "FAIL"
        line = f"  {mark}  test {i}: {_short(r.get(f'test.{i}.spec', ''))}"
        out.append(line)
        if status != "pass" and r.get(f"test.{i}.error"):
            out.append(f"        {_short(r[f'test.{i}.error'])}")
    if tests > MAX_LISTED_CASES:
        out.append(f"  ... {tests - MAX_LISTED_CASES} more tests")
    benches, claim = _count(r, "benchmark")
    out += _claim_note("benchmark", benches, claim, r)
    for i in range(min(benches, MAX_LISTED_CASES)):
        spec = _short(r.get(f"benchmark.{i}.spec", ""))
        status = r.get(f"benchmark.{i}.status", "pass" if f"benchmark.{i}.mean" in r else "?")
        if status != "pass":
            out.append(f"  FAIL  benchmark {i}: {spec}")
            if r.get(f"benchmark.{i}.error"):
                out.append(f"        {_short(r[f'benchmark.{i}.error'])}")
            continue
        stats = _stats(r, i)
        if stats is None:
            out.append(f"  pass  benchmark {i}: {spec}")
            continue
        mean, std, err, best, worst, median, runs = stats
        text = f"mean {fmt_ns(mean)} ± {fmt_ns(std)}"
        if median is not None:
            text += f", median {fmt_ns(median)}"
        text += f", best {fmt_ns(best)}, worst {fmt_ns(worst)}"
        if mean > 0:
            text += f", err {100 * err / mean:.2f}%"
        text += f", {runs} runs"
        out.append(f"  pass  benchmark {i}: {spec}")
        out.append(f"        {text}")
    if benches > MAX_LISTED_CASES:
        out.append(f"  ... {benches - MAX_LISTED_CASES} more benchmarks")
    for key in ("error", "test.error", "benchmark.error"):
        if key in r:
            out.append(f"  harness: {_short(r[key])}")
    return out


def _claim_note(kind: str, listed: int, claim: int | None, r: dict[str, str]) -> list[str]:
    if claim is None:
        return []
    if claim < 0:
        return [f"  harness: {kind}-count {_short(r.get(f'{kind}-count', ''), 40)!r} is not a number"]
    return [f"  harness: claims {claim} {kind}s, reported {listed}"]


def _stats(
    r: dict[str, str], i: int
) -> tuple[float, float, float, float, float, float | None, str] | None:
    try:
        mean = float(r[f"benchmark.{i}.mean"])
        std = float(r.get(f"benchmark.{i}.std", "0"))
        err = float(r.get(f"benchmark.{i}.err", "0"))
        best = float(r.get(f"benchmark.{i}.best", r[f"benchmark.{i}.mean"]))
        worst = float(r.get(f"benchmark.{i}.worst", r[f"benchmark.{i}.mean"]))
        median = float(r[f"benchmark.{i}.median"]) if f"benchmark.{i}.median" in r else None
    except (KeyError, ValueError):
        return None
    return mean, std, err, best, worst, median, r.get(f"benchmark.{i}.runs", "?")


def _has_case_errors(run: RunResult) -> bool:
    return any(k.endswith(".error") or k == "error" for k in run.result)


def _render_profile(trace: str) -> list[str]:
    try:
        text = base64.b64decode(trace, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        text = trace
    rows = text.strip().splitlines()[:30]
    return ["  profile:"] + [f"    {row}" for row in rows]


def _tail(text: str, indent: str) -> list[str]:
    rows = [ln for ln in text.rstrip().splitlines() if ln.strip()][-_TAIL_LINES:]
    return [f"{indent}{_printable(row)[:300]}" for row in rows]


def _short(text: str, limit: int = 300) -> str:
    text = _printable(text.replace("\\n", " ")).strip()
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _printable(text: str) -> str:
    """The submission's text without control characters: an ANSI escape in its output must not
    rewrite the reader's terminal (move the cursor over the verdict, retitle the window)."""
    return "".join(ch if ch.isprintable() else ("\ufffd" if ch not in "\t" else " ") for ch in text)


def _sandbox_words(isolation: dict[str, object]) -> str:
    """`` (sandbox: uid)``, or what "not hardened" means when the submission was not separated."""
    sb = isolation.get("sandbox")
    if not isinstance(sb, dict) or not sb.get("mode"):
        return ""
    if not sb.get("hardened"):
        return f" (not hardened: {sb.get('meaning', '')})"
    return f" (sandbox: {sb['mode']})"
