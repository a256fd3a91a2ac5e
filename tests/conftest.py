"""Fixtures shared by the tests (plain helpers and paths: ``tests.common``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.common import REPO


@pytest.fixture
def runner_env(tmp_path: Path) -> dict[str, str]:
    """A clean environment for ``python -m runner`` subprocesses writing into tmp_path/out."""
    out = tmp_path / "out"
    out.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SUBMISSION_", "KITEBENCH_"))}
    env["KITEBENCH_OUTPUT_DIR"] = str(out)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env
