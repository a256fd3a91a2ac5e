"""runner.system: the GPU query that starts early and is read once, the versions it reports, and
what its tools get of the runner (nothing but where to find themselves)."""

from __future__ import annotations

import os
import time
from importlib import metadata
from pathlib import Path

import pytest

from runner import system


def _tool(bindir: Path, name: str, body: str) -> None:
    """A fake vendor tool (a shell script; only absolute paths inside, PATH is just bindir)."""
    path = bindir / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)


@pytest.fixture
def bindir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "bin"
    d.mkdir()
    monkeypatch.setenv("PATH", str(d))  # no real nvidia-smi / rocm-smi can answer
    yield d
    system.stop_probe()


def _gone(pid: int, within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.02)
    return False


def test_nvidia_names_every_gpu(bindir):
    _tool(bindir, "nvidia-smi", 'echo "NVIDIA H100 80GB HBM3"\necho "NVIDIA H100 80GB HBM3"\n')
    assert system.GpuProbe().result() == (["NVIDIA H100 80GB HBM3"] * 2, "CUDA")


def test_rocm_answers_where_nvidia_fails(bindir):
    _tool(bindir, "nvidia-smi", "exit 9\n")
    _tool(bindir, "rocm-smi", 'echo "device,Card series"\necho "card0,AMD Instinct MI300X"\n')
    assert system.GpuProbe().result() == (["AMD Instinct MI300X"], "ROCm")


def test_no_tool_is_a_cpu_machine(bindir):
    assert system.GpuProbe().result() == ([], "CPU")


def test_a_tool_that_does_not_answer_in_time_is_killed(bindir, tmp_path, monkeypatch):
    monkeypatch.setattr(system, "QUERY_TIMEOUT_S", 0.5)
    _tool(bindir, "nvidia-smi", f"echo $$ > {tmp_path}/pid\nexec /bin/sleep 30\n")
    t = time.monotonic()
    assert system.GpuProbe().result() == ([], "CPU")
    assert time.monotonic() - t < 10
    assert _gone(int((tmp_path / "pid").read_text()))


def test_the_started_probe_is_what_collect_system_reads_once(bindir, tmp_path):
    _tool(bindir, "nvidia-smi", f'echo run >> {tmp_path}/runs\necho "NVIDIA L4"\n')
    system.start_probe()
    info = system.collect_system()
    assert (info.gpu, info.device_count, info.runtime) == ("NVIDIA L4", 1, "CUDA")
    assert (tmp_path / "runs").read_text().count("run") == 1
    system.collect_system()  # a later call asks afresh
    assert (tmp_path / "runs").read_text().count("run") == 2


def test_stop_probe_kills_an_unread_query(bindir, tmp_path):
    _tool(bindir, "nvidia-smi", f"echo $$ > {tmp_path}/pid\nexec /bin/sleep 30\n")
    system.start_probe()
    deadline = time.monotonic() + 10
    while not (tmp_path / "pid").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    system.stop_probe()
    assert _gone(int((tmp_path / "pid").read_text()))


def test_the_tools_get_only_what_finds_them(bindir, tmp_path, monkeypatch):
    monkeypatch.setenv("KITEBENCH_RESULT_KEY", "ab" * 32)
    monkeypatch.setenv("SUBMISSION_PAYLOAD", "eJyrVkrLz1eyUkpKLFKqBQAd1AQs")
    monkeypatch.setenv("BUILDKITE_AGENT_ACCESS_TOKEN", "secret")
    _tool(bindir, "nvidia-smi", f'/usr/bin/env > {tmp_path}/env\necho "NVIDIA L4"\n')
    assert system.GpuProbe().result() == (["NVIDIA L4"], "CUDA")
    names = {line.split("=", 1)[0] for line in (tmp_path / "env").read_text().splitlines()}
    assert names <= set(system._TOOL_ENV) | {"PWD", "SHLVL", "_"}  # what sh adds itself
    assert "PATH" in names


@pytest.mark.parametrize("name", ["pydantic", "pydantic_core", "pytest", "PyYAML", "no-such-dist"])
def test_dist_version_is_what_importlib_metadata_finds(name):
    try:
        expected = metadata.version(name)
    except metadata.PackageNotFoundError:
        expected = ""
    assert system.dist_version(name) == expected


def test_every_system_field_is_filled(bindir):
    info = system.collect_system()
    assert set(info.model_dump()) == {
        "gpu", "device_count", "cpu", "runtime", "platform", "torch", "hostname"
    }
    assert info.cpu and info.platform and info.hostname and info.runtime == "CPU"
    assert info.torch == system.dist_version("torch")
