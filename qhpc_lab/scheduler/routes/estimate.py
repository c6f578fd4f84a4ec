"""``GET /estimate``: when a job submitted now would end, for clients choosing a QPU."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import FiniteFloat

from qhpc_lab.scheduler.errors import error_responses
from qhpc_lab.scheduler.policy import MAX_SECONDS
from qhpc_lab.scheduler.routes.deps import Anyone, SchedulerDep
from qhpc_lab.scheduler.schemas import MAX_SHOTS, EstimateOut, Name
from qhpc_lab.scheduler.views import estimate_view

router = APIRouter()


@router.get(
    "/estimate", response_model=EstimateOut, tags=["qhpc"], responses=error_responses(401, 422)
)
async def get_estimate(
    who: Anyone,
    sched: SchedulerDep,
    shots: Annotated[int, Query(ge=1, le=MAX_SHOTS)],
    job_class: Annotated[Name | None, Query(max_length=32)] = None,
    max_calibration_age_s: Annotated[FiniteFloat | None, Query(gt=0, le=MAX_SECONDS)] = None,
) -> dict[str, Any]:
    """Where a job of ``shots`` would stand if submitted now, in the caller's fair-share
    account: its place in line and when it would end (the queue ahead, calibrations and its
    own run); nothing is queued. A hold (maintenance, a drain) gives no ETA, as for a queued
    job. ``queue``: the queue as the caller's ``queue`` event shows it (its length, the
    caller's own jobs' places). The program is not needed: a client checks it against
    ``/qpu/specs`` itself."""
    return estimate_view(
        sched.estimate(who and who.user_id, shots, job_class, max_calibration_age_s)
    )
