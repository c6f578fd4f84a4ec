"""The operator's QPU reservations under ``/admin/reservations`` (docs/policy.md rule 8)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from qhpc_lab.scheduler.errors import ADMIN_BODY_ERRORS, error_responses
from qhpc_lab.scheduler.routes.deps import Admin, SchedulerDep
from qhpc_lab.scheduler.schemas import ReservationId, ReservationIn, ReservationOut
from qhpc_lab.scheduler.views import reservation_view
from qhpc_lab.wire.times import unix_time

router = APIRouter(prefix="/admin/reservations", tags=["admin"])


@router.post(
    "",
    response_model=ReservationOut,
    status_code=201,
    responses={**ADMIN_BODY_ERRORS, **error_responses(409)},
)
async def post_reservation(body: ReservationIn, who: Admin, sched: SchedulerDep) -> dict[str, Any]:
    """Reserve the whole QPU for a user, a Slurm account or a Slurm job: inside the window
    only its work runs. Refused (422) unless it ends after it starts and in the future, and
    (409) when it overlaps another reservation."""
    starts_at, ends_at = unix_time(body.starts_at), unix_time(body.ends_at)
    assert starts_at is not None and ends_at is not None
    owner = str(body.owner)
    row = await sched.add_reservation(body.owner_kind, owner, starts_at, ends_at, who.user_id)
    return reservation_view(row, sched.clock())


@router.get("", response_model=list[ReservationOut], responses=error_responses(401, 403, 422))
async def get_reservations(
    _who: Admin, sched: SchedulerDep, ended: bool = False
) -> list[dict[str, Any]]:
    """Reservations by start: those not ended yet, or with ``ended`` every one kept."""
    rows = await sched.reservations(ended)
    now = sched.clock()
    return [reservation_view(row, now) for row in rows]


@router.delete(
    "/{reservation_id}",
    response_model=ReservationOut,
    responses=error_responses(401, 403, 404, 422),
)
async def delete_reservation(
    reservation_id: ReservationId, _who: Admin, sched: SchedulerDep
) -> dict[str, Any]:
    """Cancel a reservation: the work it kept out plans as if it had never been."""
    return reservation_view(await sched.cancel_reservation(reservation_id), sched.clock())
