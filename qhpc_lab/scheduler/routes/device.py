"""The device: Warden's ``/accessible`` and ``/qpu/specs``, and ``/device``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from qhpc_lab.scheduler.errors import ADMIN_BODY_ERRORS, error_responses
from qhpc_lab.scheduler.routes.deps import Admin, Anyone, SchedulerDep
from qhpc_lab.scheduler.schemas import AccessibleIn, AccessibleOut, DeviceOut, SpecsOut
from qhpc_lab.scheduler.views import accessible_view

router = APIRouter()


@router.get(
    "/accessible",
    response_model=AccessibleOut,
    response_model_exclude_none=True,  # slot fields only when slots are managed
    tags=["warden"],
    responses=error_responses(),
)
async def get_accessible(sched: SchedulerDep) -> dict[str, Any]:
    return accessible_view(sched.accessible, sched.message, sched.slot_use())


@router.post(
    "/accessible",
    response_model=AccessibleOut,
    response_model_exclude_none=True,
    tags=["warden", "admin"],
    responses=ADMIN_BODY_ERRORS,
)
async def post_accessible(body: AccessibleIn, _who: Admin, sched: SchedulerDep) -> dict[str, Any]:
    await sched.set_accessible(body.is_accessible, body.message)
    return accessible_view(sched.accessible, sched.message, sched.slot_use())


@router.get("/qpu/specs", response_model=SpecsOut, tags=["warden"], responses=error_responses())
async def get_specs(sched: SchedulerDep) -> dict[str, Any]:
    """Warden's ``specs`` as QRMI reads it, and beside it the formats the device runs."""
    profile = sched.profile
    return {"specs": profile.spec.json, "formats": list(profile.formats)}


@router.get("/device", response_model=DeviceOut, tags=["qhpc"], responses=error_responses(401))
async def get_device(who: Anyone, sched: SchedulerDep) -> dict[str, Any]:
    """The device, queue depth and dispatcher health; the running job's id only to its
    owner or an administrator (an anonymous caller sees its class)."""
    return sched.device_info(who and who.user_id, bool(who and who.admin))
