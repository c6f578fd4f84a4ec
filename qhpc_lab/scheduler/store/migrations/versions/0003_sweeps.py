"""Sweeps: a job with many (shots, variables) sets, queued as one (docs/scheduler.md,
"Sweeps"). ``jobs.sets`` and ``jobs.sets_done`` (null for a plain job) and the sets' own
table; jobs already stored are plain jobs.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("sets", sa.Integer))
    op.add_column("jobs", sa.Column("sets_done", sa.Integer))
    op.create_table(
        "sweep_sets",
        sa.Column("job_id", sa.Integer, primary_key=True),
        sa.Column("idx", sa.Integer, primary_key=True),
        sa.Column("shots", sa.Integer, nullable=False),
        sa.Column("variables", sa.Text, nullable=False),
        sa.Column("shots_done", sa.Integer, nullable=False),
        sa.Column("counts", sa.Text),
    )


def downgrade() -> None:
    op.drop_table("sweep_sets")
    op.drop_column("jobs", "sets_done")  # SQLite ≥ 3.35 drops a column in place
    op.drop_column("jobs", "sets")
