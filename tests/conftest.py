"""Fixtures shared by the tests (plain helpers and paths: ``tests.common``)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from tests.common import REPO

#: the real-vLLM tests' fixtures (module-scoped: set up only where a module uses them)
pytest_plugins = ["tests.vllm_fixtures"]


@pytest.fixture
def runner_env(tmp_path: Path) -> dict[str, str]:
    """A clean environment for ``python -m runner`` subprocesses writing into tmp_path/out."""
    out = tmp_path / "out"
    out.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SUBMISSION_", "KITEBENCH_"))}
    env["KITEBENCH_OUTPUT_DIR"] = str(out)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


# `kitebench submit` records every attempt in the results store: the suite's go to a throwaway
# SQLite file, never into the user's own store.
os.environ.setdefault(
    "KITEBENCH_STORE", f"sqlite:///{tempfile.mkdtemp(prefix='kitebench-test-store-')}/store.db"
)
