"""The results store's tables (SQLAlchemy Core). Alembic migrations create and evolve them
(``launcher/campaign/migrations``); a change here needs a new revision there."""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

#: Timestamps are ISO 8601 UTC strings ("2026-12-01T12:00:00.123456Z"): they sort as text and
#: read the same on SQLite (no time zones) and PostgreSQL.
runs = Table(
    "runs",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("kind", String(16), nullable=False),  # "matrix" or "submit"
    Column("backend", String(32), nullable=False),
    Column("status", String(16), nullable=False),  # running | success | failed | partial
    Column("cells", Integer, nullable=False, server_default="0"),
    Column("matrix_json", Text),
    Column("created_at", String(32), nullable=False),
    Column("finished_at", String(32)),
)

attempts = Table(
    "attempts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String(32), ForeignKey("runs.id"), nullable=False),
    Column("cell_key", String(32), nullable=False),
    Column("task", String(200), nullable=False),
    Column("task_hash", String(64), nullable=False),
    Column("lang", String(16)),
    Column("submission", String(1000), nullable=False),
    Column("submission_sha256", String(64), nullable=False),
    Column("gpu", String(64), nullable=False),
    Column("queue", String(100)),
    Column("backend", String(32), nullable=False),
    Column("mode", String(16), nullable=False),
    Column("variant", String(100), nullable=False),
    Column("status", String(16), nullable=False),
    Column("failure_stage", String(32)),
    Column("error", Text),
    Column("score", Float),
    Column("metric", String(100)),
    Column("ascending", Boolean),
    Column("exit_code", Integer),
    Column("build_number", Integer),
    Column("build_url", String(1000)),
    Column("agent", String(200)),
    Column("created_at", String(32), nullable=False),
    Column("started_at", String(32)),
    Column("finished_at", String(32)),
    Column("result_json", Text),
    Index("ix_attempts_run_cell", "run_id", "cell_key"),
    Index("ix_attempts_task_status", "task", "status"),
)
