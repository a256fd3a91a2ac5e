"""Fixtures of the real-vLLM tests (test_model_vllm.py), loaded as a pytest plugin by
tests/conftest.py: the CPU vLLM venv, the tiny model, the fork archives, the agent's stores,
one stock server's perplexity baseline, and ``run_job`` (``python -m runner`` as a job runs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from contract import codec
from launcher.model_task import build_model_payload
from runner.model import perplexity
from runner.model.install import base_env, installed_vllm_dir
from runner.model.server import Server, ServerSpec
from tests.common import EXAMPLES, REPO, missing_prereq

TASK = EXAMPLES / "vllm_tiny"
CACHE = Path(os.environ.get("KITEBENCH_CACHE", "/var/cache/kitebench"))


@pytest.fixture(scope="module")
def vllm_python() -> str:
    py = os.environ.get("KITEBENCH_VLLM_PYTHON")
    if not py or not Path(py).exists():
        missing_prereq(
            "KITEBENCH_VLLM_PYTHON (the CPU vLLM venv, .ci/setup.d/50-vllm.sh) is not set"
        )
    return str(py)


@pytest.fixture(scope="module")
def models_dir(vllm_python: str) -> Path:
    # models-v2: the tiny model now has written (peaked) weights; an older cached dir of the
    # dummy-weights model may still be in use under models/.
    models = CACHE / "models-v2"
    subprocess.run(
        [vllm_python, str(REPO / "runner/model/tinymodel.py"), str(models / "tiny-llama")],
        check=True,
        timeout=300,
        capture_output=True,
    )
    return models


def _made_by(python: str, script: Path, out: Path) -> Path:
    """``out``, filled by ``python script out`` (the fork archives)."""
    subprocess.run([python, str(script), str(out)], check=True, timeout=120, capture_output=True)
    return out


@pytest.fixture(scope="module")
def forks(vllm_python: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _made_by(vllm_python, TASK / "make_forks.py", tmp_path_factory.mktemp("forks"))


@pytest.fixture(scope="module")
def cheat_forks(vllm_python: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _made_by(vllm_python, REPO / "tests/cheat_forks.py", tmp_path_factory.mktemp("cheats"))


@pytest.fixture(scope="module")
def reference_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One reference store for the module: the first audited job computes stock's outputs."""
    return tmp_path_factory.mktemp("reference")


@pytest.fixture(scope="module")
def start_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The agent's start-up cache for the module: the first reference server publishes into it."""
    return tmp_path_factory.mktemp("start-cache")


@pytest.fixture(scope="module")
def installed(vllm_python: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return installed_vllm_dir(vllm_python, dict(os.environ), tmp_path_factory.mktemp("probe"))


def _tiny_fork() -> Path:
    import io
    import tarfile
    import tempfile

    path = Path(tempfile.mkdtemp()) / "f.tar.gz"
    with tarfile.open(path, "w:gz") as tf:
        ti = tarfile.TarInfo("f/vllm/x.py")
        tf.addfile(ti, io.BytesIO(b""))
    return path


@pytest.fixture(scope="module")
def stock_baseline(
    vllm_python: str, models_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> float:
    """Perplexity of the task's held-out text on STOCK vLLM (one server for the module)."""
    payload = build_model_payload(TASK, _tiny_fork())
    cfg = payload.model_cfg
    work = tmp_path_factory.mktemp("stock")
    env = base_env(dict(os.environ))
    env.update(cfg.server_env)
    spec = ServerSpec(
        python=vllm_python,
        model=str(models_dir / cfg.model_name),
        served_model_name=cfg.model_name,
        log=work / "server.log",
        cwd=work,
        env=env,
        extra_args=list(cfg.vllm_args),
    )
    with Server(spec) as srv:
        srv.start(timeout=cfg.server_startup_timeout)
        docs = perplexity.documents(cfg.perplexity_corpus or "", cfg.perplexity_chunk_chars)
        first = perplexity.measure(srv.base_url, cfg.model_name, docs)
        again = perplexity.measure(srv.base_url, cfg.model_name, docs)
    assert first.perplexity == again.perplexity  # deterministic: a fair baseline
    assert first.tokens > 100
    return first.perplexity


def run_job(
    payload, env: dict[str, str], out: Path, timeout: float = 900, on_started=None
) -> tuple[int, dict, float]:  # type: ignore[no-untyped-def]
    out.mkdir(parents=True, exist_ok=True)
    env = dict(env, SUBMISSION_PAYLOAD=codec.encode(payload), KITEBENCH_OUTPUT_DIR=str(out))
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "runner"],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    if on_started is not None:
        on_started(proc)
    stdout, _ = proc.communicate(timeout=timeout)
    took = time.monotonic() - t0
    result = json.loads((out / "result.json").read_text())
    print(stdout[-2000:])
    return proc.returncode, result, took


@pytest.fixture
def job_env(
    vllm_python: str, models_dir: Path, reference_dir: Path, start_cache_dir: Path, tmp_path: Path
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SUBMISSION_", "KITEBENCH_"))}
    env.update(
        KITEBENCH_VLLM_PYTHON=vllm_python,
        KITEBENCH_MODELS_DIR=str(models_dir),
        KITEBENCH_REFERENCE_DIR=str(reference_dir),
        KITEBENCH_START_CACHE_DIR=str(start_cache_dir),
        PYTHONPATH=str(REPO),
    )
    return env
