"""Durable state of the scheduler, in SQLite (WAL) or PostgreSQL: SQLAlchemy Core, no ORM.

:class:`Store` is the one entry; it is all the repositories (one module per aggregate) over
one engine (:mod:`.engine`), with the tables of :mod:`.schema` kept in step by the migrations
of :mod:`.migrate`.
"""

from qhpc_lab.scheduler.store.engine import BUSY_TIMEOUT_S, POOL_SIZE, SCHEMA_LOCK
from qhpc_lab.scheduler.store.facade import Store
from qhpc_lab.scheduler.store.repositories.accounting import AccountingQuery
from qhpc_lab.scheduler.store.repositories.base import SHARED_STATE
from qhpc_lab.scheduler.store.repositories.jobs import merge_calibration
from qhpc_lab.scheduler.store.rows import (
    DuplicateJob,
    JobChange,
    JobRow,
    NewJob,
    QuotaAdmission,
    ReservationOverlap,
    ReservationRow,
    SessionRow,
    SweepSetRow,
)
from qhpc_lab.scheduler.store.schema import (
    EXECUTION,
    MAX_JOB_ID,
    SESSION_DURATION,
    WAIT,
    facts,
    job_events,
    jobs,
    leases,
    metadata,
    quotas,
    reservations,
    seen_credentials,
    sessions,
    sweep_sets,
)

__all__ = [
    "BUSY_TIMEOUT_S",
    "EXECUTION",
    "MAX_JOB_ID",
    "POOL_SIZE",
    "SCHEMA_LOCK",
    "SESSION_DURATION",
    "SHARED_STATE",
    "WAIT",
    "AccountingQuery",
    "DuplicateJob",
    "JobChange",
    "JobRow",
    "NewJob",
    "QuotaAdmission",
    "ReservationOverlap",
    "ReservationRow",
    "SessionRow",
    "Store",
    "SweepSetRow",
    "facts",
    "job_events",
    "jobs",
    "leases",
    "merge_calibration",
    "metadata",
    "quotas",
    "reservations",
    "seen_credentials",
    "sessions",
    "sweep_sets",
]
