"""Publish a job's result through ``buildkite-agent``: artifact, meta-data, annotation.

    buildkite-agent artifact upload result.json
    buildkite-agent meta-data set kitebench_success true|false
    buildkite-agent meta-data set kitebench_passed true|false
    buildkite-agent meta-data set kitebench_score <float>        (only when a score is defined)
    buildkite-agent annotate --style success|error --context kitebench   (Markdown on stdin)

The agent binary needs the job's ``BUILDKITE_AGENT_ACCESS_TOKEN``: these calls get the host's
environment; the container never does.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from runner.contract import FullResult

#: Buildkite's annotation body limit is 1 MiB; stay well below it.
MAX_ANNOTATION_BYTES = 256 * 1024
CALL_TIMEOUT_S = 120
META_PREFIX = "kitebench_"


@dataclass
class PublishReport:
    calls: list[list[str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


def publish(
    result: FullResult,
    result_path: Path,
    *,
    env: Mapping[str, str] | None = None,
    agent: str = "buildkite-agent",
) -> PublishReport:
    """Upload ``result_path`` and set meta-data + annotation; each failure is collected, not
    raised, so one broken call does not hide the others."""
    env = dict(os.environ if env is None else env)
    report = PublishReport()

    def call(args: list[str], stdin: str | None = None, cwd: Path | None = None) -> None:
        cmd = [agent, *args]
        report.calls.append(cmd)
        try:
            proc = subprocess.run(
                cmd, input=stdin, cwd=cwd, env=env, capture_output=True, text=True,
                timeout=CALL_TIMEOUT_S, check=False,
            )
        except FileNotFoundError:
            report.errors.append(f"{agent} is not on PATH")
            return
        except subprocess.TimeoutExpired:
            report.errors.append(f"{' '.join(args[:2])}: no answer in {CALL_TIMEOUT_S}s")
            return
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [""]
            report.errors.append(f"{' '.join(args[:2])} exited {proc.returncode}: {tail[0][:300]}")

    call(["artifact", "upload", result_path.name], cwd=result_path.parent)
    for key, value in meta_data(result).items():
        call(["meta-data", "set", key, value])
    style = "success" if result.passed else ("error" if not result.success else "warning")
    context = "kitebench"
    call(["annotate", "--style", style, "--context", context], stdin=annotation(result))
    return report


def meta_data(result: FullResult) -> dict[str, str]:
    data = {
        f"{META_PREFIX}success": str(result.success).lower(),
        f"{META_PREFIX}passed": str(result.passed).lower(),
    }
    if result.kitebench.score is not None:
        data[f"{META_PREFIX}score"] = repr(float(result.kitebench.score))
    return data


def _benchmark_means(values: Mapping[str, str]) -> list[tuple[int, float, str]]:
    """(index, mean in ns, spec) from the harness keys ``benchmark.N.mean`` / ``benchmark.N.spec``."""
    means = []
    for key, value in values.items():
        parts = key.split(".")
        if len(parts) == 3 and parts[0] == "benchmark" and parts[2] == "mean" and parts[1].isdigit():
            try:
                means.append((int(parts[1]), float(value), values.get(f"benchmark.{parts[1]}.spec", "")))
            except ValueError:
                continue
    return sorted(means)


def _md(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ").strip()


def annotation(result: FullResult) -> str:
    """The Markdown verdict: headline, where it ran, per-run pass/fail, benchmark means, error."""
    info = result.kitebench
    iso = info.isolation
    if result.passed:
        head = "✅ kitebench: passed"
    elif result.success:
        head = "❌ kitebench: failed"
    else:
        head = f"⚠️ kitebench: error{f' ({info.stage})' if info.stage else ''}"
    lines = [f"### {head}", ""]
    gpu = result.system.gpu or "no GPU"
    if iso.get("gpu_uuid"):
        gpu += f" (`{iso['gpu_uuid']}`)"
    facts = [f"**GPU** {_md(gpu)}"]
    if iso.get("image"):
        facts.append(f"**image** `{_md(str(iso['image']))}`")
    if iso.get("image_digest"):
        facts.append(f"**digest** `{_md(str(iso['image_digest']))}`")
    if info.score is not None:
        score = info.score_info.describe(info.score) if info.score_info else f"{info.score:.6g}"
        facts.append(f"**score** {_md(score)}")
    lines += [" · ".join(facts), ""]
    if result.runs:
        lines += ["| run | result | exit | duration |", "|---|---|---|---|"]
        for name, ev in result.runs.items():
            if ev.compilation is not None and not ev.compilation.success:
                verdict, code, dur = "compile failed", str(ev.compilation.exit_code), ""
            elif ev.run is None:
                verdict, code, dur = "did not run", "", ""
            else:
                verdict = "pass" if ev.run.passed else "FAIL"
                code, dur = str(ev.run.exit_code), f"{ev.run.duration:.2f} s"
            lines.append(f"| {_md(name)} | {verdict} | {code} | {dur} |")
        lines.append("")
        bench = [
            (name, idx, mean, spec)
            for name, ev in result.runs.items()
            if ev.run is not None
            for idx, mean, spec in _benchmark_means(ev.run.result)
        ]
        if bench:
            lines += ["| run | benchmark | mean |", "|---|---|---|"]
            for name, _idx, mean, spec in bench:
                lines.append(f"| {_md(name)} | {_md(spec) or _idx} | {mean / 1000:.3f} µs |")
            lines.append("")
    if result.error:
        err = result.error if len(result.error) < 4000 else result.error[:4000] + "..."
        lines += ["```text", err.replace("```", "'''"), "```", ""]
    checks = [c for c in info.integrity if c.verdict != "pass"]
    if checks:  # the cross-checks of the harness's numbers (runner.kernels.integrity)
        lines += ["| integrity check | verdict | detail |", "|---|---|---|"]
        for c in checks[:10]:
            lines.append(f"| {_md(c.check)} | {c.verdict.upper()} | {_md(c.detail[:300])} |")
        lines.append("")
    for w in info.warnings[:10]:
        lines.append(f"- ⚠️ {_md(w)}")
    text = "\n".join(lines).rstrip() + "\n"
    raw = text.encode("utf-8")
    if len(raw) > MAX_ANNOTATION_BYTES:
        text = raw[:MAX_ANNOTATION_BYTES].decode("utf-8", "ignore") + "\n\n(cut)\n"
    return text
