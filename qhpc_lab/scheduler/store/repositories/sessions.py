"""Sessions: a user's share of the QPU, opened by the Slurm prolog and revoked at its end."""

from __future__ import annotations

import uuid

import sqlalchemy as sa

from qhpc_lab.scheduler.limits import AdmissionRefused
from qhpc_lab.scheduler.store.repositories.base import Repository
from qhpc_lab.scheduler.store.rows import SessionRow
from qhpc_lab.scheduler.store.schema import jobs, sessions
from qhpc_lab.vocabulary import JobStatus


class SessionRepository(Repository):
    def create_session(
        self,
        user_id: str,
        slurm_job_id: str | None,
        qpu_slots: int,
        now: float | None = None,
        idle_expires_at: float | None = None,
        expires_at: float | None = None,
        slurm_account: str | None = None,
        slots_total: int = 0,
    ) -> SessionRow:
        """Open a session, or return the active one for the same user and Slurm job (a
        prolog's retry). With ``slots_total``, AdmissionRefused (409) unless the open sessions
        leave ``qpu_slots`` free, counted in this transaction after it wrote the shared-state
        mark: that write's lock (the mark's row in PostgreSQL, the database in SQLite) is held
        until commit, so replicas opening sessions at once count one after the other."""
        with self._write() as conn:
            self._shared_changed(conn)
            if slurm_job_id is not None:
                row = conn.execute(
                    sa.select(sessions).where(
                        sessions.c.user_id == user_id,
                        sessions.c.slurm_job_id == slurm_job_id,
                        sessions.c.revoked_at.is_(None),
                    )
                ).first()
                if row is not None and row.qpu_slots != qpu_slots:
                    raise AdmissionRefused(
                        409,
                        f"Slurm job {slurm_job_id} already has a session holding "
                        f"{row.qpu_slots} QPU slots, not {qpu_slots}",
                        "qpu_slots",
                    )
                if row is not None:
                    return SessionRow(**row._mapping)
            if slots_total:
                used = conn.execute(
                    sa.select(sa.func.coalesce(sa.func.sum(sessions.c.qpu_slots), 0)).where(
                        sessions.c.revoked_at.is_(None)
                    )
                ).scalar_one()
                if used + qpu_slots > slots_total:
                    raise AdmissionRefused(
                        409,
                        f"not enough QPU slots: {qpu_slots} asked for, "
                        f"{max(slots_total - used, 0)} of {slots_total} free",
                        "qpu_slots_total",
                    )
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
            revoked = conn.execute(
                sessions.update()
                .where(sessions.c.id == session_id, sessions.c.revoked_at.is_(None))
                .values(revoked_at=now, revoke_reason=reason)
            ).rowcount
            if revoked:
                self._shared_changed(conn)
            pending = [
                r.id
                for r in conn.execute(
                    sa.select(jobs.c.id).where(
                        jobs.c.session_id == session_id, jobs.c.status == JobStatus.PENDING
                    )
                )
            ]
            if pending:
                canceled = conn.execute(
                    jobs.update()
                    .where(jobs.c.id.in_(pending))
                    .values(status=JobStatus.CANCELED, error=f"canceled: {reason}", finished_at=now)
                    .returning(jobs.c.id, jobs.c.status, jobs.c.shots_done)
                ).all()
                self._changed(conn, *canceled)
            row = conn.execute(sa.select(sessions).where(sessions.c.id == session_id)).one()
        return SessionRow(**row._mapping), pending
