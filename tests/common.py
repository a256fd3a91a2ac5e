"""Paths and the prerequisite rule shared by the tests (imported as ``tests.common``; fixtures
live in conftest.py, which pytest loads by itself).

Prerequisites that a developer's machine may lack (a Docker engine, the CPU vLLM venv) make their
tests SKIP locally, but FAIL in CI (``KITEBENCH_REQUIRE_PREREQS=1``, set by ``.ci/run``), so a
broken CI setup can never pass by skipping everything.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
PYTHON = sys.executable


def prereqs_required() -> bool:
    return os.environ.get("KITEBENCH_REQUIRE_PREREQS") == "1"


def missing_prereq(reason: str) -> None:
    """Skip (developer machine) or fail (CI) a test whose prerequisite is absent."""
    if prereqs_required():
        pytest.fail(f"prerequisite missing in CI: {reason}", pytrace=False)
    pytest.skip(reason)
