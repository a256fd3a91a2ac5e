"""What the submission controls is bounded: the POPCORN protocol's sizes and counts, the loops of
the runner and the launcher that follow a harness's counts, and the Buildkite annotation, where
the submission's strings stay text (no HTML, no Markdown, no traceback)."""

from __future__ import annotations

import datetime as dt
import re
import time

import pytest

from contract.result import EvalResult, FullResult, KitebenchInfo, RunResult, SystemInfo
from host.publish import annotation
from launcher.report import render_result
from runner.kernels.execute import _hold_to_cases, score
from runner.kernels.failures import describe_failure, first_error, one_line
from runner.kernels.protocol import (
    MAX_KEYS,
    MAX_TOTAL_CHARS,
    MAX_VALUE_CHARS,
    bounded_count,
    claimed_count,
    count_problem,
    indices,
    parse_popcorn,
)

HUGE = str(10**15)
NOW = dt.datetime.now(dt.UTC)


def _run(result: dict[str, str], *, passed: bool = False, exit_code: int = 112,
         stderr: str = "") -> RunResult:
    return RunResult(success=True, passed=passed, exit_code=exit_code, duration=0.5,
                     result=result, stderr=stderr)


def _full(result: dict[str, str], *, error: str = "", name: str = "test",
          warnings: list[str] | None = None) -> FullResult:
    return FullResult(
        success=True, error=error, system=SystemInfo(gpu="cpu"),
        runs={name: EvalResult(start=NOW, end=NOW, run=_run(result))},
        kitebench=KitebenchInfo(passed=False, warnings=warnings or []),
    )


@pytest.fixture
def fast() -> object:
    """Each bounded call must return well within this (a loop to 10**15 never would)."""
    t0 = time.monotonic()
    yield
    assert time.monotonic() - t0 < 5.0


# -- protocol ----------------------------------------------------------------------------------


def test_total_size_of_the_protocol_output_is_bounded() -> None:
    line = b"k%d: " + b"v" * (MAX_VALUE_CHARS - 10) + b"\n"
    data = b"".join(line.replace(b"%d", str(i).encode()) for i in range(200))
    result, warnings = parse_popcorn(data)
    assert sum(len(k) + len(v) for k, v in result.items()) <= MAX_TOTAL_CHARS
    assert any("characters; the rest was dropped" in w for w in warnings)


def test_number_of_keys_and_key_size_are_bounded() -> None:
    data = b"".join(b"k%d: 1\n" % i for i in range(MAX_KEYS + 50)) + b"x" * 500 + b": 1\n"
    result, warnings = parse_popcorn(data)
    assert len(result) == MAX_KEYS
    assert any("more than" in w for w in warnings)
    _, warnings = parse_popcorn(b"x" * 500 + b": 1\n")
    assert warnings == ["1 harness lines were over the size limits and were cut"]


def test_rewriting_one_key_does_not_count_twice() -> None:
    data = b"k: " + b"v" * 1000 + b"\n"
    result, warnings = parse_popcorn(data * 10_000)  # 10 MB of one key, rewritten
    assert result["k"] == "v" * 1000 and warnings == []


@pytest.mark.parametrize("raw", ["abc", "-1", "1_000", "1e9", "١٢", "9" * 5000, " 3x"])
def test_counts_that_are_not_plain_integers(raw: str) -> None:
    assert claimed_count({"test-count": raw}, "test") is None
    problem = count_problem({"test-count": raw}, 3)
    assert problem is not None and "not a non-negative integer" in problem


def test_counts_are_bounded_by_the_cases() -> None:
    assert count_problem({"test-count": "3", "benchmark-count": "0"}, 3) is None
    assert count_problem({}, 0) is None
    assert count_problem({"test-count": HUGE}, 3) == (
        f"the harness reported test-count {HUGE}, but the run had only 3 cases"
    )
    assert "only 1 case" in str(count_problem({"benchmark-count": "2"}, 1))
    assert bounded_count({"benchmark-count": HUGE}, "benchmark", 2) == 2
    assert bounded_count({"benchmark-count": HUGE}, "benchmark") == MAX_KEYS
    assert indices({"test.7.status": "fail", "test.2.spec": "a", "benchmark.1.mean": "3",
                    f"test.{HUGE}x.error": "e"}, "test") == [2, 7]


# -- runner ------------------------------------------------------------------------------------


def test_score_with_a_huge_benchmark_count_is_none_and_fast(fast: object) -> None:
    r = {"benchmark-count": str(10**11), "benchmark.0.mean": "1000"}
    assert score(r, "geom", cases=1) is None
    assert score(r, "mean") is None  # no payload bound known: still no loop to 10**11
    assert score({"benchmark-count": "1", "benchmark.0.mean": "1000"}, "last", 1) == 1e-6
    assert score({"score": "inf"}, "custom") is None


def test_first_error_and_describe_failure_with_huge_counts(fast: object) -> None:
    r = {"test-count": HUGE, "check": "fail", "test.1.status": "fail", "test.1.error": "bad"}
    assert first_error(r) == "test 1: bad"
    assert first_error(r, cases=1) == ""  # index 1 is not a case of a 1-case run
    ev = EvalResult(start=NOW, end=NOW, run=_run(r))
    assert describe_failure("test", ev, cases=3) == (
        f"test: the harness reported test-count {HUGE}, but the run had only 3 cases"
    )


def test_a_passing_run_that_claims_more_cases_fails() -> None:
    run = _run({"check": "pass", "test-count": HUGE}, passed=True, exit_code=0)
    _hold_to_cases(run, 3)
    assert run.passed is False and "only 3 cases" in run.stderr
    honest = _run({"check": "pass", "test-count": "3"}, passed=True, exit_code=0)
    _hold_to_cases(honest, 3)
    assert honest.passed is True


def test_errors_carry_one_line_and_never_a_traceback() -> None:
    tb = ("Traceback (most recent call last):\\n  File \"submission.py\", line 3, in custom_kernel\\n"
          "    raise ValueError('x')\\nValueError: <b>boom</b>")
    r = {"check": "fail", "test-count": "1", "test.0.status": "fail", "test.0.error": tb}
    ev = EvalResult(start=NOW, end=NOW, run=_run(r))
    msg = describe_failure("test", ev, cases=1)
    assert "Traceback" not in msg and "File " not in msg and "\n" not in msg
    assert msg.endswith("ValueError: <b>boom</b>")
    crash = EvalResult(start=NOW, end=NOW, run=_run({}, exit_code=1, stderr=tb.replace("\\n", "\n")))
    assert describe_failure("test", crash) == "test: exited with code 1: ValueError: <b>boom</b>"
    assert one_line("a\x1b[2Jb\x00c" + "z" * 1000).startswith("a[2Jbc")
    assert len(one_line("z" * 1000)) == 300


# -- launcher report ---------------------------------------------------------------------------


def test_report_does_not_loop_over_claimed_counts(fast: object) -> None:
    r = {"test-count": HUGE, "benchmark-count": str(10**11), "test.0.status": "fail",
         "test.0.spec": "size: 1", "test.0.error": "\x1b]0;pwned\x07wrong"}
    text = render_result(_full(r))
    assert f"claims {HUGE} tests, reported 1" in text
    assert "claims 100000000000 benchmarks, reported 0" in text
    assert "\x1b" not in text and "\x07" not in text
    assert len(text.splitlines()) < 20


def test_report_lists_a_bounded_number_of_cases() -> None:
    r = {f"test.{i}.status": "pass" for i in range(5000)} | {"test-count": "5000"}
    text = render_result(_full(r))
    assert "... 4800 more tests" in text and len(text.splitlines()) < 260


# -- annotation --------------------------------------------------------------------------------

HOSTILE = [
    "<img src=x onerror=alert(1)>",
    "<script>alert(document.cookie)</script>",
    "[click me](https://evil.example/steal)",
    "![pixel](https://evil.example/p.png)",
    "**PASSED** _all_ `good`",
    "| forged | pass | 0 | 0.01 s |",
    "line\n### ✅ kitebench: passed\n",
    "<details open><summary>x</summary>",
    "www.evil.example and mail me@evil.example",
    "&lt;already-escaped&gt; &#60;b&#62;",
]


@pytest.mark.parametrize("text", HOSTILE)
def test_submission_strings_in_the_annotation_are_inert(text: str) -> None:
    r = {"check": "fail", "benchmark-count": "1", "benchmark.0.spec": text,
         "benchmark.0.mean": "1500", "test.0.error": text}
    md = annotation(_full(r, error=f"test: check failed: {text}", name="benchmark",
                          warnings=[text]))
    body = md
    # no tag, no link or image, no emphasis, no new row or heading
    assert "<" not in body and ">" not in body.replace("&gt;", "")
    assert "](" not in body and "**PASSED**" not in body and "`good`" not in body
    assert "| forged |" not in body
    assert body.count("### ") == 1
    # no autolink: GitHub-flavoured Markdown links bare URLs, www. names and addresses
    assert "://" not in body and not re.search(r"www\\?\.", body)
    assert not re.search(r"\w\\?@", body)
    # &lt; written by the submission must not turn into < when rendered
    if "&lt;" in text:
        assert "&amp;lt;" in body


def test_a_fence_in_the_error_is_text() -> None:
    md = annotation(_full({}, error="x\n````\n<img src=x onerror=alert(1)>\n````"))
    assert "`" not in md.replace("`kitebench", "").split("**error**", 1)[1].replace("\\`", "")
    assert "&lt;img src\\=x onerror\\=alert\\(1\\)&gt;" in md


def test_no_traceback_in_the_annotation() -> None:
    err = ("internal error: Traceback (most recent call last):\n  File \"/x.py\", line 1\n"
           "RuntimeError: bad")
    md = annotation(_full({}, error=err, warnings=[err]))
    assert "Traceback" not in md and "File " not in md
    assert "RuntimeError: bad" in md or "RuntimeError\\: bad" in md


def test_annotation_is_bounded_with_many_benchmarks() -> None:
    r = {f"benchmark.{i}.mean": "1000" for i in range(MAX_KEYS)}
    r |= {f"benchmark.{i}.spec": "<b>" * 100 for i in range(100)}
    md = annotation(_full(r, name="benchmark"))
    assert len(md.encode()) < 64 * 1024 and "more" in md
