"""Warden's accounting reports under ``/accounting``: per user, per session and per job, for
what ended in a window, a page at a time (``/admin/accounting`` groups by submission)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter

from qhpc_lab.scheduler.errors import error_responses
from qhpc_lab.scheduler.reports import AccountingQuery
from qhpc_lab.scheduler.routes.deps import Admin, SchedulerDep
from qhpc_lab.scheduler.schemas import (
    EndBound,
    IdList,
    JobIdList,
    JobsAccountingOut,
    PageLimit,
    PageOffset,
    SessionsAccountingOut,
    StatusList,
    UsersAccountingOut,
)
from qhpc_lab.scheduler.views import (
    jobs_accounting_view,
    sessions_accounting_view,
    users_accounting_view,
)
from qhpc_lab.wire.times import unix_time

router = APIRouter(prefix="/accounting", tags=["warden", "admin"])
ADMIN_QUERY = error_responses(401, 403, 422)


def _query(
    ended_after: datetime | None,
    ended_before: datetime | None,
    limit: int,
    offset: int,
    **ids: tuple[Any, ...],
) -> AccountingQuery:
    return AccountingQuery(
        unix_time(ended_after),
        unix_time(ended_before),
        offset=offset,
        limit=limit,
        **{name: tuple(values) for name, values in ids.items()},
    )


@router.get("", response_model=UsersAccountingOut, responses=ADMIN_QUERY)
async def get_accounting(
    _who: Admin,
    sched: SchedulerDep,
    ended_after: EndBound = None,
    ended_before: EndBound = None,
    user_id: IdList = (),
    limit: PageLimit = 100,
    offset: PageOffset = 0,
) -> dict[str, Any]:
    """Per user: sessions that ended in the window (count, duration) and their ended jobs
    (count, execution and wait time, shots; in all and per status)."""
    query = _query(ended_after, ended_before, limit, offset, user_ids=user_id)
    return users_accounting_view(query, *await sched.reports.users(query))


@router.get("/sessions", response_model=SessionsAccountingOut, responses=ADMIN_QUERY)
async def get_sessions_accounting(
    _who: Admin,
    sched: SchedulerDep,
    ended_after: EndBound = None,
    ended_before: EndBound = None,
    user_id: IdList = (),
    session_id: IdList = (),
    slurm_job_id: IdList = (),
    limit: PageLimit = 100,
    offset: PageOffset = 0,
) -> dict[str, Any]:
    """One row per session that ended in the window, oldest first."""
    query = _query(
        ended_after,
        ended_before,
        limit,
        offset,
        user_ids=user_id,
        session_ids=session_id,
        slurm_job_ids=slurm_job_id,
    )
    return sessions_accounting_view(query, *await sched.reports.sessions(query))


@router.get("/jobs", response_model=JobsAccountingOut, responses=ADMIN_QUERY)
async def get_jobs_accounting(
    _who: Admin,
    sched: SchedulerDep,
    ended_after: EndBound = None,
    ended_before: EndBound = None,
    user_id: IdList = (),
    session_id: IdList = (),
    slurm_job_id: IdList = (),
    status: StatusList = (),
    job_id: JobIdList = (),
    limit: PageLimit = 100,
    offset: PageOffset = 0,
) -> dict[str, Any]:
    """One row per job that ended in the window, oldest first (jobs without a session too)."""
    query = _query(
        ended_after,
        ended_before,
        limit,
        offset,
        user_ids=user_id,
        session_ids=session_id,
        slurm_job_ids=slurm_job_id,
        statuses=status,
        job_ids=job_id,
    )
    return jobs_accounting_view(query, *await sched.reports.jobs(query))
