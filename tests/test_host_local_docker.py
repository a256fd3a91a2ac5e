"""launcher.local_docker: the host wrapper behind `--backend local --isolation docker|auto`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from contract import codec
from launcher.errors import InfraError
from launcher.local_docker import docker_available, run_payload_in_docker
from tests.docker_support import docker_client, ensure_test_image, py_payload


def test_docker_unavailable_is_false_not_an_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    assert docker_available(timeout_s=2) is False


@pytest.mark.docker
def test_runs_a_payload_with_the_same_isolation(tmp_path: Path) -> None:
    client: Any = docker_client()
    image = ensure_test_image(client)
    assert docker_available() is True
    events: list[str] = []
    payload = codec.validate(py_payload("probe"))
    env = {"KITEBENCH_IMAGE": image, "KITEBENCH_MEMORY": "300m", "BUILDKITE_AGENT_ACCESS_TOKEN": "x"}
    result = run_payload_in_docker(payload, output_dir=tmp_path, env=env,
                                   on_status=lambda ev: events.append(ev.state))
    assert result.passed, result.error
    assert (tmp_path / "result.json").exists()
    probe = result.runs["test"].run.result  # type: ignore[union-attr]
    assert probe["probe.memory_limit"] == str(300 * 2**20)
    assert probe["probe.root_fs"] == "read-only" and probe["probe.uid"] != "0"
    assert "BUILDKITE_AGENT_ACCESS_TOKEN" not in probe["probe.env_names"]
    assert result.kitebench.isolation["backend"] == "docker"
    assert "running" in events


@pytest.mark.docker
def test_missing_image_is_an_infra_error(tmp_path: Path) -> None:
    docker_client()
    payload = codec.validate(py_payload("pass"))
    with pytest.raises(InfraError, match="not on this host"):
        run_payload_in_docker(payload, output_dir=tmp_path,
                              env={"KITEBENCH_IMAGE": "kitebench-absent:none"})


@pytest.mark.docker
def test_image_presence_is_checked_on_the_engine() -> None:
    from launcher.local_docker import image_for, image_present

    image = ensure_test_image(docker_client())
    assert image_present(image) is True
    assert image_present("kitebench-absent:none") is False
    payload = codec.validate(py_payload("pass"))
    assert image_for(payload, {"KITEBENCH_IMAGE": "x:1"}) == "x:1"
    model = codec.validate({"lang": "model", "submission_archive": "AAAA",
                            "model_config": {"model_name": "m"}})
    assert image_for(model, {}) is None
    assert image_for(model, {"KITEBENCH_MODEL_IMAGE": "kb-vllm:1"}) == "kb-vllm:1"
