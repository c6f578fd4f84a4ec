"""Quotas: the operator sets them under ``/admin/quotas``; ``/quotas`` shows a user theirs."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from qhpc_lab.scheduler.core import Scheduler, SchedulerError
from qhpc_lab.scheduler.errors import ADMIN_BODY_ERRORS, error_responses
from qhpc_lab.scheduler.quotas import InvalidQuota, Quota
from qhpc_lab.scheduler.routes.deps import Admin, SchedulerDep, User
from qhpc_lab.scheduler.schemas import QuotaIn, QuotaKind, QuotasOut, QuotaSubject, QuotaUnit
from qhpc_lab.scheduler.views import quotas_view

router = APIRouter()


async def _uses(sched: Scheduler, user_id: str | None = None) -> dict[str, Any]:
    """Quotas (all, or those that apply to ``user_id``'s jobs) with their use now."""
    now, time_per_shot_s = sched.clock(), sched.driver.profile.time_per_shot_s
    accounts = () if user_id is None else await sched.db(sched.store.accounts_of, user_id)
    uses = await sched.db(sched.store.quota_uses, now, time_per_shot_s, user_id, accounts)
    return quotas_view(uses, now)


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
    try:
        quota = Quota(**body.model_dump()).checked()
    except InvalidQuota as err:
        raise SchedulerError(422, str(err), err.setting) from None
    await sched.db(sched.store.set_quota, quota)
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
    if not await sched.db(sched.store.delete_quota, kind, subject, unit):
        raise SchedulerError(404, f"no {unit} quota for {kind} {subject}")
    return await _uses(sched)


@router.get("/quotas", response_model=QuotasOut, tags=["qhpc"], responses=error_responses(401))
async def get_my_quotas(who: User, sched: SchedulerDep) -> dict[str, Any]:
    """The quotas the caller's jobs are charged to (theirs, and those of the accounts of
    their open sessions), with their use."""
    return await _uses(sched, who.user_id)
