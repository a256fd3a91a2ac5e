"""Publishing through the (stand-in) buildkite-agent: artifact, meta-data, annotation."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import pytest

from contract.result import EvalResult, FullResult, KitebenchInfo, RunResult, SystemInfo
from contract.resultio import write_result
from host.publish import MAX_ANNOTATION_BYTES, annotation, meta_data, publish
from tests.common import REPO

AGENT = str(REPO / "tests" / "bin" / "buildkite-agent")


def _result(passed: bool = True, score: float | None = 2.5e-6) -> FullResult:
    now = dt.datetime.now(dt.UTC)
    run = RunResult(success=True, passed=passed, exit_code=0 if passed else 112, duration=1.25,
                    result={"check": "pass" if passed else "fail", "benchmark-count": "2",
                            "benchmark.0.spec": "size: 4096", "benchmark.0.mean": "2500.0",
                            "benchmark.1.spec": "size: 8 | odd", "benchmark.1.mean": "12000.5"})
    return FullResult(
        success=True,
        system=SystemInfo(gpu="NVIDIA H100 80GB HBM3"),
        runs={"benchmark": EvalResult(start=now, end=now, run=run)},
        kitebench=KitebenchInfo(passed=passed, score=score, isolation={
            "gpu_uuid": "GPU-1234", "image": "kitebench-runner:1", "image_digest": "sha256:feed"}),
    )


@pytest.fixture
def agent_env(tmp_path: Path) -> dict[str, str]:
    return {
        "PATH": os.environ["PATH"],
        "BUILDKITE_AGENT_ACCESS_TOKEN": "tok",
        "KITEBENCH_AGENT_LOG": str(tmp_path / "agent.jsonl"),
        "KITEBENCH_AGENT_STATE": str(tmp_path / "state"),
        "KITEBENCH_AGENT_ARTIFACTS": str(tmp_path / "artifacts"),
    }


def test_annotation_has_verdict_runs_means_gpu_and_digest() -> None:
    md = annotation(_result())
    assert md.startswith("### ✅ kitebench: passed")
    assert "NVIDIA H100 80GB HBM3" in md and "`GPU-1234`" in md and "sha256:feed" in md
    assert "| benchmark | pass | 0 | 1.25 s |" in md
    assert "2.500 µs" in md and "12.001 µs" in md
    assert "size: 8 \\| odd" in md  # table cells escape pipes


def test_failed_and_errored_annotations() -> None:
    assert annotation(_result(passed=False)).startswith("### ❌ kitebench: failed")
    err = FullResult.failure("out of memory (limit 1 GiB)", "container")
    md = annotation(err)
    assert md.startswith("### ⚠️ kitebench: error (container)") and "out of memory" in md


def test_annotation_is_capped() -> None:
    r = _result()
    r.kitebench.warnings = ["w" * 100_000] * 10
    r.error = "e" * (2 * MAX_ANNOTATION_BYTES)
    assert len(annotation(r).encode()) <= MAX_ANNOTATION_BYTES + 100


def test_meta_data_values() -> None:
    assert meta_data(_result()) == {"kitebench_success": "true", "kitebench_passed": "true",
                                    "kitebench_score": "2.5e-06"}
    assert "kitebench_score" not in meta_data(_result(score=None))


def test_publish_calls_the_agent(tmp_path: Path, agent_env: dict[str, str]) -> None:
    path = write_result(_result(), tmp_path / "job")
    report = publish(_result(), path, env=agent_env, agent=AGENT)
    assert report.ok, report.errors
    assert (tmp_path / "artifacts" / "result.json").read_text() == path.read_text()
    meta = json.loads((tmp_path / "state" / "meta-data.json").read_text())
    assert meta["kitebench_score"] == "2.5e-06"
    notes = json.loads((tmp_path / "state" / "annotations.json").read_text())
    assert notes["kitebench"]["style"] == "success"
    calls = [json.loads(x)["argv"] for x in (tmp_path / "agent.jsonl").read_text().splitlines()]
    assert calls[0] == ["artifact", "upload", "result.json"]


def test_publish_reports_each_failure(tmp_path: Path, agent_env: dict[str, str]) -> None:
    path = write_result(_result(), tmp_path / "job")
    env = dict(agent_env)
    del env["BUILDKITE_AGENT_ACCESS_TOKEN"]  # the real agent refuses job commands without it
    report = publish(_result(), path, env=env, agent=AGENT)
    assert not report.ok
    assert len(report.errors) == 5  # upload, 3 meta-data, annotate: each tried, each reported
    missing = publish(_result(), path, env=agent_env, agent=str(tmp_path / "no-such-agent"))
    assert missing.errors[0].endswith("is not on PATH")
