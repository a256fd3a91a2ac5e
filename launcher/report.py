"""A result.json as a human-readable verdict (``kitebench submit``, ``wait``, ``status``)."""

from __future__ import annotations

import base64
import binascii
import re

from runner.contract import EvalResult, FullResult, RunResult

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
        lines.append("system: " + ", ".join(bits))
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
            lines.append(f"integrity {c.verdict}: {c.check}: {c.detail}")
    for w in info.warnings:
        lines.append(f"warning: {w}")
    head = f"verdict: {verdict(result)}"
    if not result.passed:
        if info.stage:
            head += f" (stage: {info.stage})"
        if result.error:
            lines.append(f"error: {result.error}")
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


def _count(result: dict[str, str], kind: str) -> int:
    raw = result.get(f"{kind}-count")
    if raw is not None:
        try:
            return int(raw)
        except ValueError:
            return 0
    found = {int(m.group(1)) for k in result if (m := re.match(rf"{kind}\.(\d+)\.", k))}
    return max(found) + 1 if found else 0


def _render_cases(run: RunResult) -> list[str]:
    r = run.result
    out: list[str] = []
    for i in range(_count(r, "test")):
        status = r.get(f"test.{i}.status", "?")
        mark = "pass" if status == "pass" else "FAIL"
        line = f"  {mark}  test {i}: {r.get(f'test.{i}.spec', '')}"
        out.append(line)
        if status != "pass" and r.get(f"test.{i}.error"):
            out.append(f"        {_short(r[f'test.{i}.error'])}")
    for i in range(_count(r, "benchmark")):
        spec = r.get(f"benchmark.{i}.spec", "")
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
    for key in ("error", "test.error", "benchmark.error"):
        if key in r:
            out.append(f"  harness: {_short(r[key])}")
    return out


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
    return [f"{indent}{row[:300]}" for row in rows]


def _short(text: str, limit: int = 300) -> str:
    text = text.replace("\\n", " ").strip()
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _sandbox_words(isolation: dict[str, object]) -> str:
    """`` (sandbox: uid)``, or what "not hardened" means when the submission was not separated."""
    sb = isolation.get("sandbox")
    if not isinstance(sb, dict) or not sb.get("mode"):
        return ""
    if not sb.get("hardened"):
        return f" (not hardened: {sb.get('meaning', '')})"
    return f" (sandbox: {sb['mode']})"
