"""Quotas: the operator sets them under ``/admin/quotas``; ``/quotas`` shows a user theirs."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from qhpc_lab.scheduler.core import Scheduler
from qhpc_lab.scheduler.errors import ADMIN_BODY_ERRORS, error_responses
from qhpc_lab.scheduler.routes.deps import Admin, SchedulerDep, User
from qhpc_lab.scheduler.schemas import QuotaIn, QuotaKind, QuotasOut, QuotaSubject, QuotaUnit
from qhpc_lab.scheduler.views import quotas_view

router = APIRouter()


async def _uses(sched: Scheduler, user_id: str | None = None) -> dict[str, Any]:
    """Quotas (all, or those that apply to ``user_id``'s jobs) with their use now."""
    return quotas_view(*await sched.quotas.uses(user_id))


@router.get(
    "/admin/quotas",
    response_model=QuotasOut,
    tags=["admin"],
    responses=error_responses(401, 403),
)
async def get_quotas(_who: Admin, sched: SchedulerDep) -> dict[str, Any]:
    """Every quota, with what is charged against it in its current period."""
    return await _uses(sched)


@router.put("/admin/quotas", response_model=QuotasOut, tags=["admin"], responses=ADMIN_BODY_ERRORS)
async def put_quota(body: QuotaIn, _who: Admin, sched: SchedulerDep) -> dict[str, Any]:
    """Set a quota (replacing the subject's one in the same unit); answers every quota."""
    await sched.quotas.set(body.model_dump())
    return await _uses(sched)


@router.delete(
    "/admin/quotas/{kind}/{subject}/{unit}",
    response_model=QuotasOut,
    tags=["admin"],
    responses=error_responses(401, 403, 404, 422),
)
async def delete_quota(
    kind: QuotaKind, subject: QuotaSubject, unit: QuotaUnit, _who: Admin, sched: SchedulerDep
) -> dict[str, Any]:
    """Drop a quota; answers the quotas left."""
    await sched.quotas.delete(kind, subject, unit)
    return await _uses(sched)


@router.get("/quotas", response_model=QuotasOut, tags=["qhpc"], responses=error_responses(401))
async def get_my_quotas(who: User, sched: SchedulerDep) -> dict[str, Any]:
    """The quotas the caller's jobs are charged to (theirs, and those of the accounts of
    their open sessions), with their use."""
    return await _uses(sched, who.user_id)
