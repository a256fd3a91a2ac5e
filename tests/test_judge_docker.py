"""The built-in harness's judge in the runner image (docker isolation, the submission under its
own uid): cheats from the corpus fail, the correct solution passes and is judged."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from contract import codec
from launcher.local_docker import run_payload_in_docker
from tests.docker_support import docker_client, ensure_test_image
from tests.judge_cheats import CHEATS, CORRECT, REFERENCE, STUB

IMAGE = "kitebench-runner:judge"  # own tag: the shared test tag may hold another tree


def _payload(submission: str) -> Any:
    return codec.validate({
        "lang": "py", "mode": "leaderboard", "main": "eval.py",
        "sources": {"eval.py": STUB, "reference.py": REFERENCE, "submission.py": submission},
        "tests": [{"size": 127, "seed": 4242}], "benchmarks": [{"size": 4096, "seed": 1}],
        "test_timeout": 120, "benchmark_timeout": 120, "ranked_timeout": 120,
    })


@pytest.mark.docker
@pytest.mark.parametrize("name", ["correct", "protocol_forge_exit", "frame_gc_inspection",
                                  "output_cache"])
def test_judge_in_docker(tmp_path: Path, name: str) -> None:
    image = ensure_test_image(docker_client(), tag=IMAGE)
    src = CORRECT if name == "correct" else CHEATS[name][0]
    result = run_payload_in_docker(_payload(src), output_dir=tmp_path,
                                   env={"KITEBENCH_IMAGE": image, "KITEBENCH_MEMORY": "1g"},
                                   on_status=lambda ev: None)
    assert result.kitebench.isolation["sandbox"]["mode"] in ("uid", "uid+ns")
    if name == "correct":
        assert result.passed, result.error
        lb = result.runs["leaderboard"].run.result  # type: ignore[union-attr]
        assert lb["benchmark.0.clock"] == "judge_perf_counter_ns"
    else:
        assert result.success and not result.kitebench.passed, name
        assert result.kitebench.score is None


@pytest.mark.docker
@pytest.mark.parametrize("name", ["correct", "protocol_forge_exit", "input_alias"])
def test_judge_under_kitebench_job(tmp_path: Path, name: str) -> None:
    from contract.payload import dump_payload
    from tests.test_host_job import Job

    image = ensure_test_image(docker_client(), tag=IMAGE)
    job = Job(tmp_path, image)
    src = CORRECT if name == "correct" else CHEATS[name][0]
    proc = job.run(codec.encode(dump_payload(_payload(src))))
    assert proc.returncode == 0, proc.stderr  # the job ran: the verdict is in result.json
    r = job.result
    assert r.kitebench.isolation["sandbox"]["mode"] in ("uid", "uid+ns")
    assert r.passed is (name == "correct"), (name, r.error)
    if name == "correct":
        lb = r.runs["leaderboard"].run.result  # type: ignore[union-attr]
        assert lb["benchmark.0.clock"] == "judge_perf_counter_ns"
        assert {c.check: c.verdict for c in r.kitebench.integrity}["secret_recheck"] == "pass"
