"""Sessions: one per Slurm job, opened by its prolog and revoked by its epilog."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from qhpc_lab.scheduler.core import SessionRow
from qhpc_lab.scheduler.errors import ADMIN_BODY_ERRORS, error_responses
from qhpc_lab.scheduler.refusal import SchedulerError
from qhpc_lab.scheduler.routes.deps import Admin, SchedulerDep, User, WardenSession
from qhpc_lab.scheduler.schemas import (
    IdFilter,
    RevokeReason,
    SessionId,
    SessionIn,
    SessionOut,
)
from qhpc_lab.scheduler.views import session_view

router = APIRouter()


@router.post(
    "/sessions",
    response_model=SessionOut,
    tags=["warden", "admin"],
    responses={**ADMIN_BODY_ERRORS, **error_responses(409)},
)
async def post_session(body: SessionIn, _who: Admin, sched: SchedulerDep) -> dict[str, Any]:
    job = body.slurm_job_id if body.slurm_job_id is not None else body.scheduler_job_id
    account = None if body.slurm_account is None else str(body.slurm_account)
    session = await sched.open_session(
        str(body.user_id), None if job is None else str(job), body.qpu_slots, account
    )
    return session_view(session)


@router.get(
    "/sessions",
    response_model=list[SessionOut],
    tags=["admin"],
    responses=error_responses(401, 403, 422),
)
async def get_sessions(
    _who: Admin,
    sched: SchedulerDep,
    active: bool | None = None,
    user_id: IdFilter = None,
    scheduler_job_id: IdFilter = None,
) -> list[dict[str, Any]]:
    """Sessions, oldest first; Warden's filters (``scheduler_job_id``: the Slurm job)."""
    rows = await sched.sessions(active, user_id, scheduler_job_id)
    return [session_view(s) for s in rows]


@router.get(
    "/sessions/{session_id}",
    response_model=SessionOut,
    tags=["qhpc"],
    responses=error_responses(401, 404, 422),
)
async def get_session(session_id: SessionId, who: User, sched: SchedulerDep) -> dict[str, Any]:
    """A session (its owner or an administrator): its deadlines and, once revoked, why."""
    return session_view(await _visible_session(session_id, who, sched))


async def _visible_session(session_id: str, who: User, sched: SchedulerDep) -> SessionRow:
    session = await sched.get_session(session_id)
    if session is None or (session.user_id != who.user_id and not who.admin):
        raise SchedulerError(404, f"session {session_id} not found")
    return session


@router.delete(
    "/sessions/{session_id}",
    response_model=SessionOut,
    tags=["warden"],
    responses=error_responses(401, 404, 422),
)
async def delete_session(
    session_id: SessionId,
    who: User,
    sched: SchedulerDep,
    reason: RevokeReason = "session released",
) -> dict[str, Any]:
    """Revoke a session; its queued jobs are cancelled with ``reason`` (the Slurm Epilog
    says "Slurm job ended")."""
    await _visible_session(session_id, who, sched)
    return session_view(await sched.revoke_session(session_id, reason))


@router.delete(
    "/sessions",
    response_model=SessionOut,
    tags=["warden", "admin"],
    responses=error_responses(401, 403, 404, 422),
)
async def delete_session_by_header(
    _who: Admin, sched: SchedulerDep, session_id: WardenSession = None
) -> dict[str, Any]:
    if session_id is None:
        raise SchedulerError(403, "missing X-Warden-Session header", "session")
    return session_view(await sched.revoke_session(session_id, "session released"))
