"""nvcc: compile a ``cu`` payload into ``eval.out``."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

from contract.payload import COMPILE_TIMEOUT_S, CuPayload
from contract.result import CompileResult
from runner.kernels.process import run_process

BINARY_NAME = "eval.out"


def find_nvcc(env: Mapping[str, str]) -> str | None:
    """nvcc on the job's PATH (not the runner's guess of where CUDA might live)."""
    return shutil.which("nvcc", path=env.get("PATH", ""))


def nvcc_version(nvcc: str, env: Mapping[str, str]) -> str:
    try:
        out = subprocess.run(
            [nvcc, "--version"],
            capture_output=True,
            text=True,
            timeout=30,
            env=dict(env),
            check=False,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
    m = re.search(r"release [\d.]+, V([\w.]+)", out)
    return m.group(1) if m else out.strip().splitlines()[-1] if out.strip() else ""


def detect_arch(env: Mapping[str, str]) -> str | None:
    """The first GPU's compute capability as nvcc wants it ("9.0" → "90"), or None."""
    smi = shutil.which("nvidia-smi", path=env.get("PATH", ""))
    if smi is None:
        return None
    try:
        out = subprocess.run(
            [smi, "--query-gpu=compute_cap", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
            env=dict(env),
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    for line in out.stdout.splitlines():
        cap = line.strip().replace(".", "")
        if out.returncode == 0 and cap.isdigit():
            return cap
    return None


def arch_flags(arch: str | None) -> list[str]:
    """SASS for the GPU plus PTX of the same arch (so a newer driver can still JIT it)."""
    if arch is None:
        return []
    return [f"-gencode=arch=compute_{arch},code=[sm_{arch},compute_{arch}]"]


def nvcc_command(nvcc: str, payload: CuPayload, arch: str | None) -> list[str]:
    cmd = [nvcc, "-std=c++17", "-O3", "-lineinfo", *arch_flags(arch)]
    for name, value in payload.defines.items():
        cmd.append(f"-D{name}" if value is None else f"-D{name}={value}")
    cmd.append("-I.")
    cmd += [f"-I{d}" for d in payload.include_dirs]
    cmd += payload.compile_flags
    cmd += list(payload.sources)
    cmd += ["-o", BINARY_NAME]
    cmd += [f"-l{lib}" for lib in payload.libraries]
    return cmd


def compile_cuda(
    payload: CuPayload, build_dir: Path, env: Mapping[str, str], *, arch: str | None
) -> CompileResult:
    """Compile in ``build_dir`` (which holds the sources and headers) with the compile timeout."""
    nvcc = find_nvcc(env)
    if nvcc is None:
        return CompileResult(
            nvcc_found=False,
            success=False,
            exit_code=127,
            stderr="nvcc was not found on PATH: this machine cannot compile CUDA sources "
            "(install the CUDA toolkit or use a runner image that has it)",
        )
    cmd = nvcc_command(nvcc, payload, arch)
    out = run_process(cmd, cwd=build_dir, env=env, timeout_s=COMPILE_TIMEOUT_S, popcorn=False)
    stderr = out.stderr
    if out.timed_out:
        stderr += f"\n[kitebench: compilation timed out after {COMPILE_TIMEOUT_S} s]"
    if out.start_error:
        stderr += out.start_error
    ok = out.exit_code == 0 and not out.timed_out and (build_dir / BINARY_NAME).is_file()
    return CompileResult(
        nvcc_found=True,
        nvcc_version=nvcc_version(nvcc, env),
        success=ok,
        command=out.command,
        stdout=out.stdout,
        stderr=stderr,
        exit_code=out.exit_code,
    )
