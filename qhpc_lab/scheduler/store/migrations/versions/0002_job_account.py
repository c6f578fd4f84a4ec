"""The Slurm account a job is charged to, on the job: its session's, or for a job without a
session its user's latest session's (docs/policy.md, "Quotas"). Jobs already stored get their
session's.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("slurm_account", sa.String(64)))
    op.create_index("ix_jobs_slurm_account", "jobs", ["slurm_account"])
    jobs = sa.table("jobs", sa.column("session_id"), sa.column("slurm_account"))
    sessions = sa.table("sessions", sa.column("id"), sa.column("slurm_account"))
    op.execute(
        jobs.update().values(
            slurm_account=sa.select(sessions.c.slurm_account)
            .where(sessions.c.id == jobs.c.session_id)
            .scalar_subquery()
        )
    )


def downgrade() -> None:
    op.drop_index("ix_jobs_slurm_account", "jobs")
    op.drop_column("jobs", "slurm_account")  # SQLite ≥ 3.35 drops a column in place
