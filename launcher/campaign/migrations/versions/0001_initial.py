"""runs and attempts

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("backend", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("cells", sa.Integer, nullable=False, server_default="0"),
        sa.Column("matrix_json", sa.Text),
        sa.Column("created_at", sa.String(32), nullable=False),
        sa.Column("finished_at", sa.String(32)),
    )
    op.create_table(
        "attempts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.id"), nullable=False),
        sa.Column("cell_key", sa.String(32), nullable=False),
        sa.Column("task", sa.String(200), nullable=False),
        sa.Column("task_hash", sa.String(64), nullable=False),
        sa.Column("lang", sa.String(16)),
        sa.Column("submission", sa.String(1000), nullable=False),
        sa.Column("submission_sha256", sa.String(64), nullable=False),
        sa.Column("gpu", sa.String(64), nullable=False),
        sa.Column("queue", sa.String(100)),
        sa.Column("backend", sa.String(32), nullable=False),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("variant", sa.String(100), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("failure_stage", sa.String(32)),
        sa.Column("error", sa.Text),
        sa.Column("score", sa.Float),
        sa.Column("metric", sa.String(100)),
        sa.Column("ascending", sa.Boolean),
        sa.Column("exit_code", sa.Integer),
        sa.Column("build_number", sa.Integer),
        sa.Column("build_url", sa.String(1000)),
        sa.Column("agent", sa.String(200)),
        sa.Column("created_at", sa.String(32), nullable=False),
        sa.Column("started_at", sa.String(32)),
        sa.Column("finished_at", sa.String(32)),
        sa.Column("result_json", sa.Text),
    )
    op.create_index("ix_attempts_run_cell", "attempts", ["run_id", "cell_key"])
    op.create_index("ix_attempts_task_status", "attempts", ["task", "status"])


def downgrade() -> None:
    op.drop_index("ix_attempts_task_status", "attempts")
    op.drop_index("ix_attempts_run_cell", "attempts")
    op.drop_table("attempts")
    op.drop_table("runs")
