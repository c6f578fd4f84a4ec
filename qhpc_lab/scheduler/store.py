"""Durable state of the scheduler: sessions, jobs and device facts, in SQLite (WAL) or PostgreSQL.

SQLAlchemy Core, no ORM: every method is one short transaction, called from a worker thread
(the scheduler keeps them off its event loop). A job row is the unit of exactly-once: chunk
results are merged into it in the same transaction that advances ``shots_done``, so a crash
loses at most the chunk in flight, which is then re-run from its start.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.pool import StaticPool

from qhpc_lab.qpu import Calibration
from qhpc_lab.scheduler import quotas as quota_rules
from qhpc_lab.scheduler.quotas import Quota, QuotaExceeded
from qhpc_lab.vocabulary import ACTIVE_STATUSES

POOL_SIZE = 4
BUSY_TIMEOUT_S = 5.0
"""How long a SQLite write waits for the database lock before it fails (and is retried)."""
"""Connections, and the scheduler's store threads: reads go on while one write waits on a lock."""

SCHEMA_LOCK = 0x71687064
"""The PostgreSQL advisory lock key of :meth:`Store.schema_lock`."""

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
    sa.Index("jobs_idempotency", "user_id", "idempotency_key", unique=True),
)

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

WAIT = jobs.c.started_at - jobs.c.created_at
"""A job's wait: submission to first shot (every accounting view's one definition)."""
EXECUTION = jobs.c.finished_at - jobs.c.started_at
"""A job's execution time: first shot to its end."""
SESSION_DURATION = sessions.c.revoked_at - sessions.c.created_at

MAX_JOB_ID = 2**31 - 1
"""Largest id the ``jobs.id`` column holds on every backend (INTEGER is 32-bit on PostgreSQL)."""


@dataclass
class JobRow:
    """A job as stored; the API and the dispatcher both read this."""

    id: int
    session_id: str | None
    user_id: str
    slurm_job_id: str | None
    status: str
    job_class: str
    name: str | None
    format: str
    body: str
    variables: dict[str, Any]
    shots: int
    shots_done: int
    max_calibration_age_s: float | None
    counts: dict[str, int]
    """The shots' outcomes so far, merged chunk by chunk: the job's one copy of its result."""
    error: str | None
    qpu_seconds: float
    emulator_seconds: float
    idempotency_key: str | None
    calibration_age_s: float | None
    calibrations: list[dict[str, Any]]
    """The calibrations its shots ran under, one per range of shots (:func:`merge_calibration`)."""
    single_calibration: bool
    """All its shots must come from one calibration (docs/policy.md)."""
    loop: str | None
    """The hybrid loop (iterative session) it belongs to (docs/policy.md rule 9)."""
    think_time_s: float | None
    created_at: float
    started_at: float | None
    finished_at: float | None

    @property
    def results(self) -> str | None:
        """Warden's ``results`` (JSON text ``{"counter": ...}``), once the job is DONE."""
        return json.dumps({"counter": self.counts}) if self.status == "DONE" else None

    @classmethod
    def from_row(cls, row: Any) -> JobRow:
        data = dict(row._mapping)
        data["variables"] = json.loads(data["variables"]) if data["variables"] else {}
        data["counts"] = json.loads(data["counts"]) if data["counts"] else {}
        data["calibrations"] = json.loads(data["calibrations"]) if data["calibrations"] else []
        data["single_calibration"] = bool(data["single_calibration"])
        return cls(**data)


@dataclass(frozen=True)
class AccountingQuery:
    """What Warden's ``/accounting`` routes select: sessions or jobs that ended in
    [ended_after, ended_before) (Unix times; open-ended when None), narrowed by ids, one page."""

    ended_after: float | None = None
    ended_before: float | None = None
    user_ids: tuple[str, ...] = ()
    session_ids: tuple[str, ...] = ()
    slurm_job_ids: tuple[str, ...] = ()
    statuses: tuple[str, ...] = ()
    job_ids: tuple[int, ...] = ()
    offset: int = 0
    limit: int = 100

    def sessions(self) -> list[sa.ColumnElement[bool]]:
        """Ended sessions in the window (a session still open is not accounted yet)."""
        c = sessions.c
        return self._where(
            c.revoked_at,
            (c.user_id, self.user_ids),
            (c.id, self.session_ids),
            (c.slurm_job_id, self.slurm_job_ids),
        )

    def jobs(self) -> list[sa.ColumnElement[bool]]:
        """Ended jobs in the window (a job still active is not accounted yet)."""
        c = jobs.c
        return self._where(
            c.finished_at,
            (c.user_id, self.user_ids),
            (c.session_id, self.session_ids),
            (c.slurm_job_id, self.slurm_job_ids),
            (c.status, self.statuses),
            (c.id, self.job_ids),
        )

    def _where(
        self, ended: sa.ColumnElement[Any], *narrowed: tuple[sa.ColumnElement[Any], tuple[Any, ...]]
    ) -> list[sa.ColumnElement[bool]]:
        """Ended (``ended`` set) within the window, and in each given id list."""
        where = [ended.is_not(None)]
        where += [] if self.ended_after is None else [ended >= self.ended_after]
        where += [] if self.ended_before is None else [ended < self.ended_before]
        return where + [column.in_(values) for column, values in narrowed if values]


def merge_calibration(
    ranges: list[dict[str, Any]],
    shots_from: int,
    shots: int,
    calibration: Calibration,
    age_s_first: float,
    age_s_last: float,
) -> list[dict[str, Any]]:
    """``ranges`` with a chunk of ``shots`` shots, the job's ``shots_from``-th (1-based) on,
    run under ``calibration`` from age ``age_s_first`` to ``age_s_last``: the last range grows
    when the chunk follows it under the same calibration, else a range is added."""
    last = ranges[-1] if ranges else None
    if last is not None and last["id"] == calibration.id and last["shots_to"] == shots_from - 1:
        grown = {**last, "shots_to": shots_from + shots - 1, "age_s_last": age_s_last}
        return [*ranges[:-1], grown]
    entry = {
        "id": calibration.id,
        "calibrated_at": calibration.calibrated_at,
        "shots_from": shots_from,
        "shots_to": shots_from + shots - 1,
        "age_s_first": age_s_first,
        "age_s_last": age_s_last,
        "drift": asdict(calibration.drift),
    }
    return [*ranges, entry]


@dataclass(frozen=True)
class JobChange:
    """A job as one write left it: what the HA event journal records."""

    id: int
    status: str
    shots_done: int


@dataclass
class SessionRow:
    id: str
    user_id: str
    slurm_job_id: str | None
    qpu_slots: int
    created_at: float
    revoked_at: float | None
    revoke_reason: str | None
    idle_expires_at: float | None = None
    """Warden's idle deadline: revoked after it unless a job of the session is still active."""
    expires_at: float | None = None
    """Warden's maximum-lifetime deadline: revoked after it, its queued jobs canceled."""
    slurm_account: str | None = None
    """The Slurm job's account, when the prolog says it: who a reservation can be for and
    what account quotas budget."""

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    # WAL + NORMAL survives a process crash (the scheduler killed); only power loss may drop
    # the last transactions. Sites that need more set QHPC_DB to PostgreSQL.
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
    cursor.close()


class _NoLock:
    """PostgreSQL takes concurrent writers itself."""

    def acquire(self, timeout: float = -1) -> bool:
        return True

    def release(self) -> None:
        pass


@dataclass(frozen=True)
class ReservationRow:
    id: int
    owner_kind: str
    owner: str
    starts_at: float
    ends_at: float
    created_at: float
    created_by: str | None


class ReservationOverlap(Exception):
    """A reservation whose window overlaps ``existing`` (the QPU is reserved whole)."""

    def __init__(self, existing: ReservationRow) -> None:
        super().__init__(f"overlaps reservation {existing.id}")
        self.existing = existing


class DuplicateJob(Exception):
    """A submission whose idempotency key the user already used: ``job`` is the first one."""

    def __init__(self, job: JobRow) -> None:
        super().__init__(f"job {job.id} has this idempotency key")
        self.job = job


class Store:
    pool_size = POOL_SIZE

    def __init__(self, url: str, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        """What a write stamps when its caller passes no ``now``: the scheduler's clock."""
        if url in ("sqlite://", "sqlite:///:memory:"):  # one shared in-memory database
            self.engine = sa.create_engine(
                url, poolclass=StaticPool, connect_args={"check_same_thread": False}
            )
            self.pool_size = 1
        elif url.startswith("sqlite"):
            self.engine = sa.create_engine(
                url,
                pool_size=POOL_SIZE,
                max_overflow=0,
                connect_args={"check_same_thread": False},
            )
        else:
            self.engine = sa.create_engine(
                url, pool_size=POOL_SIZE, max_overflow=2, pool_pre_ping=True
            )
        self.fence: Callable[[sa.Connection], None] | None = None
        """HA replicas (:mod:`qhpc_lab.scheduler.leadership`): raises inside a dispatching
        write (a chunk's start or commit) unless this replica still holds the dispatch lease."""
        self.journal: Callable[[sa.Connection, list[JobChange]], None] | None = None
        """HA replicas (:mod:`qhpc_lab.scheduler.journal`): records job changes for every
        replica's event stream, in the transaction that makes them."""
        self._writer_lock: threading.Lock | _NoLock = _NoLock()
        if url.startswith("sqlite"):
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
            self._writer_lock = threading.Lock()
        with self.schema_lock():
            metadata.create_all(self.engine)
            self._add_missing_columns()

    @contextlib.contextmanager
    def schema_lock(self) -> Iterator[None]:
        """Held while tables are created or altered: on PostgreSQL a session advisory lock, so
        that replicas starting together on a new database do not race to create them."""
        if self.engine.dialect.name != "postgresql":
            yield
            return
        with self.engine.connect() as conn:
            conn.execute(sa.select(sa.func.pg_advisory_lock(SCHEMA_LOCK)))
            try:
                yield
            finally:
                conn.execute(sa.select(sa.func.pg_advisory_unlock(SCHEMA_LOCK)))
                conn.commit()

    @contextlib.contextmanager
    def _write(self) -> Iterator[sa.Connection]:
        """A write transaction. SQLite lets one writer in at a time: writers of this process
        queue on a lock here, not in SQLite's busy handler, which sleeps in steps of up to
        100 ms and made concurrent submissions slow (docs/benchmarks.md). A writer from
        another process is still waited for by the busy timeout."""
        if not self._writer_lock.acquire(timeout=BUSY_TIMEOUT_S):
            raise sa.exc.OperationalError(
                "BEGIN", None, Exception("database is locked (by another write of this daemon)")
            )
        try:
            with self.engine.begin() as conn:
                yield conn
        finally:
            self._writer_lock.release()

    def _dispatching(self, conn: sa.Connection) -> None:
        """The fence of a dispatching write: a replica that lost the lease writes nothing."""
        if self.fence is not None:
            self.fence(conn)

    def _changed(self, conn: sa.Connection, *rows: Any) -> None:
        """Journal the jobs ``rows`` (rows of ``jobs`` as written) when replicas share events."""
        if self.journal is not None and rows:
            self.journal(conn, [JobChange(r.id, r.status, r.shots_done) for r in rows])

    def _add_missing_columns(self) -> None:
        """Bring a database made by an older release up to this table shape (new columns
        only: every column added since the first release is nullable or has a default). A
        column this release no longer has (``results``, now derived from ``counts``) stays in
        an older database, unread and unwritten."""
        with self._write() as conn:
            present: dict[str, set[str]] = {}
            for table in (jobs, sessions):
                present[table.name] = {c["name"] for c in sa.inspect(conn).get_columns(table.name)}
                for column in table.columns:
                    if column.name in present[table.name]:
                        continue
                    kind = column.type.compile(dialect=conn.dialect)
                    default = " NOT NULL DEFAULT 0" if column.name.endswith("_seconds") else ""
                    conn.execute(
                        sa.text(
                            f"ALTER TABLE {table.name} ADD COLUMN {column.name} {kind}{default}"
                        )
                    )
            if "idempotency_key" not in present["jobs"]:
                sa.Index(
                    "jobs_idempotency", jobs.c.user_id, jobs.c.idempotency_key, unique=True
                ).create(conn, checkfirst=True)

    def close(self) -> None:
        self.engine.dispose()

    # -- sessions -------------------------------------------------------------------------

    def create_session(
        self,
        user_id: str,
        slurm_job_id: str | None,
        qpu_slots: int,
        now: float | None = None,
        idle_expires_at: float | None = None,
        expires_at: float | None = None,
        slurm_account: str | None = None,
    ) -> SessionRow:
        """Open a session, or return the active one for the same user and Slurm job (retries)."""
        with self._write() as conn:
            if slurm_job_id is not None:
                row = conn.execute(
                    sa.select(sessions).where(
                        sessions.c.user_id == user_id,
                        sessions.c.slurm_job_id == slurm_job_id,
                        sessions.c.revoked_at.is_(None),
                    )
                ).first()
                if row is not None:
                    return SessionRow(**row._mapping)
            values = dict(
                id=str(uuid.uuid4()),
                user_id=user_id,
                slurm_job_id=slurm_job_id,
                qpu_slots=qpu_slots,
                created_at=self.clock() if now is None else now,
                revoked_at=None,
                revoke_reason=None,
                idle_expires_at=idle_expires_at,
                expires_at=expires_at,
                slurm_account=slurm_account,
            )
            conn.execute(sessions.insert().values(**values))
            return SessionRow(**values)

    def get_session(self, session_id: str) -> SessionRow | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(sessions).where(sessions.c.id == session_id)).first()
        return SessionRow(**row._mapping) if row else None

    def list_sessions(
        self,
        active: bool | None = None,
        user_id: str | None = None,
        slurm_job_id: str | None = None,
    ) -> list[SessionRow]:
        """Oldest first; Warden's filters (``scheduler_job_id`` is ``slurm_job_id``)."""
        query = sa.select(sessions).order_by(sessions.c.created_at)
        if user_id is not None:
            query = query.where(sessions.c.user_id == user_id)
        if slurm_job_id is not None:
            query = query.where(sessions.c.slurm_job_id == slurm_job_id)
        if active is not None:
            query = query.where(
                sessions.c.revoked_at.is_(None) if active else sessions.c.revoked_at.is_not(None)
            )
        with self.engine.connect() as conn:
            return [SessionRow(**r._mapping) for r in conn.execute(query)]

    def extend_idle_deadline(self, session_id: str, idle_expires_at: float) -> None:
        """Push an open session's idle deadline out (a job was submitted in it)."""
        with self._write() as conn:
            conn.execute(
                sessions.update()
                .where(sessions.c.id == session_id, sessions.c.revoked_at.is_(None))
                .values(idle_expires_at=idle_expires_at)
            )

    def revoke_session(
        self, session_id: str, reason: str, now: float | None = None
    ) -> tuple[SessionRow, list[int]]:
        """Close a session and cancel its queued jobs; returns the session and those job ids."""
        now = self.clock() if now is None else now
        with self._write() as conn:
            conn.execute(
                sessions.update()
                .where(sessions.c.id == session_id, sessions.c.revoked_at.is_(None))
                .values(revoked_at=now, revoke_reason=reason)
            )
            pending = [
                r.id
                for r in conn.execute(
                    sa.select(jobs.c.id).where(
                        jobs.c.session_id == session_id, jobs.c.status == "PENDING"
                    )
                )
            ]
            if pending:
                canceled = conn.execute(
                    jobs.update()
                    .where(jobs.c.id.in_(pending))
                    .values(status="CANCELED", error=f"canceled: {reason}", finished_at=now)
                    .returning(jobs.c.id, jobs.c.status, jobs.c.shots_done)
                ).all()
                self._changed(conn, *canceled)
            row = conn.execute(sa.select(sessions).where(sessions.c.id == session_id)).one()
        return SessionRow(**row._mapping), pending

    # -- reservations ---------------------------------------------------------------------

    def add_reservation(
        self,
        owner_kind: str,
        owner: str,
        starts_at: float,
        ends_at: float,
        created_by: str | None = None,
    ) -> ReservationRow:
        """Reserve ``[starts_at, ends_at)``; :class:`ReservationOverlap` when another
        reservation holds part of it (checked in the same transaction)."""
        with self._write() as conn:
            if conn.dialect.name == "postgresql":  # two overlapping inserts: one waits, then fails
                conn.execute(sa.text("LOCK TABLE reservations IN SHARE ROW EXCLUSIVE MODE"))
            clash = conn.execute(
                sa.select(reservations)
                .where(reservations.c.starts_at < ends_at, reservations.c.ends_at > starts_at)
                .order_by(reservations.c.starts_at)
            ).first()
            if clash is not None:
                raise ReservationOverlap(ReservationRow(**clash._mapping))
            values = dict(
                owner_kind=owner_kind,
                owner=owner,
                starts_at=starts_at,
                ends_at=ends_at,
                created_at=self.clock(),
                created_by=created_by,
            )
            row = conn.execute(reservations.insert().returning(*reservations.c), values).one()
        return ReservationRow(**row._mapping)

    def list_reservations(self, ending_after: float | None = None) -> list[ReservationRow]:
        """Reservations by start; with ``ending_after``, only those not ended by then."""
        query = sa.select(reservations).order_by(reservations.c.starts_at)
        if ending_after is not None:
            query = query.where(reservations.c.ends_at > ending_after)
        with self.engine.connect() as conn:
            return [ReservationRow(**r._mapping) for r in conn.execute(query)]

    def cancel_reservation(self, reservation_id: int) -> ReservationRow | None:
        """Delete a reservation; it, or None when there was none with this id."""
        with self._write() as conn:
            row = conn.execute(
                reservations.delete()
                .where(reservations.c.id == reservation_id)
                .returning(*reservations.c)
            ).first()
        return ReservationRow(**row._mapping) if row else None

    # -- jobs -----------------------------------------------------------------------------

    def add_job(self, admission: QuotaAdmission | None = None, **values: Any) -> JobRow:
        """Queue a job. One that reuses its user's ``idempotency_key`` raises
        :class:`DuplicateJob` with the first job (a retried submission runs once). With
        ``admission``, the quotas of its user and account are checked in the same transaction
        (QuotaExceeded when one refuses it)."""
        values = dict(values)
        values.setdefault("created_at", self.clock())
        values.setdefault("single_calibration", False)
        values.update(status="PENDING", shots_done=0, qpu_seconds=0.0, emulator_seconds=0.0)
        values["variables"] = json.dumps(values.get("variables") or {})
        try:
            with self._write() as conn:
                if admission is not None:
                    self._admit(conn, admission, values["user_id"], values["shots"], values)
                row = conn.execute(jobs.insert().returning(*jobs.c), values).one()
                self._changed(conn, row)
        except sa.exc.IntegrityError:
            key = values.get("idempotency_key")
            first = None if key is None else self.find_job_by_key(values["user_id"], key)
            if first is None:
                raise
            raise DuplicateJob(first) from None
        return JobRow.from_row(row)

    def _admit(
        self,
        conn: sa.Connection,
        admission: QuotaAdmission,
        user_id: str,
        shots: int,
        values: dict[str, Any],
    ) -> None:
        """Refuse the job (QuotaExceeded) when it does not fit a quota of its user or account.
        The quotas' rows are locked first (PostgreSQL: FOR UPDATE; SQLite has one writer), so
        concurrent submissions under one quota are checked one after the other."""
        key = values.get("idempotency_key")
        if key is not None and self._find_job_by_key(conn, user_id, key) is not None:
            return  # a retry: the insert's unique key answers it with the first job
        subjects = [("user", user_id)]
        if admission.account is not None:
            subjects.append(("account", admission.account))
        applies = [sa.and_(quotas.c.kind == k, quotas.c.subject == v) for k, v in subjects]
        query = (
            sa.select(quotas)
            .where(sa.or_(*applies))
            .order_by(quotas.c.kind, quotas.c.unit)
            .with_for_update()
        )
        now = values["created_at"]
        for row in conn.execute(query).all():
            quota = Quota(**row._mapping)
            used = _used(conn, quota, now, admission.time_per_shot_s)
            requested = quota_rules.cost(quota.unit, shots, admission.time_per_shot_s)
            refused = quota_rules.refusal(quota, used, requested, now)
            if refused is not None:
                raise QuotaExceeded(refused)

    def find_job_by_key(self, user_id: str, idempotency_key: str) -> JobRow | None:
        with self.engine.connect() as conn:
            return self._find_job_by_key(conn, user_id, idempotency_key)

    @staticmethod
    def _find_job_by_key(conn: sa.Connection, user_id: str, key: str) -> JobRow | None:
        row = conn.execute(
            sa.select(jobs).where(jobs.c.user_id == user_id, jobs.c.idempotency_key == key)
        ).first()
        return JobRow.from_row(row) if row else None

    def get_job(self, job_id: int) -> JobRow | None:
        if not 0 < job_id <= MAX_JOB_ID:  # ids come from URLs: one past the column type is no job
            return None
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(jobs).where(jobs.c.id == job_id)).first()
        return JobRow.from_row(row) if row else None

    def list_jobs(
        self,
        user_id: str | None = None,
        status: str | None = None,
        limit: int | None = None,
        before_id: int | None = None,
    ) -> list[JobRow]:
        """Newest first; all of them unless ``limit``; ``before_id`` continues a page."""
        query = sa.select(jobs).order_by(jobs.c.id.desc()).limit(limit)
        if before_id is not None:
            query = query.where(jobs.c.id < before_id)
        if user_id is not None:
            query = query.where(jobs.c.user_id == user_id)
        if status is not None:
            query = query.where(jobs.c.status == status)
        with self.engine.connect() as conn:
            return [JobRow.from_row(r) for r in conn.execute(query)]

    def active_jobs(self) -> list[JobRow]:
        query = sa.select(jobs).where(jobs.c.status.in_(ACTIVE_STATUSES)).order_by(jobs.c.id)
        with self.engine.connect() as conn:
            return [JobRow.from_row(r) for r in conn.execute(query)]

    def mark_running(self, job_id: int, started_at: float) -> JobRow | None:
        """PENDING → RUNNING, keeping the first start of a job requeued after a crash."""
        with self._write() as conn:
            self._dispatching(conn)
            row = conn.execute(
                jobs.update()
                .where(jobs.c.id == job_id, jobs.c.status == "PENDING")
                .values(
                    status="RUNNING", started_at=sa.func.coalesce(jobs.c.started_at, started_at)
                )
                .returning(*jobs.c)
            ).first()
            if row is not None:
                self._changed(conn, row)
        return JobRow.from_row(row) if row else None

    def record_chunk(
        self,
        job_id: int,
        counts: dict[str, int],
        shots: int,
        qpu_seconds: float,
        calibration_age_s: float,
        shots_done_before: int | None = None,
        emulator_seconds: float = 0.0,
        now: float | None = None,
        calibration: Calibration | None = None,
        settles: str | None = None,
    ) -> JobRow | None:
        """Merge one chunk's counts (and ``calibration``, its provenance) into the job; the job
        becomes DONE with its last chunk. ``settles``: a fact deleted in the same transaction
        (the QPU job the chunk was in flight as: recorded and settled exactly once).

        A job canceled while its chunk ran keeps its final state and the chunk is dropped.
        ``shots_done_before`` makes a retry exact: when a first attempt committed but its
        answer was lost (the database went away), the retry finds the chunk already merged and
        returns the job as it is instead of merging it twice.
        """
        with self._write() as conn:
            self._dispatching(conn)
            if settles is not None:
                conn.execute(facts.delete().where(facts.c.key == settles))
            row = conn.execute(sa.select(jobs).where(jobs.c.id == job_id)).first()
            if row is None:
                return None
            job = JobRow.from_row(row)
            if shots_done_before is not None and job.shots_done == shots_done_before + shots:
                return job  # merged by an attempt whose commit we did not hear back from
            if job.status != "RUNNING":
                return None
            merged = dict(job.counts)
            for bits, n in counts.items():
                merged[bits] = merged.get(bits, 0) + n
            done = job.shots_done + shots
            values: dict[str, Any] = dict(
                counts=json.dumps(merged),
                shots_done=done,
                qpu_seconds=job.qpu_seconds + qpu_seconds,
                emulator_seconds=job.emulator_seconds + emulator_seconds,
                calibration_age_s=max(job.calibration_age_s or 0.0, calibration_age_s),
            )
            if calibration is not None:  # its shots ran back to back from calibration_age_s
                ranges = merge_calibration(
                    job.calibrations,
                    job.shots_done + 1,
                    shots,
                    calibration,
                    calibration_age_s,
                    calibration_age_s + qpu_seconds,
                )
                values["calibrations"] = json.dumps(ranges)
            if done >= job.shots:
                values.update(status="DONE", finished_at=self.clock() if now is None else now)
            # Guarded by the state read above: a cancel committed in between (another process
            # on PostgreSQL) wins and the chunk is dropped, as documented.
            row = conn.execute(
                jobs.update()
                .where(
                    jobs.c.id == job_id,
                    jobs.c.status == "RUNNING",
                    jobs.c.shots_done == job.shots_done,
                )
                .values(**values)
                .returning(*jobs.c)
            ).first()
            if row is not None:
                self._changed(conn, row)
        return JobRow.from_row(row) if row else None

    def restart_shots(self, job_id: int, shots_done_before: int) -> JobRow | None:
        """Discard an active job's shots (its counts and their calibrations) so it runs again
        from its first shot; its device time stays charged. None when the job is final or no
        longer at ``shots_done_before`` (a retry of a restart that committed)."""
        with self._write() as conn:
            self._dispatching(conn)
            row = conn.execute(
                jobs.update()
                .where(
                    jobs.c.id == job_id,
                    jobs.c.status.in_(ACTIVE_STATUSES),
                    jobs.c.shots_done == shots_done_before,
                )
                .values(shots_done=0, counts=None, calibrations=None, calibration_age_s=None)
                .returning(*jobs.c)
            ).first()
            if row is not None:
                self._changed(conn, row)
        return JobRow.from_row(row) if row else None

    def finish(
        self, job_id: int, status: str, error: str | None = None, now: float | None = None
    ) -> JobRow | None:
        """Move an active job to a final state (ERROR or CANCELED); None if already final."""
        finished_at = self.clock() if now is None else now
        with self._write() as conn:
            row = conn.execute(
                jobs.update()
                .where(jobs.c.id == job_id, jobs.c.status.in_(ACTIVE_STATUSES))
                .values(status=status, error=error, finished_at=finished_at)
                .returning(*jobs.c)
            ).first()
            if row is not None:
                self._changed(conn, row)
        return JobRow.from_row(row) if row else None

    def requeue_running(self) -> list[int]:
        """After a crash: jobs that were RUNNING go back to PENDING, keeping finished chunks."""
        with self._write() as conn:
            self._dispatching(conn)
            requeued = conn.execute(
                jobs.update()
                .where(jobs.c.status == "RUNNING")
                .values(status="PENDING")
                .returning(jobs.c.id, jobs.c.status, jobs.c.shots_done)
            ).all()
            self._changed(conn, *requeued)
        return sorted(r.id for r in requeued)

    def count_by_status(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(jobs.c.status, sa.func.count()).group_by(jobs.c.status)
            ).all()
        return {status: n for status, n in rows}

    def accounting(
        self, since: float | None, until: float | None, by: str = "user"
    ) -> list[dict[str, Any]]:
        """Usage per user or per Slurm job, over jobs submitted in [since, until).

        Shots and QPU-seconds count what ran, canceled jobs' finished chunks included; wait is
        submission to first shot.
        """
        key = {"user": jobs.c.user_id, "slurm_job": jobs.c.slurm_job_id}.get(by)
        if key is None:
            raise ValueError(f"accounting groups by 'user' or 'slurm_job', not {by!r}")
        query = (
            sa.select(
                key.label("key"),
                sa.func.count().label("jobs"),
                sa.func.sum(sa.case((jobs.c.status == "DONE", 1), else_=0)).label("done"),
                sa.func.coalesce(sa.func.sum(jobs.c.shots_done), 0).label("shots"),
                sa.func.coalesce(sa.func.sum(jobs.c.qpu_seconds), 0.0).label("qpu_seconds"),
                sa.func.avg(WAIT).label("mean_wait_s"),
                sa.func.max(WAIT).label("max_wait_s"),
            )
            .group_by(key)
            .order_by(key)
        )
        if since is not None:
            query = query.where(jobs.c.created_at >= since)
        if until is not None:
            query = query.where(jobs.c.created_at < until)
        with self.engine.connect() as conn:
            return [dict(row._mapping) for row in conn.execute(query)]

    def accounting_users(
        self, query: AccountingQuery
    ) -> tuple[int, list[dict[str, Any]], list[dict[str, Any]]]:
        """Warden's per-user summary: the number of users with ended sessions in the window,
        one page of them (session count and duration), and their ended jobs of those sessions
        per status."""
        where = query.sessions()
        users = sa.select(sa.func.count(sa.distinct(sessions.c.user_id))).where(*where)
        page = (
            sa.select(
                sessions.c.user_id,
                sa.func.count().label("count"),
                sa.func.coalesce(sa.func.sum(SESSION_DURATION), 0.0).label("total_duration"),
            )
            .where(*where)
            .group_by(sessions.c.user_id)
            .order_by(sessions.c.user_id)
            .offset(query.offset)
            .limit(query.limit)
        )
        with self.engine.connect() as conn:
            total = conn.execute(users).scalar_one()
            summaries = [dict(r._mapping) for r in conn.execute(page)]
            if not summaries:
                return total, [], []
            per_status = (
                sa.select(
                    sessions.c.user_id,
                    jobs.c.status,
                    *_job_totals(),
                )
                .join(sessions, sessions.c.id == jobs.c.session_id)
                .where(
                    *where,
                    jobs.c.finished_at.is_not(None),
                    sessions.c.user_id.in_([s["user_id"] for s in summaries]),
                )
                .group_by(sessions.c.user_id, jobs.c.status)
            )
            return total, summaries, [dict(r._mapping) for r in conn.execute(per_status)]

    def accounting_sessions(self, query: AccountingQuery) -> tuple[int, list[dict[str, Any]]]:
        """Warden's per-session report: how many ended sessions match, and one page of them
        (oldest first) with their duration and job count."""
        where = query.sessions()
        count = sa.select(sa.func.count()).select_from(sessions).where(*where)
        page = (
            sa.select(
                sessions,
                SESSION_DURATION.label("total_duration"),
                sa.func.count(jobs.c.id).label("jobs_count"),
            )
            .outerjoin(jobs, jobs.c.session_id == sessions.c.id)
            .where(*where)
            .group_by(*sessions.c)
            .order_by(sessions.c.created_at, sessions.c.id)
            .offset(query.offset)
            .limit(query.limit)
        )
        with self.engine.connect() as conn:
            total = conn.execute(count).scalar_one()
            return total, [dict(r._mapping) for r in conn.execute(page)]

    def accounting_jobs(self, query: AccountingQuery) -> tuple[int, list[dict[str, Any]]]:
        """Warden's per-job report: how many ended jobs match, and one page of them (oldest
        first) with their wait and execution times."""
        where = query.jobs()
        count = sa.select(sa.func.count()).select_from(jobs).where(*where)
        page = (
            sa.select(
                jobs.c.id,
                jobs.c.user_id,
                jobs.c.session_id,
                jobs.c.slurm_job_id,
                jobs.c.status,
                jobs.c.shots,
                jobs.c.shots_done,
                jobs.c.qpu_seconds,
                sa.func.coalesce(EXECUTION, 0.0).label("execution_time"),
                sa.func.coalesce(WAIT, 0.0).label("wait_time"),
            )
            .where(*where)
            .order_by(jobs.c.created_at, jobs.c.id)
            .offset(query.offset)
            .limit(query.limit)
        )
        with self.engine.connect() as conn:
            total = conn.execute(count).scalar_one()
            return total, [dict(r._mapping) for r in conn.execute(page)]

    # -- quotas ---------------------------------------------------------------------------

    def set_quota(self, quota: Quota) -> None:
        """Add a quota, or replace the one of the same subject and unit."""
        with self._write() as conn:
            key = (quotas.c.kind == quota.kind, quotas.c.subject == quota.subject)
            conn.execute(quotas.delete().where(*key, quotas.c.unit == quota.unit))
            conn.execute(quotas.insert().values(**asdict(quota)))

    def delete_quota(self, kind: str, subject: str, unit: str) -> bool:
        """Drop a quota; False when there was none."""
        with self._write() as conn:
            return bool(
                conn.execute(
                    quotas.delete().where(
                        quotas.c.kind == kind, quotas.c.subject == subject, quotas.c.unit == unit
                    )
                ).rowcount
            )

    def quota_uses(
        self,
        now: float,
        time_per_shot_s: float,
        user_id: str | None = None,
        accounts: tuple[str, ...] = (),
    ) -> list[tuple[Quota, float]]:
        """Every quota (or, with ``user_id``, those of that user and of ``accounts``) and what
        is charged against it in its period holding ``now``."""
        query = sa.select(quotas).order_by(quotas.c.kind, quotas.c.subject, quotas.c.unit)
        if user_id is not None:
            mine = sa.and_(quotas.c.kind == "user", quotas.c.subject == user_id)
            theirs = sa.and_(quotas.c.kind == "account", quotas.c.subject.in_(accounts))
            query = query.where(sa.or_(mine, theirs))
        with self.engine.connect() as conn:
            found = [Quota(**row._mapping) for row in conn.execute(query)]
            return [(quota, _used(conn, quota, now, time_per_shot_s)) for quota in found]

    def accounts_of(self, user_id: str) -> tuple[str, ...]:
        """The accounts of the user's open sessions (those whose quotas apply to their jobs)."""
        query = (
            sa.select(sessions.c.slurm_account)
            .distinct()
            .where(
                sessions.c.user_id == user_id,
                sessions.c.revoked_at.is_(None),
                sessions.c.slurm_account.is_not(None),
            )
            .order_by(sessions.c.slurm_account)
        )
        with self.engine.connect() as conn:
            return tuple(conn.execute(query).scalars())

    # -- device facts ---------------------------------------------------------------------

    def get_fact(self, key: str) -> Any:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(facts.c.value).where(facts.c.key == key)).first()
        return json.loads(row.value) if row else None

    def set_fact(self, key: str, value: Any) -> None:
        self.set_facts({key: value})

    def set_dispatching_fact(self, key: str, value: Any) -> None:
        """A fact only the dispatching replica may write (the QPU job in flight): fenced, so a
        replica that lost the lease cannot bring back what its successor settled."""
        with self._write() as conn:
            self._dispatching(conn)
            updated = conn.execute(
                facts.update().where(facts.c.key == key).values(value=json.dumps(value))
            ).rowcount
            if not updated:
                conn.execute(facts.insert().values(key=key, value=json.dumps(value)))

    def delete_fact(self, key: str) -> None:
        with self._write() as conn:
            conn.execute(facts.delete().where(facts.c.key == key))

    def charge(self, job_id: int, qpu_seconds: float, settles: str | None = None) -> None:
        """Device time a job's chunk spent without adding shots (a canceled job's chunk that
        could no longer be stopped ran): its accounting counts it."""
        with self._write() as conn:
            if settles is not None:
                conn.execute(facts.delete().where(facts.c.key == settles))
            row = conn.execute(
                jobs.update()
                .where(jobs.c.id == job_id)
                .values(qpu_seconds=jobs.c.qpu_seconds + qpu_seconds)
                .returning(jobs.c.id, jobs.c.status, jobs.c.shots_done)
            ).first()
            if row is not None:
                self._changed(conn, row)

    def set_facts(self, values: dict[str, Any]) -> None:
        """Several facts in one transaction (a calibration's time and number go together)."""
        with self._write() as conn:
            for key, value in values.items():
                updated = conn.execute(
                    facts.update().where(facts.c.key == key).values(value=json.dumps(value))
                ).rowcount
                if not updated:
                    conn.execute(facts.insert().values(key=key, value=json.dumps(value)))

    # -- credential memory (the replay guard of qhpc_lab.scheduler.auth) -------------------

    def first_use(self, digest: str, expires_at: float) -> bool:
        """Remember an accepted credential until ``expires_at``; False if it was seen before.

        One INSERT, which a replay makes conflict (a prepared statement: it runs per request).
        """
        try:
            with self._write() as conn:
                conn.execute(_REMEMBER, {"digest": digest, "expires_at": expires_at})
        except sa.exc.IntegrityError:
            return False
        return True

    def forget_expired(self, now: float) -> int:
        """Drop remembered credentials that expired before ``now``; returns how many."""
        with self._write() as conn:
            return conn.execute(
                seen_credentials.delete().where(seen_credentials.c.expires_at < now)
            ).rowcount


@dataclass(frozen=True)
class QuotaAdmission:
    """What :meth:`Store.add_job` needs to check a job against its quotas."""

    account: str | None
    """The job's Slurm account (its session's), or None."""
    time_per_shot_s: float
    """The device's, for :func:`~qhpc_lab.scheduler.quotas.cost` in QPU-seconds."""


def _used(conn: sa.Connection, quota: Quota, now: float, time_per_shot_s: float) -> float:
    """What jobs of the quota's subject submitted in its period holding ``now`` are charged:
    the sum of :func:`~qhpc_lab.scheduler.quotas.charged`, in SQL (docs/policy.md, "Quotas")."""
    start, end = quota_rules.period_bounds(quota, now)
    active = jobs.c.status.in_(ACTIVE_STATUSES)
    if quota.unit == "shots":
        charged = sa.case((active, jobs.c.shots), else_=jobs.c.shots_done)
    else:
        left = (jobs.c.shots - jobs.c.shots_done) * time_per_shot_s
        charged = jobs.c.qpu_seconds + sa.case((active, left), else_=0.0)
    if quota.kind == "user":
        subject = jobs.c.user_id == quota.subject
    else:
        subject = jobs.c.session_id.in_(
            sa.select(sessions.c.id).where(sessions.c.slurm_account == quota.subject)
        )
    query = sa.select(sa.func.coalesce(sa.func.sum(charged), 0)).where(
        subject, jobs.c.created_at >= start, jobs.c.created_at < end
    )
    return float(conn.execute(query).scalar_one())


def _job_totals() -> list[sa.Label[Any]]:
    """Count, execution and wait time, and shots of a group of jobs (Warden's job summary)."""
    return [
        sa.func.count().label("count"),
        sa.func.coalesce(sa.func.sum(EXECUTION), 0.0).label("execution_time"),
        sa.func.coalesce(sa.func.sum(WAIT), 0.0).label("wait_time"),
        sa.func.coalesce(sa.func.sum(jobs.c.shots), 0).label("shots"),
    ]


seen_credentials = sa.Table(
    "seen_credentials",
    metadata,
    sa.Column("digest", sa.String(64), primary_key=True),
    sa.Column("expires_at", sa.Float, nullable=False, index=True),
)
"""MUNGE credentials the scheduler accepted, kept until they expire (docs/scheduler.md)."""
_REMEMBER = seen_credentials.insert()
