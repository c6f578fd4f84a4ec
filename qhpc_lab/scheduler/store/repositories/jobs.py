"""Jobs: queued, dispatched chunk by chunk, finished; the unit of exactly-once.

Chunk results are merged into the job's row in the same transaction that advances
``shots_done``, so a crash loses at most the chunk in flight, which is then re-run from its
start.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict
from typing import Any

import sqlalchemy as sa

from qhpc_lab.qpu import Calibration
from qhpc_lab.scheduler import limits as limit_rules
from qhpc_lab.scheduler import quotas as quota_rules
from qhpc_lab.scheduler.limits import AdmissionRefused, QueueLimit
from qhpc_lab.scheduler.quotas import Quota, QuotaExceeded
from qhpc_lab.scheduler.store.repositories.base import Repository
from qhpc_lab.scheduler.store.repositories.quotas import latest_account, quota_used
from qhpc_lab.scheduler.store.repositories.sweeps import add_sets, merge_set, restart_sets
from qhpc_lab.scheduler.store.rows import DuplicateJob, JobRow, NewJob, QuotaAdmission
from qhpc_lab.scheduler.store.schema import MAX_JOB_ID, facts, jobs, quotas, sessions
from qhpc_lab.vocabulary import ACTIVE_STATUSES, JobStatus

LIMIT_LOCK = 0x71687065
"""The class of the PostgreSQL advisory locks a queue cap's count holds (one per scope)."""


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


@dataclasses.dataclass
class _GroupState:
    """What one transaction that adds jobs has read already: read once, it holds for every job
    of the transaction (its locks keep it so on PostgreSQL; SQLite has one writer)."""

    grouped: bool = False
    """Several submissions in the transaction (:meth:`JobRepository.add_jobs`)."""
    accounts: dict[tuple[str, str], str | None] = dataclasses.field(default_factory=dict)
    """The account charged, per ("session", id) or ("user", id) without a session."""
    open_sessions: set[str] = dataclasses.field(default_factory=set)
    """Sessions found open and locked (``_check_session``)."""
    closed_sessions: dict[str, AdmissionRefused] = dataclasses.field(default_factory=dict)
    """Sessions found revoked or missing: their jobs' refusal."""
    loaded: dict[tuple[str, str], list[Quota]] = dataclasses.field(default_factory=dict)
    """The quotas per subject (kind, name), locked (FOR UPDATE)."""

    def load_quotas(self, conn: sa.Connection, subjects: set[tuple[str, str]]) -> None:
        """The quotas of ``subjects`` read and locked in one statement, in a fixed order."""
        missing = sorted(subjects - self.loaded.keys())
        if not missing:
            return
        applies = [sa.and_(quotas.c.kind == k, quotas.c.subject == v) for k, v in missing]
        query = (
            sa.select(quotas)
            .where(sa.or_(*applies))
            .order_by(quotas.c.kind, quotas.c.subject, quotas.c.unit)
            .with_for_update()
        )
        for subject in missing:
            self.loaded[subject] = []
        for row in conn.execute(query).all():
            quota = Quota(**row._mapping)
            self.loaded[(quota.kind, quota.subject)].append(quota)

    def quotas(self, conn: sa.Connection, subjects: list[tuple[str, str]]) -> list[Quota]:
        """The quotas of ``subjects`` (a job's user and account), in (kind, unit) order."""
        self.load_quotas(conn, set(subjects))
        found = [quota for subject in subjects for quota in self.loaded[subject]]
        return sorted(found, key=lambda quota: (quota.kind, quota.unit))


class JobRepository(Repository):
    def add_job(
        self,
        admission: QuotaAdmission | None = None,
        sweep: list[tuple[int, str]] | None = None,
        **values: Any,
    ) -> JobRow:
        """Queue a job. One that reuses its user's ``idempotency_key`` raises
        :class:`DuplicateJob` with the first job (a retried submission runs once). With
        ``admission``, its session (still open), its queue caps and the quotas of its user and
        account are checked in the same transaction (AdmissionRefused, QuotaExceeded).
        ``sweep``: a sweep's sets (shots, variables as JSON text), stored with it; its
        ``shots`` are theirs in all."""
        values = self._new_job_values(values, sweep)
        try:
            with self._write() as conn:
                row = self._insert_job(conn, admission, values, sweep, _GroupState())
                self._changed(conn, row)
        except sa.exc.IntegrityError:
            key = values.get("idempotency_key")
            first = None if key is None else self.find_job_by_key(values["user_id"], key)
            if first is None:
                raise
            raise DuplicateJob(first) from None
        return JobRow.from_row(row)

    def add_jobs(self, group: list[NewJob]) -> list[JobRow | Exception]:
        """Queue the jobs of ``group`` in one transaction (group commit): each is checked as
        :meth:`add_job` checks it, in order, seeing the ones before it, and answered its own
        row or refusal (DuplicateJob, AdmissionRefused, QuotaExceeded). What every submission
        would look up alike (the quotas, the account of a user without a session, a session
        still open) is read once. Should the transaction fail on a constraint (a concurrent
        writer on PostgreSQL), each job is added again on its own, so that no submission
        pays for another's conflict."""
        prepared = [self._new_job_values(new.values, new.sweep) for new in group]
        answers: list[JobRow | Exception] = []
        try:
            with self._write() as conn:
                state = _GroupState(grouped=True)
                self._lock_group(conn, group, prepared, state)
                written = []
                for new, values in zip(group, prepared, strict=True):
                    try:
                        row = self._insert_job(conn, new.admission, values, new.sweep, state)
                    except (AdmissionRefused, QuotaExceeded, DuplicateJob) as refused:
                        answers.append(refused)
                        continue
                    written.append(row)
                    answers.append(JobRow.from_row(row))
                self._changed(conn, *written)
        except sa.exc.IntegrityError:
            return [self._add_alone(new) for new in group]
        return answers

    def _add_alone(self, new: NewJob) -> JobRow | Exception:
        """One job of a failed group, in its own transaction: its row or its refusal."""
        try:
            return self.add_job(new.admission, new.sweep, **new.values)
        except (AdmissionRefused, QuotaExceeded, DuplicateJob, sa.exc.IntegrityError) as refused:
            return refused

    def _new_job_values(
        self, values: dict[str, Any], sweep: list[tuple[int, str]] | None
    ) -> dict[str, Any]:
        """A new job's columns from what its submission gives."""
        values = dict(values)
        if sweep is not None:
            values.update(sets=len(sweep), sets_done=0)
        values.setdefault("created_at", self.clock())
        values.setdefault("single_calibration", False)
        values.update(status=JobStatus.PENDING, shots_done=0, qpu_seconds=0.0, emulator_seconds=0.0)
        values["variables"] = json.dumps(values.get("variables") or {})
        return values

    def _insert_job(
        self,
        conn: sa.Connection,
        admission: QuotaAdmission | None,
        values: dict[str, Any],
        sweep: list[tuple[int, str]] | None,
        state: _GroupState,
    ) -> sa.Row[Any]:
        """Within ``conn``'s transaction: the job checked (:meth:`_admit`) and inserted."""
        account = self._charged_account(conn, values, admission, state)
        values = {**values, "slurm_account": account}
        if admission is not None:
            admission = dataclasses.replace(admission, account=account)
            self._admit(conn, admission, values["user_id"], values["shots"], values, state)
        row = conn.execute(jobs.insert().returning(*jobs.c), values).one()
        if sweep is not None:
            add_sets(conn, row.id, sweep)
        return row

    def _lock_group(
        self,
        conn: sa.Connection,
        group: list[NewJob],
        prepared: list[dict[str, Any]],
        state: _GroupState,
    ) -> None:
        """Take what a group's checks lock, each kind in a fixed order and in the order a
        single job takes them (sessions, capped scopes, quotas), so that two groups (HA
        replicas) or a group and a revocation never wait on each other in a cycle; the
        quotas of every job are read in one statement."""
        checked = [(new, values) for new, values in zip(group, prepared, strict=True)]
        checked = [(new, values) for new, values in checked if new.admission is not None]
        for session_id in sorted({v["session_id"] for _, v in checked if v.get("session_id")}):
            try:
                self._check_session(conn, session_id)
                state.open_sessions.add(session_id)
            except AdmissionRefused as refused:
                state.closed_sessions[session_id] = refused
        if conn.dialect.name == "postgresql":
            counters = {limit.counter for new, _ in checked for limit in new.admission.limits}
            for counter in sorted(counters):
                conn.execute(
                    sa.select(sa.func.pg_advisory_xact_lock(LIMIT_LOCK, sa.func.hashtext(counter)))
                )
        subjects: set[tuple[str, str]] = set()
        for new, values in checked:
            subjects.add(("user", values["user_id"]))
            account = self._charged_account(conn, values, new.admission, state)
            if account is not None:
                subjects.add(("account", account))
        state.load_quotas(conn, subjects)

    def _admit(
        self,
        conn: sa.Connection,
        admission: QuotaAdmission,
        user_id: str,
        shots: int,
        values: dict[str, Any],
        state: _GroupState,
    ) -> None:
        """Refuse the job when its session was revoked meanwhile (AdmissionRefused, 403), when
        it does not fit a queue cap of its user or session (AdmissionRefused, 429) or a quota
        of its user or account (QuotaExceeded). What is counted is locked first (PostgreSQL:
        the session's row and the quotas' FOR UPDATE, an advisory lock per capped scope;
        SQLite has one writer), so concurrent submissions are checked one after the other
        and a revocation either sees the job, and cancels it, or refuses it. In a group, a
        retry of a job added earlier in the same group is answered here (DuplicateJob)."""
        key = values.get("idempotency_key")
        if key is not None and (first := self._find_job_by_key(conn, user_id, key)) is not None:
            if state.grouped:
                raise DuplicateJob(first)
            return  # a retry: the insert's unique key answers it with the first job
        session_id = values.get("session_id")
        if session_id in state.closed_sessions:
            raise state.closed_sessions[session_id]
        if session_id is not None and session_id not in state.open_sessions:
            self._check_session(conn, session_id)
            state.open_sessions.add(session_id)
        for limit in sorted(admission.limits, key=lambda limit: limit.counter):
            self._check_limit(conn, limit, shots)
        subjects = [("user", user_id)]
        if admission.account is not None:
            subjects.append(("account", admission.account))
        now = values["created_at"]
        for quota in state.quotas(conn, subjects):
            used = quota_used(conn, quota, now, admission.time_per_shot_s)
            requested = quota_rules.cost(quota.unit, shots, admission.time_per_shot_s)
            refused = quota_rules.refusal(quota, used, requested, now)
            if refused is not None:
                raise QuotaExceeded(refused)

    @staticmethod
    def _charged_account(
        conn: sa.Connection,
        values: dict[str, Any],
        admission: QuotaAdmission | None,
        state: _GroupState,
    ) -> str | None:
        """The Slurm account a new job is charged to: the one admission names (its session's),
        else its session's, else, for a job without a session, the account of its user's
        latest session that named one (a bearer token does not escape an account's quota).
        Looked up once per session or user in a transaction."""
        if admission is not None and admission.account is not None:
            return admission.account
        if values.get("session_id") is not None:
            key = ("session", values["session_id"])
            query = sa.select(sessions.c.slurm_account).where(sessions.c.id == values["session_id"])
        else:
            key = ("user", values["user_id"])
            query = latest_account(values["user_id"])
        if key not in state.accounts:
            state.accounts[key] = conn.execute(query).scalar()
        return state.accounts[key]

    @staticmethod
    def _check_session(conn: sa.Connection, session_id: str) -> None:
        """AdmissionRefused (403) unless the session is still open, its row locked until the
        job is in: a revocation waits for the job, then cancels it with the others."""
        row = conn.execute(
            sa.select(sessions.c.revoked_at, sessions.c.revoke_reason)
            .where(sessions.c.id == session_id)
            .with_for_update()
        ).first()
        if row is None or row.revoked_at is not None:
            reason = f"revoked ({row.revoke_reason})" if row is not None else "not found"
            raise AdmissionRefused(403, f"session {session_id} was {reason}", "session")

    def _check_limit(self, conn: sa.Connection, limit: QueueLimit, shots: int) -> None:
        """AdmissionRefused (429) when the scope's active jobs leave no room for this one."""
        if conn.dialect.name == "postgresql":
            conn.execute(
                sa.select(
                    sa.func.pg_advisory_xact_lock(LIMIT_LOCK, sa.func.hashtext(limit.counter))
                )
            )
        scope = {
            "user": jobs.c.user_id == limit.key,
            "session": jobs.c.session_id == limit.key,
            "class": sa.and_(jobs.c.user_id == limit.key, jobs.c.job_class == limit.job_class),
        }[limit.scope]
        held_jobs, held_shots = conn.execute(
            sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(jobs.c.shots), 0)).where(
                scope, jobs.c.status.in_(ACTIVE_STATUSES)
            )
        ).one()
        refused = limit_rules.refusal(limit, int(held_jobs), int(held_shots), shots)
        if refused is not None:
            raise refused

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
                .where(jobs.c.id == job_id, jobs.c.status == JobStatus.PENDING)
                .values(
                    status=JobStatus.RUNNING,
                    started_at=sa.func.coalesce(jobs.c.started_at, started_at),
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
            if job.status != JobStatus.RUNNING:
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
            if job.sets is not None:
                values.update(merge_set(conn, job, shots, counts))
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
                values.update(
                    status=JobStatus.DONE, finished_at=self.clock() if now is None else now
                )
            # Guarded by the state read above: a cancel committed in between (another process
            # on PostgreSQL) wins and the chunk is dropped, as documented.
            row = conn.execute(
                jobs.update()
                .where(
                    jobs.c.id == job_id,
                    jobs.c.status == JobStatus.RUNNING,
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
            if row is not None and row.sets is not None:
                restart_sets(conn, job_id)
                row = conn.execute(sa.select(jobs).where(jobs.c.id == job_id)).one()
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
                .where(jobs.c.status == JobStatus.RUNNING)
                .values(status=JobStatus.PENDING)
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

    def charge(
        self,
        job_id: int,
        counts: dict[str, int],
        shots: int,
        qpu_seconds: float,
        shots_done_before: int,
        emulator_seconds: float = 0.0,
        settles: str | None = None,
        calibration: Calibration | None = None,
        calibration_age_s: float = 0.0,
    ) -> JobRow | None:
        """What a canceled job's chunk ran: stopped part way (the emulated QPU), or to its end
        on a device that cannot stop a started program. Its shots, their counts and its
        device time are the job's like any chunk's, so its QPU-seconds, its shots and the
        quotas and accounting that sum them agree, and ``calibration`` (their provenance, from
        ``calibration_age_s``) joins the job's calibrations; its status stays. Exactly once: a retry
        whose first attempt committed finds ``shots_done`` moved and changes nothing (None)."""
        with self._write() as conn:
            if settles is not None:
                conn.execute(facts.delete().where(facts.c.key == settles))
            row = conn.execute(sa.select(jobs).where(jobs.c.id == job_id)).first()
            if row is None or row.shots_done != shots_done_before:
                return None
            job = JobRow.from_row(row)
            merged = dict(job.counts)
            for bits, n in counts.items():
                merged[bits] = merged.get(bits, 0) + n
            values: dict[str, Any] = dict(
                counts=json.dumps(merged),
                shots_done=jobs.c.shots_done + shots,
                qpu_seconds=jobs.c.qpu_seconds + qpu_seconds,
                emulator_seconds=jobs.c.emulator_seconds + emulator_seconds,
            )
            if job.sets is not None and shots > 0:
                values.update(merge_set(conn, job, shots, counts))
            if calibration is not None and shots > 0:  # the shots that ran, back to back
                values["calibrations"] = json.dumps(
                    merge_calibration(
                        job.calibrations,
                        job.shots_done + 1,
                        shots,
                        calibration,
                        calibration_age_s,
                        calibration_age_s + qpu_seconds,
                    )
                )
            row = conn.execute(
                jobs.update()
                .where(jobs.c.id == job_id, jobs.c.shots_done == shots_done_before)
                .values(**values)
                .returning(*jobs.c)
            ).first()
            if row is not None and shots > 0:  # the journal follows status and shots only
                self._changed(conn, row)
        return JobRow.from_row(row) if row else None
