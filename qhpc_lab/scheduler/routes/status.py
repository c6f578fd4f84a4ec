"""Warden's ``/status`` and ``/qpu-slots``, and QRMI's resource status at ``/resource-status``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from qhpc_lab.scheduler.errors import error_responses
from qhpc_lab.scheduler.refusal import SchedulerError
from qhpc_lab.scheduler.routes.deps import Admin, Anyone, SchedulerDep
from qhpc_lab.scheduler.schemas import QpuSlotsOut, ResourceStatusOut, StatusOut
from qhpc_lab.scheduler.views import qpu_slots_view, resource_status_view, status_view

router = APIRouter()


@router.get(
    "/status",
    response_model=StatusOut,
    tags=["warden", "admin"],
    responses=error_responses(401, 403),
)
async def get_status(_who: Admin, sched: SchedulerDep) -> dict[str, Any]:
    """A live snapshot: how many jobs wait, the one running, the open sessions."""
    running = await sched.running_job()
    return status_view(sched.waiting(), running, await sched.sessions(active=True))


@router.get(
    "/qpu-slots", response_model=QpuSlotsOut, tags=["warden"], responses=error_responses(404)
)
async def get_qpu_slots(sched: SchedulerDep) -> dict[str, int]:
    """QPU slot capacity for an external scheduler's sensors; 404 when slots are not
    managed (``qpu_slots_total`` 0), as Warden answers when it has no total."""
    slots = qpu_slots_view(sched.slot_use())
    if slots is None:
        raise SchedulerError(404, "QPU slots are not configured", "qpu_slots_total")
    return slots


@router.get(
    "/resource-status",
    response_model=ResourceStatusOut,
    tags=["qhpc"],
    responses=error_responses(401, 404, 422),
)
async def get_resource_status(
    who: Anyone,
    sched: SchedulerDep,
    job_id: Annotated[int | None, Query(ge=1, lt=2**31)] = None,
) -> dict[str, Any]:
    """The device as QRMI's ``status()`` reports a resource (health, busy, capacity,
    pending jobs); with ``job_id``, that job's queue position (its owner or an
    administrator only: credentials needed)."""
    position = None
    if job_id is not None:
        if who is None:
            raise SchedulerError(404, f"job {job_id} not found")
        job = await sched.get_job(job_id, who.user_id, who.admin)
        position = sched.position(job.id)[0]
    return resource_status_view(
        sched.device_snapshot(), sched.waiting(), sched.slot_use(), position
    )
