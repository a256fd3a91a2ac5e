"""pipeline.yml and `kitebench pipeline render`, validated with Buildkite's own schema
(check-jsonschema's builtin ``vendor.buildkite``, the buildkite/pipeline-schema)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from host.job import HostExit
from host.pipeline import upload_pipeline
from tests.common import REPO, missing_prereq

PIPELINE = REPO / "pipeline.yml"


def _check(path: Path) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("check-jsonschema")
    if exe is None:
        missing_prereq("check-jsonschema is not installed (pip install -e '.[test]')")
    return subprocess.run([exe, "--builtin-schema", "vendor.buildkite", str(path)],
                          capture_output=True, text=True, timeout=120, check=False)


def _kitebench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kitebench", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=120, check=False)


def test_pipeline_yml_matches_the_schema() -> None:
    proc = _check(PIPELINE)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_schema_check_is_not_vacuous(tmp_path: Path) -> None:
    data = yaml.safe_load(PIPELINE.read_text())
    data["steps"][0]["timeout_in_minute"] = 5  # misspelt key: command steps forbid extras
    bad = tmp_path / "bad.yml"
    bad.write_text(yaml.safe_dump(data))
    proc = _check(bad)
    assert proc.returncode != 0
    assert "timeout_in_minute" in proc.stdout + proc.stderr


def test_pipeline_yml_is_the_step_the_code_describes() -> None:
    data = yaml.safe_load(PIPELINE.read_text())
    assert data == upload_pipeline()
    step = data["steps"][0]
    assert step["command"] == "kitebench job"
    assert step["agents"] == {"queue": "${GPU_QUEUE}"}
    assert step["artifact_paths"] == "result.json"
    assert step["timeout_in_minutes"] > 0
    statuses = [r.get("exit_status") for r in step["retry"]["automatic"]]
    assert -1 in statuses and HostExit.INFRA in statuses
    assert 0 not in statuses and 78 not in statuses  # a verdict / a broken host: no retry


def test_render_prints_one_guarded_step_per_queue(tmp_path: Path) -> None:
    gpus = tmp_path / "gpus.yml"
    gpus.write_text(
        "gpus:\n"
        "  H100: {queue: h100, arch: '90a'}\n"
        "  H100-NVL: {queue: h100, arch: '90a'}\n"  # same queue: still one step
        "  LabCard: {queue: lab.card-1, arch: '89'}\n"
    )
    proc = _kitebench("pipeline", "render", "--gpus-file", str(gpus))
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "rendered.yml"
    out.write_text(proc.stdout)
    check = _check(out)
    assert check.returncode == 0, check.stdout + check.stderr

    steps = yaml.safe_load(proc.stdout)["steps"]
    by_queue = {s["agents"]["queue"]: s for s in steps}
    assert sorted(by_queue) == sorted(set(by_queue))  # no duplicates
    assert {"h100", "lab.card-1"} <= set(by_queue)
    assert by_queue["h100"]["if"] == 'build.env("GPU_QUEUE") == "h100"'
    assert by_queue["lab.card-1"]["if"] == 'build.env("GPU_QUEUE") == "lab.card-1"'
    assert len({s["key"] for s in steps}) == len(steps)
    assert all("${" not in s["agents"]["queue"] for s in steps)  # nothing left to interpolate
    assert all(s["command"] == "kitebench job" for s in steps)


def test_render_with_a_broken_registry_is_one_line(tmp_path: Path) -> None:
    gpus = tmp_path / "gpus.yml"
    gpus.write_text("gpus:\n  X: {queue: 'no spaces allowed'}\n")
    proc = _kitebench("pipeline", "render", "--gpus-file", str(gpus))
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("args", [["pipeline", "--help"], ["job", "--help"]])
def test_commands_are_registered(args: list[str]) -> None:
    proc = _kitebench(*args)
    assert proc.returncode == 0, proc.stderr
