"""Shared test helpers.

Prerequisites that a developer's machine may lack (a Docker engine, the CPU vLLM venv) make their
tests SKIP locally, but FAIL in CI (``KITEBENCH_REQUIRE_PREREQS=1``, set by ``.ci/run``), so a
broken CI setup can never pass by skipping everything.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"


def prereqs_required() -> bool:
    return os.environ.get("KITEBENCH_REQUIRE_PREREQS") == "1"


def missing_prereq(reason: str) -> None:
    """Skip (developer machine) or fail (CI) a test whose prerequisite is absent."""
    if prereqs_required():
        pytest.fail(f"prerequisite missing in CI: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture
def runner_env(tmp_path: Path) -> dict[str, str]:
    """A clean environment for ``python -m runner`` subprocesses writing into tmp_path/out."""
    out = tmp_path / "out"
    out.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SUBMISSION_", "KITEBENCH_"))}
    env["KITEBENCH_OUTPUT_DIR"] = str(out)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


PYTHON = sys.executable

# `kitebench submit` records every attempt in the results store: the suite's go to a throwaway
# SQLite file, never into the user's own store.
os.environ.setdefault(
    "KITEBENCH_STORE", f"sqlite:///{tempfile.mkdtemp(prefix='kitebench-test-store-')}/store.db"
)
