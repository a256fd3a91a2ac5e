"""cu payloads: nvcc compiles the example (explicit arch), running it reports a clear failure on
a machine without a GPU (passes on one with a GPU), compile errors and a missing nvcc are data."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from contract import codec
from launcher.task import build_payload
from runner.kernels.compile import arch_flags, nvcc_command
from tests.kernels_support import REPO, run_runner

TASK = REPO / "examples" / "vectoradd_cu"
CORRECT = TASK / "solutions" / "correct" / "submission.cu"
WRONG = TASK / "solutions" / "wrong" / "subtract.cu"


def _has_gpu() -> bool:
    return shutil.which("nvidia-smi") is not None and os.path.exists("/dev/nvidiactl")


def _need_nvcc() -> None:
    if shutil.which("nvcc") is None:
        pytest.skip("nvcc is not installed on this machine")


def _encoded(sub: Path, **kw) -> str:  # type: ignore[no-untyped-def]
    return codec.encode(build_payload(TASK, sub, **kw), limit=None)


@pytest.mark.slow
def test_cu_example_compiles_and_runs_or_fails_clearly(runner_env) -> None:
    _need_nvcc()
    run = run_runner(_encoded(CORRECT, arch="90"), runner_env)
    ev = run.result.runs["test"]
    comp = ev.compilation
    assert comp is not None and comp.nvcc_found and comp.success, comp
    assert comp.exit_code == 0 and comp.nvcc_version
    assert "-gencode=arch=compute_90,code=[sm_90,compute_90]" in comp.command
    assert "eval.cu" in comp.command and "submission.cu" in comp.command
    assert ev.run is not None and ev.run.command == "./eval.out test cases.txt"
    assert [p.name for p in run.result.kitebench.phases] == ["compile", "test"]
    if _has_gpu():
        assert run.result.passed, run.result.error
        return
    # No GPU here: the harness's CUDA failure (exit 110) is reported, with the reason.
    assert ev.run.exit_code == 110 and not ev.run.passed
    assert "CUDA failure" in run.result.error and "no usable CUDA GPU" in run.result.error
    assert run.result.kitebench.stage == "run" and run.exit_code == 1
    assert any("no GPU" in w for w in run.result.kitebench.warnings)


@pytest.mark.slow
def test_wrong_cu_solution_fails(runner_env) -> None:
    if not _has_gpu():
        pytest.skip("running CUDA code needs a GPU (the compile path is tested without one)")
    run = run_runner(_encoded(WRONG), runner_env)
    assert not run.result.passed and run.result.runs["test"].run.exit_code == 112


@pytest.mark.slow
def test_compile_error_is_reported(runner_env, tmp_path) -> None:
    _need_nvcc()
    bad = tmp_path / "bad.cu"
    bad.write_text('#include "task.h"\nvoid vectoradd(const float* a) { this is not C++; }\n')
    run = run_runner(_encoded(bad, arch="90"), runner_env)
    comp = run.result.runs["test"].compilation
    assert comp is not None and comp.nvcc_found and not comp.success and comp.exit_code != 0
    assert "error" in comp.stderr
    assert run.result.runs["test"].run is None
    assert run.result.kitebench.stage == "compile" and run.exit_code == 1
    assert run.result.error.startswith("compilation failed (nvcc exit")


def test_missing_nvcc_is_reported(runner_env, tmp_path) -> None:
    env = dict(runner_env)
    # A PATH without nvcc (but with the tools the runner itself uses).
    bindir = tmp_path / "bin"
    bindir.mkdir()
    env["PATH"] = str(bindir) + os.pathsep + "/usr/bin" + os.pathsep + "/bin"
    if shutil.which("nvcc", path=env["PATH"]):
        pytest.skip("nvcc lives in /usr/bin here; cannot build a PATH without it")
    run = run_runner(_encoded(CORRECT, arch="90"), env)
    comp = run.result.runs["test"].compilation
    assert comp is not None and comp.nvcc_found is False and comp.success is False
    assert "nvcc was not found on PATH" in comp.stderr
    assert run.result.error == "compilation failed: nvcc was not found on PATH"
    assert run.result.kitebench.stage == "compile" and run.exit_code == 1


def test_nvcc_command_shape() -> None:
    payload = codec.validate(
        {
            "lang": "cu",
            "sources": {"a.cu": "", "b.cu": ""},
            "headers": {"h.h": ""},
            "defines": {"FAST": None, "N": "4"},
            "include_dirs": ["inc"],
            "libraries": ["cublas"],
            "compile_flags": ["-Xptxas=-v"],
            "arch": "90a",
        }
    )
    cmd = nvcc_command("nvcc", payload, payload.arch)
    assert cmd[:4] == ["nvcc", "-std=c++17", "-O3", "-lineinfo"]
    assert "-gencode=arch=compute_90a,code=[sm_90a,compute_90a]" in cmd
    assert "-DFAST" in cmd and "-DN=4" in cmd and "-Iinc" in cmd and "-Xptxas=-v" in cmd
    assert cmd[-3:] == ["-o", "eval.out", "-lcublas"]
    assert cmd.index("a.cu") < cmd.index("-o") < cmd.index("-lcublas")
    assert arch_flags(None) == []
