"""The host wrapper's pure parts: settings, the docker kwargs, the request that would reach
dockerd (no GPU here: the device request is asserted on the HTTP body), result collection."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from contract.result import FullResult, RunnerExit
from contract.resultio import MAX_RESULT_BYTES, signature, write_result
from host.container import (
    LABEL_GPU,
    LABEL_JOB,
    LABEL_SLOT,
    OUTPUT_MOUNT,
    container_env,
    container_kwargs,
)
from host.job import _collect
from host.settings import HostSettings, SettingsError, parse_size

UUID = "GPU-8f6e2c1a-4b3d-11ee-9c2a-0242ac120002"
OTHER = "GPU-00000000-1111-2222-3333-444444444444"

HOST_ENV = {
    "SUBMISSION_PAYLOAD": "eJwrSS0uAQAEXQHB",
    "KITEBENCH_RUNNER_LOG_LEVEL": "debug",
    "KITEBENCH_MAX_PAYLOAD_BYTES": "1000000",
    "BUILDKITE_AGENT_ACCESS_TOKEN": "bkaj_secret",
    "BUILDKITE_AGENT_TOKEN": "agent-registration-secret",
    "BUILDKITE_API_TOKEN": "bkua_secret",
    "BUILDKITE_JOB_ID": "0190-job",
    "KITEBENCH_RUNNER_API_TOKEN": "would-be-leaked-by-a-careless-prefix",
    "CUDA_VISIBLE_DEVICES": "3",
    "AWS_SECRET_ACCESS_KEY": "x",
    "HOME": "/var/lib/buildkite-agent",
    "PATH": "/usr/bin",
}


def _settings(**kw: Any) -> HostSettings:
    base = {"gpu_uuid": UUID, "cpuset": "8-15", "memory_bytes": 64 * 2**30, "pids_limit": 2048,
            "image": "kitebench-runner:1"}
    base.update(kw)
    return HostSettings(**base)


def test_settings_from_env_reads_every_variable() -> None:
    s = HostSettings.from_env({
        "KITEBENCH_GPU_UUID": UUID, "KITEBENCH_CPUSET": "0-7,16", "KITEBENCH_MEMORY": "48g",
        "KITEBENCH_PIDS_LIMIT": "512", "KITEBENCH_IMAGE": "img:1", "KITEBENCH_CGROUP_PARENT": "kb.slice",
        "KITEBENCH_JOB_TIMEOUT": "900", "KITEBENCH_STOP_GRACE": "5",
    })
    assert (s.gpu_uuid, s.cpuset, s.memory_bytes, s.pids_limit) == (UUID, "0-7,16", 48 * 2**30, 512)
    assert (s.image, s.cgroup_parent, s.job_timeout_s, s.stop_grace_s) == ("img:1", "kb.slice", 900, 5)
    assert s.slot_label == UUID


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"KITEBENCH_MEMORY": "lots"}, "KITEBENCH_MEMORY"),
        ({"KITEBENCH_CPUSET": "0-7;rm -rf"}, "KITEBENCH_CPUSET"),
        ({"KITEBENCH_PIDS_LIMIT": "-1"}, "KITEBENCH_PIDS_LIMIT"),
        ({"KITEBENCH_GPU_UUID": "3"}, "KITEBENCH_GPU_UUID"),
        ({"KITEBENCH_CONTAINER_USER": "0:0"}, "KITEBENCH_CONTAINER_USER"),
    ],
)
def test_bad_settings_name_the_variable(env: dict[str, str], names: str) -> None:
    with pytest.raises(SettingsError, match=names):
        HostSettings.from_env(env)


def test_parse_size_uses_docker_units() -> None:
    assert parse_size("512m") == 512 * 2**20
    assert parse_size("2G") == 2 * 2**30
    assert parse_size("1024") == 1024


def test_kwargs_isolate_the_container() -> None:
    kw = container_kwargs(_settings(cgroup_parent="kitebench.slice"), image="sha256:abc",
                          output_dir="/tmp/x/out", host_env=HOST_ENV, job_id="0190-job")
    assert kw["image"] == "sha256:abc"
    assert kw["network_mode"] == "none"
    assert kw["read_only"] is True
    assert set(kw["tmpfs"]) == {"/tmp", "/kitebench/work", "/kitebench/verdict"}
    # the output dir sits in a root-only tmpfs: the submission's uid cannot reach it
    assert "mode=0700" in kw["tmpfs"]["/kitebench/verdict"].split(",")
    assert OUTPUT_MOUNT.startswith("/kitebench/verdict/")
    assert all("exec" in kw["tmpfs"][d].split(",") for d in ("/tmp", "/kitebench/work"))
    assert kw["volumes"] == {"/tmp/x/out": {"bind": OUTPUT_MOUNT, "mode": "rw"}}
    assert kw["cap_drop"] == ["ALL"]
    assert sorted(kw["cap_add"]) == ["CHOWN", "KILL", "SETGID", "SETUID"]
    assert kw["security_opt"] == ["no-new-privileges"]
    # the runner is root with four capabilities; the submission runs as the configured uid
    assert kw["user"] == "0:0"
    assert kw["environment"]["KITEBENCH_SANDBOX_UID"] not in ("0", "root")
    assert kw["mem_limit"] == kw["memswap_limit"] == 64 * 2**30
    assert kw["cpuset_cpus"] == "8-15"
    assert kw["pids_limit"] == 2048
    assert kw["cgroup_parent"] == "kitebench.slice"
    assert kw["labels"][LABEL_JOB] == "0190-job"
    assert kw["labels"][LABEL_GPU] == UUID
    assert kw["labels"][LABEL_SLOT] == UUID
    assert "nano_cpus" not in kw and "privileged" not in kw


def test_models_dir_is_mounted_read_only_where_the_model_path_looks() -> None:
    # model jobs have no network: the weights come from the host's KITEBENCH_MODELS_DIR
    s = HostSettings.from_env({"KITEBENCH_MODELS_DIR": "/srv/models"})
    kw = container_kwargs(s, image="i", output_dir="/tmp/x/out", host_env={})
    assert kw["volumes"]["/srv/models"] == {"bind": "/models", "mode": "ro"}
    assert "KITEBENCH_MODELS_DIR" not in kw["environment"]  # the runner's default is /models
    with pytest.raises(SettingsError, match="KITEBENCH_MODELS_DIR"):
        HostSettings.from_env({"KITEBENCH_MODELS_DIR": "models"})


@pytest.mark.parametrize("var,mount", [("KITEBENCH_REFERENCE_DIR", "/reference"),
                                       ("KITEBENCH_START_CACHE_DIR", "/start-cache")])
def test_runner_stores_are_mounted_for_the_runner(var: str, mount: str) -> None:
    s = HostSettings.from_env({var: "/srv/kitebench-store"})
    kw = container_kwargs(s, image="i", output_dir="/tmp/x/out", host_env={})
    assert kw["volumes"]["/srv/kitebench-store"] == {"bind": mount, "mode": "rw"}
    assert kw["environment"][var] == mount
    assert var not in container_kwargs(
        _settings(), image="i", output_dir="/tmp/x/out", host_env={}
    )["environment"]
    with pytest.raises(SettingsError, match=var):
        HostSettings.from_env({var: "relative"})


def test_env_is_an_allow_list() -> None:
    env = container_env(HOST_ENV, _settings())
    assert env["SUBMISSION_PAYLOAD"] == HOST_ENV["SUBMISSION_PAYLOAD"]
    assert env["KITEBENCH_RUNNER_LOG_LEVEL"] == "debug"
    assert env["KITEBENCH_MAX_PAYLOAD_BYTES"] == "1000000"
    for leaked in ("BUILDKITE_AGENT_ACCESS_TOKEN", "BUILDKITE_AGENT_TOKEN", "BUILDKITE_API_TOKEN",
                   "BUILDKITE_JOB_ID", "KITEBENCH_RUNNER_API_TOKEN", "AWS_SECRET_ACCESS_KEY",
                   "CUDA_VISIBLE_DEVICES"):
        assert leaked not in env, leaked
    assert not any("secret" in v for v in env.values())
    assert env["HOME"] != HOST_ENV["HOME"]
    assert env["NVIDIA_VISIBLE_DEVICES"] == UUID


def test_no_gpu_means_no_device_request_and_no_devices_visible() -> None:
    kw = container_kwargs(HostSettings(), image="i", output_dir="/o", host_env={})
    assert kw["device_requests"] == []
    assert kw["environment"]["NVIDIA_VISIBLE_DEVICES"] == "void"
    assert "mem_limit" not in kw and "cpuset_cpus" not in kw
    assert kw["labels"][LABEL_GPU] == "none" and LABEL_SLOT not in kw["labels"]


def _create_request(kw: dict[str, Any]) -> dict[str, Any]:
    """The JSON body docker-py would POST to /containers/create for these kwargs (no daemon:
    the HTTP call is intercepted)."""
    import docker

    client = docker.DockerClient(base_url="unix:///nonexistent.sock", version="1.41")
    sent: dict[str, Any] = {}

    def fake_post_json(url: str, data: Any, **_kw: Any) -> Any:
        sent["url"], sent["body"] = url, data
        raise RuntimeError("intercepted")

    client.api._post_json = fake_post_json  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="intercepted"):
        client.containers.create(**kw)
    return json.loads(json.dumps(sent["body"]))


def test_device_request_names_exactly_the_agents_gpu() -> None:
    body = _create_request(container_kwargs(_settings(), image="img", output_dir="/o", host_env={}))
    reqs = body["HostConfig"]["DeviceRequests"]
    assert len(reqs) == 1
    assert reqs[0]["DeviceIDs"] == [UUID]
    assert OTHER not in json.dumps(body)
    assert reqs[0]["Count"] == 0  # 0 = "not a count": the ids select the device
    assert reqs[0]["Capabilities"] == [["gpu"]]
    host = body["HostConfig"]
    assert host["NetworkMode"] == "none" and host["ReadonlyRootfs"] is True
    assert host["CapDrop"] == ["ALL"] and host["SecurityOpt"] == ["no-new-privileges"]
    assert host["Memory"] == host["MemorySwap"] == 64 * 2**30
    assert host["CpusetCpus"] == "8-15" and host["PidsLimit"] == 2048
    assert "NVIDIA_VISIBLE_DEVICES=" + UUID in body["Env"]
    assert not any(e.startswith("BUILDKITE_") for e in body["Env"])


def test_gpu_index_is_used_when_no_uuid() -> None:
    body = _create_request(container_kwargs(
        HostSettings(gpu_index=3), image="img", output_dir="/o", host_env={}))
    assert body["HostConfig"]["DeviceRequests"][0]["DeviceIDs"] == ["3"]


# ---- result collection (no container needed) -------------------------------------------------

_EXITED = {"ExitCode": 0, "OOMKilled": False}


def _passed() -> FullResult:
    r = FullResult(success=True, error="")
    r.kitebench.passed, r.kitebench.exit_code = True, int(RunnerExit.PASSED)
    return r


KEY = "ab" * 32


def test_valid_result_json_is_kept(tmp_path: Path) -> None:
    write_result(_passed(), tmp_path, key=KEY)
    r = _collect(tmp_path, _EXITED, "exited", 60, HostSettings(), None, "", KEY)
    assert r.success is True and r.error == "" and r.passed is True


@pytest.mark.parametrize("forge", ["unsigned", "other key", "edited after signing"])
def test_forged_pass_that_the_runner_did_not_write_is_refused(tmp_path: Path, forge: str) -> None:
    # Whatever the file says (exit code included), only this job's key vouches for it.
    if forge == "unsigned":
        write_result(_passed(), tmp_path)
    elif forge == "other key":
        write_result(_passed(), tmp_path, key="cd" * 32)
    else:
        failed = _passed()
        failed.kitebench.passed = False
        write_result(failed, tmp_path, key=KEY)
        doc = json.loads((tmp_path / "result.json").read_text())
        doc["kitebench"]["passed"] = True
        (tmp_path / "result.json").write_text(json.dumps(doc))
    r = _collect(tmp_path, _EXITED, "exited", 60, HostSettings(), None, "", KEY)
    assert r.success is False and r.passed is False
    assert "runner" in r.error and ("not signed" in r.error or "signature" in r.error)
    assert "\n" not in r.error.split("; last log lines")[0]  # one line of reason


def test_symlinked_result_json_is_not_followed(tmp_path: Path) -> None:
    target = tmp_path / "host-secret"
    target.write_text("{}")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "result.json").symlink_to(target)
    r = _collect(tmp_path / "out", _EXITED, "exited", 60, HostSettings(), None, "", KEY)
    assert r.success is False and "symbolic link" in r.error


def test_fifo_result_json_does_not_hang_the_host(tmp_path: Path) -> None:
    import os
    import threading

    os.mkfifo(tmp_path / "result.json")
    box: list[FullResult] = []
    t = threading.Thread(
        target=lambda: box.append(_collect(tmp_path, _EXITED, "exited", 60, HostSettings(), None,
                                           "", KEY)),
        daemon=True,
    )
    t.start()
    t.join(timeout=30)
    assert not t.is_alive(), "reading a FIFO result.json blocked the host"
    assert box[0].success is False and "not a regular file" in box[0].error


def test_bad_max_payload_bytes_is_a_config_failure_not_a_traceback() -> None:
    from host.job import HostExit, run_job

    out = run_job("x", HostSettings(), host_env={"KITEBENCH_MAX_PAYLOAD_BYTES": "64MiB"},
                  client=object())
    assert out.exit_code == HostExit.CONFIG
    assert out.result.success is False and "KITEBENCH_MAX_PAYLOAD_BYTES" in out.result.error


def test_malformed_result_json_is_replaced_by_a_failure(tmp_path: Path) -> None:
    data = b'{"success": "very", "runs": 3}'
    (tmp_path / "result.json").write_bytes(data)  # signed, yet not the contract: still refused
    (tmp_path / "result.json.sig").write_text(signature(KEY, data))
    r = _collect(tmp_path, _EXITED, "exited", 60, HostSettings(), None, "log line", KEY)
    assert r.success is False
    assert r.kitebench.stage == "container"
    assert "does not match the contract" in r.error


def test_oversized_result_json_is_replaced_by_a_failure(tmp_path: Path) -> None:
    with open(tmp_path / "result.json", "wb") as f:
        f.write(b'{"success": true, "error": "')
        f.write(b"x" * (MAX_RESULT_BYTES + 10))
        f.write(b'"}')
    r = _collect(tmp_path, _EXITED, "exited", 60, HostSettings(), None, "", KEY)
    assert r.success is False and "larger than" in r.error


def test_missing_result_json_reports_exit_code_and_logs(tmp_path: Path) -> None:
    r = _collect(tmp_path, {"ExitCode": 1, "OOMKilled": False}, "exited", 60, HostSettings(), None,
                 "ModuleNotFoundError: No module named 'runner'", KEY)
    assert r.success is False
    assert "was not written" in r.error and "code 1" in r.error and "No module named" in r.error
    assert r.kitebench.exit_code == int(RunnerExit.INTERNAL)


def test_oom_is_reported_with_the_limit(tmp_path: Path) -> None:
    r = _collect(tmp_path, {"ExitCode": 137, "OOMKilled": True}, "exited", 60,
                 HostSettings(memory_bytes=256 * 2**20), None, "", KEY)
    assert r.error.startswith("out of memory (limit 256.0 MiB)")
    assert r.passed is False
