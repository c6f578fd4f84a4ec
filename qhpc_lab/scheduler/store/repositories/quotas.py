"""Quotas: the operator's budgets, and what is charged against them (in SQL)."""

from __future__ import annotations

from dataclasses import asdict

import sqlalchemy as sa

from qhpc_lab.scheduler import quotas as quota_rules
from qhpc_lab.scheduler.quotas import Quota
from qhpc_lab.scheduler.store.repositories.base import Repository
from qhpc_lab.scheduler.store.schema import jobs, quotas, sessions
from qhpc_lab.vocabulary import ACTIVE_STATUSES


class QuotaRepository(Repository):
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
            return [(quota, quota_used(conn, quota, now, time_per_shot_s)) for quota in found]

    def accounts_of(self, user_id: str) -> tuple[str, ...]:
        """The accounts whose quotas apply to the user's jobs: those of their open sessions,
        and their latest session's (what a job without a session is charged to)."""
        query = sa.select(sessions.c.slurm_account).where(
            sessions.c.user_id == user_id,
            sessions.c.revoked_at.is_(None),
            sessions.c.slurm_account.is_not(None),
        )
        with self.engine.connect() as conn:
            accounts = set(conn.execute(query).scalars())
            accounts.update(conn.execute(latest_account(user_id)).scalars())
        return tuple(sorted(accounts))


def latest_account(user_id: str) -> sa.Select[tuple[str]]:
    """The Slurm account of the user's latest session that named one (open or not)."""
    return (
        sa.select(sessions.c.slurm_account)
        .where(sessions.c.user_id == user_id, sessions.c.slurm_account.is_not(None))
        .order_by(sessions.c.created_at.desc())
        .limit(1)
    )


def quota_used(conn: sa.Connection, quota: Quota, now: float, time_per_shot_s: float) -> float:
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
        subject = jobs.c.slurm_account == quota.subject
    query = sa.select(sa.func.coalesce(sa.func.sum(charged), 0)).where(
        subject, jobs.c.created_at >= start, jobs.c.created_at < end
    )
    return float(conn.execute(query).scalar_one())
