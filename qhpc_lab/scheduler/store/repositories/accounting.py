"""Accounting: usage per user or Slurm job, and Warden's ``/accounting`` reports."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from qhpc_lab.scheduler.store.repositories.base import Repository
from qhpc_lab.scheduler.store.schema import EXECUTION, SESSION_DURATION, WAIT, jobs, sessions
from qhpc_lab.vocabulary import JobStatus


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


class AccountingRepository(Repository):
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
                sa.func.sum(sa.case((jobs.c.status == JobStatus.DONE, 1), else_=0)).label("done"),
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


def _job_totals() -> list[sa.Label[Any]]:
    """Count, execution and wait time, and shots of a group of jobs (Warden's job summary)."""
    return [
        sa.func.count().label("count"),
        sa.func.coalesce(sa.func.sum(EXECUTION), 0.0).label("execution_time"),
        sa.func.coalesce(sa.func.sum(WAIT), 0.0).label("wait_time"),
        sa.func.coalesce(sa.func.sum(jobs.c.shots), 0).label("shots"),
    ]
