"""The audit of the timed run without vLLM: the verdict rules, the secret sample, the reference
store, and how scores are shown (score_info, the report line, the annotation)."""

from __future__ import annotations

import json
import re
import stat
from pathlib import Path

from contract.payload import BenchmarkShape, ModelConfig
from contract.result import FullResult, KitebenchInfo, ScoreInfo
from host.publish import annotation
from launcher.report import render_result as render
from runner.model import audit, bench
from runner.model.audit_job import stock_version

SHAPE = BenchmarkShape(num_prompts=4, input_len=8, output_len=3)
CFG = ModelConfig(model_name="m")


def _ref(ids: list[int], alt: dict[int, float] | None = None) -> audit.Reference:
    """Stock chose ``ids`` with logprob -0.1 each; ``alt`` are other top-K entries everywhere."""
    return audit.Reference(ids, [{t: -0.1, **(alt or {})} for t in ids])


def _rec(i: int, ids: list[int], claimed: int | None = 3) -> audit.Record:
    return audit.Record(i, f"p{i}", 3, ids, claimed, True)


def test_identical_outputs_pass() -> None:
    refs = {i: _ref([1, 2, 3]) for i in range(4)}
    v = audit.judge(0, SHAPE, [_rec(i, [1, 2, 3]) for i in range(4)], [0, 1, 2, 3], refs, CFG)
    assert v.passed and v.agreed == 4 and v.compared_tokens == v.sampled_tokens == 12


def test_a_near_tie_is_numerics_a_wide_gap_is_a_disagreement() -> None:
    refs = {0: _ref([1, 2, 3], {9: -0.2, 8: -5.0}), 1: _ref([1, 2, 3], {9: -0.2, 8: -5.0})}
    tie = [_rec(0, [1, 9, 4]), _rec(1, [1, 2, 3])]  # token 9 at 0.1 nats: a near-tie
    v = audit.judge(0, SHAPE, tie, [0, 1], refs, CFG)
    assert v.passed and v.ties == 1 and v.agreed == 1 and v.compared_tokens == 1 + 3
    wide = [_rec(0, [1, 8, 4]), _rec(1, [1, 2, 3])]  # token 8 is 4.9 nats below stock's choice
    v = audit.judge(0, SHAPE, wide, [0, 1], refs, CFG)
    assert not v.passed and len(v.disagreeing) == 1
    assert v.failures == [
        "1 of 2 sampled prompts disagree with stock vLLM's greedy output (allowed 0); first: "
        "prompt 0 at output token 1: fork token 8, stock token 2 (4.9 nats below stock's choice)"
    ]
    lenient = CFG.model_copy(update={"audit_max_disagreeing": 1})
    assert audit.judge(0, SHAPE, wide, [0, 1], refs, lenient).passed
    absent = [_rec(0, [7, 2, 3]), _rec(1, [1, 2, 3])]
    v = audit.judge(0, SHAPE, absent, [0, 1], refs, CFG)
    assert "fork token 7, stock token 1 (not in stock's top 5)" in v.failures[0]


def test_real_until_the_first_tie_then_garbage_is_not_enough() -> None:
    refs = {i: _ref([1, 2, 3], {9: -0.15}) for i in range(4)}
    recs = [_rec(i, [9, 9, 9]) for i in range(4)]  # a tie at token 0 everywhere: nothing compared
    v = audit.judge(0, SHAPE, recs, [0, 1, 2, 3], refs, CFG)
    assert not v.passed and v.ties == 4 and not v.disagreeing
    assert v.failures == [
        "only 0 of 12 sampled output tokens could be compared before a near-tie "
        "(audit_min_compared=0.5)"
    ]


def test_counts_are_the_clients_not_the_servers_usage() -> None:
    refs = {i: _ref([1, 2, 3]) for i in range(4)}
    recs = [_rec(i, [1], claimed=3) for i in range(4)]
    v = audit.judge(0, SHAPE, recs, [0], refs, CFG)
    assert not v.passed and len(v.bad_counts) == 4
    assert v.failures[0] == (
        "4 of 4 requests did not return output_len=3 tokens (first: prompt 0: 1 token(s) "
        "counted by the client, its usage claimed 3)"
    )
    # a request the sample did not pick is still counted
    recs = [_rec(0, [1, 2, 3]), _rec(1, [1, 2, 3, 4], claimed=None)]
    v = audit.judge(0, SHAPE, recs, [0], refs, CFG)
    assert v.failures == [
        "1 of 2 requests did not return output_len=3 tokens (first: prompt 1: 4 token(s) "
        "counted by the client)"
    ]


def test_sample_is_fixed_by_the_secret_and_needs_it() -> None:
    a = audit.choose_sample(1000, 16, b"secret", "key:1000")
    assert a == audit.choose_sample(1000, 16, b"secret", "key:1000") and len(set(a)) == 16
    assert a != audit.choose_sample(1000, 16, b"other", "key:1000")
    assert audit.choose_sample(5, 16, b"s", "k") == [0, 1, 2, 3, 4]


def test_store_roundtrip_key_file_and_modes(tmp_path: Path) -> None:
    store = audit.Store(tmp_path / "ref")
    secret = store.secret()
    assert len(secret) == 32 and audit.Store(tmp_path / "ref").secret() == secret
    assert stat.S_IMODE((tmp_path / "ref" / audit.KEY_FILE).stat().st_mode) == 0o600
    about = audit.reference_about(CFG, "digest", "0.32.0", SHAPE, 7)
    key = audit.reference_key(about)
    assert key != audit.reference_key({**about, "seed": 8})
    store.save(key, about, {3: _ref([1, 2, 3], {9: -1.5})})
    path = tmp_path / "ref" / f"{key}.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # the runner's only: it names the sample
    assert stat.S_IMODE((tmp_path / "ref").stat().st_mode) == 0o700
    back = store.load(key)
    assert back[3].token_ids == [1, 2, 3] and back[3].top[0] == {1: -0.1, 9: -1.5}
    path.write_text(json.dumps({**json.loads(path.read_text()), "key": "other"}))
    assert store.load(key) == {}  # a file under the wrong name is not believed
    assert audit.Store(None).load(key) == {} and len(audit.Store(None).secret()) == 32


def test_records_of_the_trusted_client(tmp_path: Path) -> None:
    path = tmp_path / "requests.jsonl"
    lines = [
        {"id": "bench-ab12-10", "prompt": "x", "expected": 3, "token_ids": [1, 2, 3],
         "claimed": 3, "success": True},
        {"id": "bench-ab12-2", "prompt": "y", "expected": 3, "token_ids": [], "claimed": None,
         "success": False},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    recs = audit.load_records(path)
    assert [r.index for r in recs] == [2, 10] and recs[1].token_ids == [1, 2, 3]


def test_stock_version_is_read_from_the_installed_files(tmp_path: Path) -> None:
    (tmp_path / "_version.py").write_text("__version__ = version = '0.32.0'\n")
    assert stock_version(tmp_path) == "0.32.0"
    assert stock_version(tmp_path / "nowhere") == "unknown"


# ---- scores shown as what they are -----------------------------------------------------------


def test_score_info_units_and_direction() -> None:
    info = bench.score_info("request_throughput")
    assert (info.unit, info.ascending) == ("req/s", False)
    assert info.describe(92.731) == "request_throughput 92.73 req/s (higher is better)"
    assert bench.score_info("output_throughput").unit == "tok/s"
    assert bench.score_info("p99_tpot_ms").describe(12.5) == "p99_tpot_ms 12.5 ms (lower is better)"
    kernel = ScoreInfo(metric="time", unit="s", ascending=True)
    assert kernel.describe(2.5e-6) == "time 2.5 µs (lower is better)"
    assert kernel.describe(0.0125) == "time 12.5 ms (lower is better)"


def _result(score: float, info: ScoreInfo | None) -> FullResult:
    return FullResult(
        success=True,
        kitebench=KitebenchInfo(passed=True, score=score, score_info=info,
                                details={"ranking_by": "last"}),
    )


def test_report_and_annotation_say_what_the_score_is() -> None:
    r = _result(92.731, bench.score_info("request_throughput"))
    assert "score: request_throughput 92.73 req/s (higher is better), ranking_by last" in render(r)
    # the annotation escapes Markdown punctuation; rendered, it reads the same
    shown = re.sub(r"\\(.)", r"\1", annotation(r))
    assert "**score** request_throughput 92.73 req/s (higher is better)" in shown
    assert json.loads(r.to_json())["kitebench"]["score_info"] == {
        "metric": "request_throughput", "unit": "req/s", "ascending": False}
    old = _result(2.5e-6, None)  # a result from before score_info: a kernel time
    assert "score: 2.50 µs, ranking_by last" in render(old)
