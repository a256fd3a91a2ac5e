"""Results-store fixtures: the same tests on SQLite and on a real PostgreSQL server.

PostgreSQL comes from ``KITEBENCH_TEST_PG_URL`` (``.ci/setup.d/35-postgres.sh`` starts one);
without it the PostgreSQL variants skip locally and fail in CI. Each test gets a fresh schema
(PostgreSQL) or file (SQLite).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from launcher.campaign.store import Store
from tests.common import missing_prereq

PG_ENV = "KITEBENCH_TEST_PG_URL"


def _pg_url(schema: str) -> str:
    base = os.environ.get(PG_ENV)
    if not base:
        missing_prereq(f"no PostgreSQL server ({PG_ENV} is not set; .ci/setup.d/35-postgres.sh)")
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}options=-csearch_path%3D{schema}"


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL of an empty store: an SQLite file, or a fresh schema on the PostgreSQL server."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    schema = "kbt_" + uuid.uuid4().hex[:10]
    url = _pg_url(schema)
    import sqlalchemy as sa

    admin = sa.create_engine(os.environ[PG_ENV].replace("postgresql://", "postgresql+psycopg://", 1))
    with admin.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    try:
        yield url
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    with Store.open(store_url) as s:
        yield s


def attempt_row(run_id: str, **kw: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "run_id": run_id, "cell_key": uuid.uuid4().hex[:24], "task": "vectoradd_np",
        "task_hash": "t" * 64, "lang": "py", "submission": "sub.py",
        "submission_sha256": "a" * 64, "gpu": "H100", "backend": "local", "mode": "leaderboard",
        "variant": "default", "status": "success", "ascending": True, "metric": "time",
    }
    row.update(kw)
    return row
