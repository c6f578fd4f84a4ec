"""The operator's routes under ``/admin``: policy, accounting, calibration and drains."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter

from qhpc_lab.scheduler.errors import ADMIN_BODY_ERRORS, error_responses
from qhpc_lab.scheduler.routes.deps import Admin, SchedulerDep
from qhpc_lab.scheduler.schemas import AccountingOut, DeviceOut, PolicyIn, PolicyOut, TimeBound
from qhpc_lab.scheduler.views import policy_view

router = APIRouter(prefix="/admin", tags=["admin"])


@router.get("/policy", response_model=PolicyOut, responses=error_responses(401, 403, 422))
async def get_policy(_who: Admin, sched: SchedulerDep) -> dict[str, Any]:
    return policy_view(sched.policy)


@router.put("/policy", response_model=PolicyOut, responses=ADMIN_BODY_ERRORS)
async def put_policy(body: PolicyIn, _who: Admin, sched: SchedulerDep) -> dict[str, Any]:
    return policy_view(await sched.set_policy(body.model_dump(exclude_none=True)))


@router.get("/accounting", response_model=AccountingOut, responses=error_responses(401, 403, 422))
async def get_accounting(
    _who: Admin,
    sched: SchedulerDep,
    since: TimeBound = None,
    until: TimeBound = None,
    by: Literal["user", "slurm_job"] = "user",
) -> dict[str, Any]:
    """Shots, QPU-seconds and waits per user or Slurm job, for jobs submitted in
    [since, until) (Unix times; open-ended when left out)."""
    rows = await sched.reports.usage(since, until, by)
    return {"since": since, "until": until, "by": by, "rows": rows}


@router.post("/calibrate", response_model=DeviceOut, responses=error_responses(401, 403, 422))
async def calibrate(_who: Admin, sched: SchedulerDep) -> dict[str, Any]:
    await sched.request_calibration()
    return sched.device_info()


@router.post("/drain", response_model=DeviceOut, responses=error_responses(401, 403, 422))
async def drain(_who: Admin, sched: SchedulerDep) -> dict[str, Any]:
    await sched.set_draining(True)
    return sched.device_info()


@router.post("/resume", response_model=DeviceOut, responses=error_responses(401, 403, 422))
async def resume(_who: Admin, sched: SchedulerDep) -> dict[str, Any]:
    await sched.set_draining(False)
    return sched.device_info()
