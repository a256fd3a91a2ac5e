"""``kitebench job`` end to end with a real Docker engine and the offline test image.

A recording stand-in ``buildkite-agent`` (tests/bin) is first on PATH; the real agent cannot be
installed here. There is no GPU: these jobs run with no device request (see
test_host_container.py for the request a GPU host would send).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from contract import codec
from contract.result import FullResult
from host.container import LABEL_SLOT
from tests.common import EXAMPLES, REPO
from tests.docker_support import docker_client, encoded, ensure_test_image, py_payload

pytestmark = [pytest.mark.docker, pytest.mark.slow]

AGENT_BIN = REPO / "tests" / "bin"
TOKENS = {
    "BUILDKITE_AGENT_ACCESS_TOKEN": "bkaj_job_secret_value",
    "BUILDKITE_AGENT_TOKEN": "bk_registration_secret_value",
}


@pytest.fixture(scope="module")
def client() -> Any:
    return docker_client()


@pytest.fixture(scope="module")
def image(client: Any) -> str:
    return ensure_test_image(client)


class Job:
    """One ``kitebench job`` in a fresh job directory, with its own slot label."""

    def __init__(self, root: Path, image: str, **settings: str) -> None:
        self.dir = root / "job"
        self.dir.mkdir()
        self.slot = f"test-{uuid.uuid4().hex[:12]}"
        self.log = root / "agent.jsonl"
        self.artifacts = root / "artifacts"
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("KITEBENCH_", "BUILDKITE_", "SUBMISSION_"))}
        self.env.update(TOKENS)
        self.env.update(
            PATH=f"{AGENT_BIN}{os.pathsep}{self.env.get('PATH', '')}",
            PYTHONPATH=str(REPO),
            BUILDKITE_JOB_ID=f"job-{self.slot}",
            BUILDKITE_BUILD_NUMBER="42",
            KITEBENCH_AGENT_LOG=str(self.log),
            KITEBENCH_AGENT_STATE=str(root / "agent-state"),
            KITEBENCH_AGENT_ARTIFACTS=str(self.artifacts),
            KITEBENCH_IMAGE=image,
            KITEBENCH_SLOT=self.slot,
            KITEBENCH_MEMORY="256m",
            KITEBENCH_CPUSET="0",
            KITEBENCH_PIDS_LIMIT="64",
        )
        self.env.update(settings)

    def cmd(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "kitebench", "job", *args]

    def run(self, payload: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        env = dict(self.env, SUBMISSION_PAYLOAD=payload)
        return subprocess.run(self.cmd(*args), cwd=self.dir, env=env, capture_output=True,
                              text=True, timeout=timeout, check=False)

    def start(self, payload: str, *args: str) -> subprocess.Popen[str]:
        env = dict(self.env, SUBMISSION_PAYLOAD=payload)
        return subprocess.Popen(self.cmd(*args), cwd=self.dir, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    @property
    def result(self) -> FullResult:
        return FullResult.model_validate_json((self.dir / "result.json").read_text())

    @property
    def calls(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def meta(self) -> dict[str, str]:
        return json.loads((self.log.parent / "agent-state" / "meta-data.json").read_text())

    def annotations(self) -> dict[str, Any]:
        return json.loads((self.log.parent / "agent-state" / "annotations.json").read_text())

    def containers(self, client: Any) -> list[Any]:
        return client.containers.list(all=True, filters={"label": f"{LABEL_SLOT}={self.slot}"})


def _vectoradd_payload(solution: str) -> str:
    from launcher.task import build_payload

    task = EXAMPLES / "vectoradd_np"
    if not task.exists():
        pytest.skip("examples/vectoradd_np is not there yet")
    sub = next((task / "solutions" / solution).glob("*.py"))
    return codec.encode(build_payload(task, sub, mode="test"))


def test_bundled_cpu_example_runs_and_is_published(tmp_path: Path, image: str, client: Any) -> None:
    job = Job(tmp_path, image)
    proc = job.run(_vectoradd_payload("correct"))
    assert proc.returncode == 0, proc.stderr
    r = job.result
    assert r.passed, r.error
    assert r.runs["test"].run is not None and r.runs["test"].run.passed
    iso = r.kitebench.isolation
    assert iso["image"] == image and iso["image_digest"].startswith("sha256:")
    assert iso["container_started"] is True and iso["buildkite_job_id"] == job.env["BUILDKITE_JOB_ID"]

    calls = [c["argv"] for c in job.calls]
    assert ["artifact", "upload", "result.json"] in calls
    assert all(c["has_access_token"] for c in job.calls)  # the agent needs it; the container not
    uploaded = FullResult.model_validate_json((job.artifacts / "result.json").read_text())
    assert uploaded == r
    assert job.meta() == {"kitebench_success": "true", "kitebench_passed": "true"}
    note = job.annotations()["kitebench"]
    assert note["style"] == "success"
    assert "passed" in note["body"] and "| test | pass |" in note["body"]
    assert iso["image_digest"] in note["body"]
    assert job.containers(client) == []


def test_failing_submission_still_exits_zero(tmp_path: Path, image: str) -> None:
    job = Job(tmp_path, image)
    proc = job.run(_vectoradd_payload("wrong"))
    assert proc.returncode == 0, proc.stderr
    assert job.result.success is True and job.result.passed is False
    assert job.meta()["kitebench_passed"] == "false"
    assert "FAIL" in job.annotations()["kitebench"]["body"]


def test_probe_sees_the_isolation(tmp_path: Path, image: str, client: Any) -> None:
    job = Job(tmp_path, image, KITEBENCH_MEMORY="256m", KITEBENCH_CPUSET="0", KITEBENCH_PIDS_LIMIT="100")
    proc = job.run(encoded(py_payload("probe")))
    assert proc.returncode == 0, proc.stderr
    r = job.result
    assert r.passed, r.error
    probe = r.runs["test"].run.result  # type: ignore[union-attr]
    assert probe["probe.uid"] != "0" and probe["probe.gid"] != "0"
    assert probe["probe.network"].startswith("blocked")
    assert probe["probe.interfaces"] == "lo"  # loopback only
    assert probe["probe.memory_limit"] == str(256 * 2**20)
    assert probe["probe.memsw_limit"] == str(256 * 2**20)  # no swap on top
    assert probe["probe.cpuset"] == "0" and probe["probe.affinity"] == "0"
    assert probe["probe.pids_max"] == "100"
    assert probe["probe.root_fs"] == "read-only"
    assert probe["probe.tmp"] == "writable"
    assert probe["probe.caps"] == "0000000000000000"
    assert probe["probe.no_new_privs"] == "1"
    names = probe["probe.env_names"].split(",")
    assert not [n for n in names if n.startswith("BUILDKITE") or "TOKEN" in n]
    # PID 1 is the non-dumpable runner: the submission cannot read the container's environment.
    assert probe["probe.container_env_read"] != "yes"
    # Nor does any secret value appear anywhere in what the container produced.
    text = (job.dir / "result.json").read_text()
    assert not any(secret in text for secret in TOKENS.values())


def test_fork_bomb_is_contained_and_reported(tmp_path: Path, image: str, client: Any) -> None:
    job = Job(tmp_path, image, KITEBENCH_PIDS_LIMIT="64")
    proc = job.run(encoded(py_payload("fork_bomb")))
    assert proc.returncode == 0, proc.stderr
    r = job.result
    assert r.passed is False
    assert int(r.runs["test"].run.result["forked"]) < 64  # type: ignore[union-attr]
    assert r.kitebench.isolation["pids_limit_hits"] > 0
    # the runner reads the counter itself too: a job that ends between two host samples
    assert r.kitebench.details["pids_limit_hits"] > 0
    assert "process limit reached (pids limit 64)" in r.error
    assert any("process limit reached" in w for w in r.kitebench.warnings)
    assert job.containers(client) == []


def test_memory_hog_is_reported_as_out_of_memory(tmp_path: Path, image: str) -> None:
    job = Job(tmp_path, image, KITEBENCH_MEMORY="256m")
    proc = job.run(encoded(py_payload("memory_hog")))
    assert proc.returncode == 0, proc.stderr
    r = job.result
    assert r.passed is False
    assert r.error.startswith("out of memory (limit 256.0 MiB)"), r.error
    assert r.kitebench.isolation["oom_killed"] is True


def test_hang_is_killed_at_the_job_timeout(tmp_path: Path, image: str, client: Any) -> None:
    job = Job(tmp_path, image, KITEBENCH_JOB_TIMEOUT="5")
    proc = job.run(encoded(py_payload("hang", timeout=600)))
    assert proc.returncode == 0, proc.stderr
    r = job.result
    assert r.success is False and r.passed is False
    assert r.error.startswith("job timed out after 5s"), r.error
    assert r.kitebench.isolation["timed_out"] is True
    assert r.kitebench.isolation["container_exit_code"] == 137  # SIGKILL
    assert job.containers(client) == []
    assert ["artifact", "upload", "result.json"] in [c["argv"] for c in job.calls]


def test_sigterm_stops_the_container_and_publishes_a_partial_result(
    tmp_path: Path, image: str, client: Any
) -> None:
    grace = 8
    job = Job(tmp_path, image, KITEBENCH_STOP_GRACE=str(grace))
    proc = job.start(encoded(py_payload("hang", timeout=600)))
    try:
        deadline = time.monotonic() + 120
        while not [c for c in job.containers(client) if c.status == "running"]:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the container never started"
            time.sleep(0.2)
        time.sleep(1.0)  # the runner is inside the submission's run now
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=grace + 60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err
    assert job.containers(client) == []
    r = job.result
    assert r.kitebench.interrupted is True and r.kitebench.stage == "interrupted"
    assert "interrupted by SIGTERM" in r.error
    uploaded = FullResult.model_validate_json((job.artifacts / "result.json").read_text())
    assert uploaded.kitebench.interrupted is True
    assert job.meta()["kitebench_success"] == "false"


def test_bad_payload_starts_no_container(tmp_path: Path, image: str, client: Any) -> None:
    job = Job(tmp_path, image)
    before = {c.id for c in client.containers.list(all=True)}
    proc = job.run(codec.encode_raw({"lang": "py", "main": "m.py"}))  # no sources
    assert proc.returncode == 0, proc.stderr
    r = job.result
    assert r.success is False and r.kitebench.stage == "validate"
    assert r.kitebench.isolation["container_started"] is False
    after = {c.id for c in client.containers.list(all=True)}
    assert after - before == set()
    assert ["artifact", "upload", "result.json"] in [c["argv"] for c in job.calls]


def test_missing_image_is_a_host_error_and_nothing_is_pulled(tmp_path: Path, image: str, client: Any) -> None:
    from docker.errors import ImageNotFound

    missing = f"kitebench-not-here:{uuid.uuid4().hex[:8]}"
    job = Job(tmp_path, image, KITEBENCH_IMAGE=missing)
    proc = job.run(encoded(py_payload("pass")))
    assert proc.returncode == 78, proc.stderr
    assert "not on this host" in job.result.error and missing in job.result.error
    with pytest.raises(ImageNotFound):
        client.images.get(missing)


def test_stale_containers_of_the_slot_are_removed(tmp_path: Path, image: str, client: Any) -> None:
    job = Job(tmp_path, image)
    stale = client.containers.create(image, entrypoint=["sleep", "600"],
                                     labels={LABEL_SLOT: job.slot}, network_mode="none")
    other = client.containers.create(image, entrypoint=["sleep", "600"],
                                     labels={LABEL_SLOT: job.slot + "-other"}, network_mode="none")
    try:
        proc = job.run(encoded(py_payload("pass")))
        assert proc.returncode == 0, proc.stderr
        assert job.result.kitebench.isolation["stale_removed"] == 1
        assert job.containers(client) == []
        other.reload()  # another slot's container is left alone
    finally:
        for c in (stale, other):
            with contextlib.suppress(Exception):
                c.remove(force=True)


def test_publish_failure_is_an_infrastructure_exit(tmp_path: Path, image: str) -> None:
    job = Job(tmp_path, image, KITEBENCH_AGENT_FAIL="artifact")
    proc = job.run(encoded(py_payload("pass")))
    assert proc.returncode == 75
    assert "publishing failed" in proc.stderr
    assert job.result.passed  # the verdict itself is intact on disk


def test_engine_gone_mid_job_is_a_retryable_failure_with_a_result(
    tmp_path: Path, image: str, client: Any
) -> None:
    """docker-py raises requests' errors (not DockerException) when the engine goes away: the job
    still ends in a failed result with exit code INFRA (75, retried by the pipeline)."""
    import docker

    from host.job import HostExit, run_job
    from host.settings import HostSettings

    job = Job(tmp_path, image)
    own = docker.from_env(timeout=60)
    adapter = own.api._custom_adapter  # the unix-socket transport of this client only

    def on_status(state: str, _msg: str) -> None:
        if state == "running":  # the container runs; now the engine "vanishes" for this client
            adapter.socket_path = str(tmp_path / "gone.sock")
            adapter.pools.clear()

    try:
        payload = encoded(py_payload("hang", timeout=30))
        out = run_job(payload, HostSettings.from_env(job.env),
                      host_env=dict(job.env, SUBMISSION_PAYLOAD=payload), client=own,
                      on_status=on_status, timeout_s=5)
    finally:
        for c in job.containers(client):
            c.remove(force=True)
    assert out.exit_code == HostExit.INFRA
    assert out.result.success is False and "docker engine error" in out.result.error
