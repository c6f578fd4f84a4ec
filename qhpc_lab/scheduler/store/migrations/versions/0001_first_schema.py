"""The schema of the releases before migrations, adopting a database one of them made.

On a new database: every table. On a database a release before migrations made (tables, no
``alembic_version``): the tables it lacks, and the columns of ``jobs`` and ``sessions`` those
releases added since the first (what their start-up added; the ``…_seconds`` column with
``DEFAULT 0`` so that its rows get a value). Columns they stopped using (``jobs.results``,
``jobs.num_qubits``) stay, unread.

Revision ID: 0001
Revises:
Create Date: 2026-12-07
"""

from collections.abc import Callable

import sqlalchemy as sa
from alembic import context, op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _sessions() -> list[sa.Column]:
    return [
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.Column("slurm_job_id", sa.String(64)),
        sa.Column("qpu_slots", sa.Integer, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("revoked_at", sa.Float),
        sa.Column("revoke_reason", sa.Text),
        sa.Column("idle_expires_at", sa.Float),
        sa.Column("expires_at", sa.Float),
        sa.Column("slurm_account", sa.String(64)),
    ]


def _jobs() -> list[sa.Column]:
    return [
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("session_id", sa.String(36)),
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.Column("slurm_job_id", sa.String(64)),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("job_class", sa.String(32), nullable=False),
        sa.Column("name", sa.String(256)),
        sa.Column("format", sa.String(32), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("variables", sa.Text),
        sa.Column("shots", sa.Integer, nullable=False),
        sa.Column("shots_done", sa.Integer, nullable=False),
        sa.Column("max_calibration_age_s", sa.Float),
        sa.Column("counts", sa.Text),
        sa.Column("error", sa.Text),
        sa.Column("qpu_seconds", sa.Float, nullable=False),
        sa.Column("emulator_seconds", sa.Float, nullable=False),
        sa.Column("idempotency_key", sa.String(128)),
        sa.Column("calibration_age_s", sa.Float),
        sa.Column("calibrations", sa.Text),
        sa.Column("single_calibration", sa.Boolean),
        sa.Column("loop", sa.String(64)),
        sa.Column("think_time_s", sa.Float),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("started_at", sa.Float),
        sa.Column("finished_at", sa.Float),
    ]


def _reservations() -> list[sa.Column]:
    return [
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("owner_kind", sa.String(16), nullable=False),
        sa.Column("owner", sa.String(64), nullable=False),
        sa.Column("starts_at", sa.Float, nullable=False),
        sa.Column("ends_at", sa.Float, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("created_by", sa.String(64)),
    ]


def _quotas() -> list[sa.Column]:
    return [
        sa.Column("kind", sa.String(16), primary_key=True),
        sa.Column("subject", sa.String(64), primary_key=True),
        sa.Column("unit", sa.String(16), primary_key=True),
        sa.Column("budget", sa.Float, nullable=False),
        sa.Column("period", sa.String(16), nullable=False),
    ]


def _device_facts() -> list[sa.Column]:
    return [
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    ]


def _seen_credentials() -> list[sa.Column]:
    return [
        sa.Column("digest", sa.String(64), primary_key=True),
        sa.Column("expires_at", sa.Float, nullable=False),
    ]


def _leases() -> list[sa.Column]:
    return [
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("holder", sa.String(256)),
        sa.Column("epoch", sa.BigInteger, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
        sa.Column("renewed_at", sa.Float),
    ]


def _job_events() -> list[sa.Column]:
    return [
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("job_id", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("shots_done", sa.Integer, nullable=False),
        sa.Column("at", sa.Float, nullable=False),
    ]


TABLES: dict[str, Callable[[], list[sa.Column]]] = {
    "sessions": _sessions,
    "jobs": _jobs,
    "reservations": _reservations,
    "quotas": _quotas,
    "device_facts": _device_facts,
    "seen_credentials": _seen_credentials,
    "leases": _leases,
    "job_events": _job_events,
}
"""Each table's columns (fresh objects per call: a column belongs to one table)."""

INDEXES: dict[str, list[tuple[str, list[str], bool]]] = {
    "sessions": [("ix_sessions_user_id", ["user_id"], False)],
    "jobs": [
        ("ix_jobs_session_id", ["session_id"], False),
        ("ix_jobs_user_id", ["user_id"], False),
        ("ix_jobs_status", ["status"], False),
        ("jobs_idempotency", ["user_id", "idempotency_key"], True),
    ],
    "reservations": [("ix_reservations_ends_at", ["ends_at"], False)],
    "seen_credentials": [("ix_seen_credentials_expires_at", ["expires_at"], False)],
    "job_events": [("ix_job_events_job_id", ["job_id"], False)],
}
"""Each table's indexes: name, columns, unique."""

ADDED_SINCE_FIRST_RELEASE = {
    "sessions": {"idle_expires_at", "expires_at", "slurm_account"},
    "jobs": {
        "emulator_seconds",
        "idempotency_key",
        "calibrations",
        "single_calibration",
        "loop",
        "think_time_s",
    },
}
"""The columns an older release's table may lack (each nullable, or ``emulator_seconds``)."""


def upgrade() -> None:
    present = _present_columns()
    for table, columns in TABLES.items():
        if table not in present:
            op.create_table(table, *columns())
            for name, indexed, unique in INDEXES.get(table, []):
                op.create_index(name, table, indexed, unique=unique)
            continue
        missing = [c for c in columns() if c.name not in present[table]]
        unknown = {c.name for c in missing} - ADDED_SINCE_FIRST_RELEASE.get(table, set())
        if unknown:
            raise RuntimeError(
                f"table {table} lacks {', '.join(sorted(unknown))}, which every release of "
                "qhpc-lab had: this database was not made by qhpc-lab"
            )
        for column in missing:
            if not column.nullable:  # emulator_seconds: the rows there get 0
                column = sa.Column(column.name, column.type, nullable=False, server_default="0")
            op.add_column(table, column)
        if "idempotency_key" in {c.name for c in missing}:
            op.create_index("jobs_idempotency", "jobs", ["user_id", "idempotency_key"], unique=True)


def downgrade() -> None:
    for table in reversed(TABLES):
        op.drop_table(table)


def _present_columns() -> dict[str, set[str]]:
    """The database's tables and their columns; none when only SQL is printed (``--sql``:
    for a new database)."""
    if context.is_offline_mode():
        return {}
    inspector = sa.inspect(op.get_bind())
    return {t: {c["name"] for c in inspector.get_columns(t)} for t in inspector.get_table_names()}
