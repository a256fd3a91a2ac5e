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

import math
import os
import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from contract.result import FullResult

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


#: Benchmark rows listed in the annotation (the harness decides how many keys there are).
MAX_BENCH_ROWS = 50
#: Characters of one table cell taken from the run (a spec, a warning).
MAX_CELL_CHARS = 200


def _benchmark_means(values: Mapping[str, str]) -> list[tuple[int, float, str]]:
    """(index, mean in ns, spec) from the harness keys ``benchmark.N.mean`` / ``benchmark.N.spec``."""
    means = []
    for key, value in values.items():
        parts = key.split(".")
        if (len(parts) == 3 and parts[0] == "benchmark" and parts[2] == "mean"
                and parts[1].isdigit() and parts[1].isascii() and len(parts[1]) <= 9):
            try:
                mean = float(value)
            except ValueError:
                continue
            if math.isfinite(mean):
                means.append((int(parts[1]), mean, values.get(f"benchmark.{parts[1]}.spec", "")))
    return sorted(means)


# Every ASCII punctuation character CommonMark lets a backslash escape, except "&", "<", ">"
# (made entities below) and the quote marks (inert in text).
_MD_PUNCT = set("\\`*_{}[]()#+-.!|~/=$%^?@")
_TRACEBACK = "Traceback (most recent call last)"


def _md(text: str, limit: int = MAX_CELL_CHARS) -> str:
    """Text from a result (the submission's, in the end) as inert Markdown: one line, every
    character that could start markup backslash-escaped, ``&<>`` as entities (so no raw HTML),
    and links broken (``http://``, ``www.``, ``a@b``: GitHub-flavoured autolinks need no markup).
    Safe inside a table cell too."""
    text = " ".join(_printable(text).split())
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    out = []
    for ch in text:
        if ch in _MD_PUNCT:
            out.append("\\" + ch)
        elif ch == "&":
            out.append("&amp;")
        elif ch == "<":
            out.append("&lt;")
        elif ch == ">":
            out.append("&gt;")
        else:
            out.append(ch)
    # a zero-width space inside the autolink triggers (the escapes above may be undone before
    # the autolink pass of some renderers; a character in between never is)
    text = "".join(out)
    for trigger, broken in _AUTOLINK_BREAKS:
        text = text.replace(trigger, broken)
    return text


_AUTOLINK_BREAKS = (
    (":\\/\\/", ":\u200b\\/\\/"),  # scheme://
    ("www\\.", "www\u200b\\."),
    ("WWW\\.", "WWW\u200b\\."),
    ("\\@", "\u200b\\@"),  # user@host
)


def _ident(text: str) -> str:
    """A snake_case name as it is (an underscore inside a word is never emphasis in
    CommonMark), anything else escaped like any other text."""
    return text if re.fullmatch(r"[a-z0-9]+(?:_[a-z0-9]+)*", text) else _md(text)


def _code(text: str, limit: int = MAX_CELL_CHARS) -> str:
    """A short value (an image name, a digest) as a Markdown code span that nothing inside can
    close: backticks dropped, one line."""
    text = " ".join(_printable(text).replace("`", "'").split())
    return f"`{text[:limit]}`" if text else ""


def _printable(text: str) -> str:
    return "".join(ch if ch.isprintable() or ch in "\n\t" else "\ufffd" for ch in text)


def _without_traceback(text: str) -> str:
    """An error for the annotation: a traceback is the log's business (result.json keeps the
    run's stderr); only the line that says what went wrong stays."""
    if _TRACEBACK not in text:
        return text
    before, _, after = text.partition(_TRACEBACK)
    rows = [ln.strip() for ln in after.replace("\\n", "\n").splitlines() if ln.strip()]
    last = rows[-1] if rows else ""
    return (before.rstrip(" :;\n") + (": " if before.strip() else "") + last).strip()


def annotation(result: FullResult) -> str:
    """The Markdown verdict: headline, where it ran, per-run pass/fail, benchmark means, error."""
    info = result.kitebench
    iso = info.isolation
    if result.passed:
        head = "✅ kitebench: passed"
    elif result.success:
        head = "❌ kitebench: failed"
    else:
        head = f"⚠️ kitebench: error{f' ({_md(info.stage)})' if info.stage else ''}"
    lines = [f"### {head}", ""]
    # Everything below that comes from the result goes through _md or _code: the
    # submission wrote some of it (specs, errors, warnings) and it must stay text.
    facts = [f"**GPU** {_md(result.system.gpu or 'no GPU')}"]
    if iso.get("gpu_uuid"):
        facts[0] += f" ({_code(str(iso['gpu_uuid']))})"
    if iso.get("image"):
        facts.append(f"**image** {_code(str(iso['image']))}")
    if iso.get("image_digest"):
        facts.append(f"**digest** {_code(str(iso['image_digest']))}")
    if info.score is not None and math.isfinite(info.score):
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
            for name, idx, mean, spec in bench[:MAX_BENCH_ROWS]:
                lines.append(f"| {_md(name)} | {_md(spec) or idx} | {mean / 1000:.3f} µs |")
            if len(bench) > MAX_BENCH_ROWS:
                lines.append(f"| … | {len(bench) - MAX_BENCH_ROWS} more | |")
            lines.append("")
    if result.error:
        # escaped text, not a code block: no renderer's idea of a fence can let it out
        lines += [f"**error** {_md(_without_traceback(result.error), 4000)}", ""]
    checks = [c for c in info.integrity if c.verdict != "pass"]
    if checks:  # the cross-checks of the harness's numbers (runner.kernels.integrity)
        lines += ["| integrity check | verdict | detail |", "|---|---|---|"]
        for c in checks[:10]:
            lines.append(f"| {_ident(c.check)} | {_md(c.verdict.upper())} | {_md(c.detail, 300)} |")
        lines.append("")
    for w in info.warnings[:10]:
        lines.append(f"- ⚠️ {_md(_without_traceback(w), 500)}")
    text = "\n".join(lines).rstrip() + "\n"
    raw = text.encode("utf-8")
    if len(raw) > MAX_ANNOTATION_BYTES:
        text = raw[:MAX_ANNOTATION_BYTES].decode("utf-8", "ignore") + "\n\n(cut)\n"
    return text
