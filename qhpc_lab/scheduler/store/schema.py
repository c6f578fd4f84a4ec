"""The tables, as this release reads and writes them (the migrations make the database match).

A change here needs a migration (``qhpc_lab/scheduler/store/migrations/versions``);
``tests/test_migrations.py`` fails while the two disagree.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

sessions = sa.Table(
    "sessions",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("user_id", sa.String(64), nullable=False, index=True),
    sa.Column("slurm_job_id", sa.String(64)),
    sa.Column("qpu_slots", sa.Integer, nullable=False, default=1),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("revoked_at", sa.Float),
    sa.Column("revoke_reason", sa.Text),
    sa.Column("idle_expires_at", sa.Float),
    sa.Column("expires_at", sa.Float),
    sa.Column("slurm_account", sa.String(64)),
)

jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("session_id", sa.String(36), index=True),
    sa.Column("user_id", sa.String(64), nullable=False, index=True),
    sa.Column("slurm_job_id", sa.String(64)),
    sa.Column("status", sa.String(16), nullable=False, index=True),
    sa.Column("job_class", sa.String(32), nullable=False),
    sa.Column("name", sa.String(256)),
    sa.Column("format", sa.String(32), nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("variables", sa.Text),
    sa.Column("shots", sa.Integer, nullable=False),
    sa.Column("shots_done", sa.Integer, nullable=False, default=0),
    sa.Column("max_calibration_age_s", sa.Float),
    sa.Column("counts", sa.Text),
    sa.Column("error", sa.Text),
    sa.Column("qpu_seconds", sa.Float, nullable=False, default=0.0),
    sa.Column("emulator_seconds", sa.Float, nullable=False, default=0.0),
    sa.Column("idempotency_key", sa.String(128)),
    sa.Column("calibration_age_s", sa.Float),
    sa.Column("calibrations", sa.Text),
    sa.Column("single_calibration", sa.Boolean),
    sa.Column("loop", sa.String(64)),
    sa.Column("think_time_s", sa.Float),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("started_at", sa.Float),
    sa.Column("finished_at", sa.Float),
    sa.Column("slurm_account", sa.String(64), index=True),
    sa.Column("sets", sa.Integer),
    sa.Column("sets_done", sa.Integer),
    sa.Index("jobs_idempotency", "user_id", "idempotency_key", unique=True),
)

sweep_sets = sa.Table(
    "sweep_sets",
    metadata,
    sa.Column("job_id", sa.Integer, primary_key=True),
    sa.Column("idx", sa.Integer, primary_key=True),
    sa.Column("shots", sa.Integer, nullable=False),
    sa.Column("variables", sa.Text, nullable=False),
    sa.Column("shots_done", sa.Integer, nullable=False),
    sa.Column("counts", sa.Text),
)
"""A sweep's sets (qhpc_lab.scheduler.sweeps), in order: each one's shots, variables, and
outcomes so far; its job (``jobs.sets`` not null) holds the totals."""

reservations = sa.Table(
    "reservations",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("owner_kind", sa.String(16), nullable=False),
    sa.Column("owner", sa.String(64), nullable=False),
    sa.Column("starts_at", sa.Float, nullable=False),
    sa.Column("ends_at", sa.Float, nullable=False, index=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("created_by", sa.String(64)),
)
"""The operator's QPU reservations (docs/policy.md rule 8); a canceled one is deleted."""

quotas = sa.Table(
    "quotas",
    metadata,
    sa.Column("kind", sa.String(16), primary_key=True),
    sa.Column("subject", sa.String(64), primary_key=True),
    sa.Column("unit", sa.String(16), primary_key=True),
    sa.Column("budget", sa.Float, nullable=False),
    sa.Column("period", sa.String(16), nullable=False),
)
"""The operator's budgets (qhpc_lab.scheduler.quotas); at most one per subject and unit."""

facts = sa.Table(
    "device_facts",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)

seen_credentials = sa.Table(
    "seen_credentials",
    metadata,
    sa.Column("digest", sa.String(64), primary_key=True),
    sa.Column("expires_at", sa.Float, nullable=False, index=True),
)
"""MUNGE credentials the scheduler accepted, kept until they expire (docs/scheduler.md)."""

leases = sa.Table(
    "leases",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("holder", sa.String(256)),
    sa.Column("epoch", sa.BigInteger, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
    sa.Column("renewed_at", sa.Float),
)
"""HA replicas' dispatch lease (qhpc_lab.scheduler.leadership); unused by a single daemon."""

job_events = sa.Table(
    "job_events",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("job_id", sa.Integer, nullable=False, index=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("shots_done", sa.Integer, nullable=False),
    sa.Column("at", sa.Float, nullable=False),
)
"""HA replicas' shared job-event journal (qhpc_lab.scheduler.journal); unused by a single daemon."""

WAIT = jobs.c.started_at - jobs.c.created_at
"""A job's wait: submission to first shot (every accounting view's one definition)."""
EXECUTION = jobs.c.finished_at - jobs.c.started_at
"""A job's execution time: first shot to its end."""
SESSION_DURATION = sessions.c.revoked_at - sessions.c.created_at

MAX_JOB_ID = 2**31 - 1
"""Largest id the ``jobs.id`` column holds on every backend (INTEGER is 32-bit on PostgreSQL)."""
