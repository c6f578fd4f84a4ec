"""What the API shows: the scheduler's rows and state as the documents of ``schemas.py``.

Each function builds the dict one response model checks (``job_view`` is ``JobOut``, and so
on) from rows and plain snapshots (the frozen dataclasses below), never from the live
scheduler: the services take the snapshots, the routes return the documents and FastAPI
validates them against the published schema, and the event stream sends the same documents.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from qhpc_lab.scheduler.policy import LoopPause, PolicyConfig, QueuedJob
from qhpc_lab.scheduler.quotas import Quota, period_bounds
from qhpc_lab.scheduler.store import (
    AccountingQuery,
    JobRow,
    ReservationRow,
    SessionRow,
    SweepSetRow,
)
from qhpc_lab.scheduler.timeline import story
from qhpc_lab.wire.documents import job_document
from qhpc_lab.wire.times import iso_time


@dataclasses.dataclass(frozen=True)
class DispatcherHealth:
    """Whether the dispatcher is making progress, and if not, why and since when."""

    ok: bool = True
    reason: str | None = None
    """``store_unavailable`` or ``dispatcher_error`` while stalled."""
    detail: str | None = None
    since: float | None = None


@dataclasses.dataclass(frozen=True)
class Holds:
    """What keeps jobs from running now, as the timeline names its holds."""

    down: bool = False
    """The device is DOWN (OFFLINE): nothing runs, the running job's chunk stalls too."""
    maintenance: bool = False
    """Submissions are closed (``/accessible``): nothing runs."""
    draining: bool = False
    """An operator drains the QPU: only started jobs run."""
    loop_until: float | None = None
    """The QPU is held for a hybrid loop until then at the latest (policy rule 9)."""


@dataclasses.dataclass(frozen=True)
class Place:
    """Where an active job stands: ``position`` 0 while it has started (status RUNNING,
    between its chunks too), else its place among the waiting jobs (1 = next to start);
    seconds until it ends, None while a hold keeps it (a guess at when it is lifted)."""

    position: int | None = None
    eta_s: float | None = None
    held_by: str | None = None


NOWHERE = Place()
"""A job that is not active: no place, no end estimate."""


@dataclasses.dataclass(frozen=True)
class SlotUse:
    """QPU slots: the site's total (0: not managed) and what open sessions hold."""

    total: int
    used: int


@dataclasses.dataclass(frozen=True)
class DeviceSnapshot:
    """The device, its queue and its dispatcher at one instant, for ``/device``."""

    now: float
    name: str
    profile: str
    formats: tuple[str, ...]
    state: str
    accessible: bool
    draining: bool
    message: str
    calibrated_at: float
    calibration_id: int
    calibrates: bool
    next_calibration_at: float
    calibration_duration_s: float
    time_per_shot_s: float
    chunk_shots: int
    cell_job_class: str | None
    queue_depth: dict[str, int]
    running: QueuedJob | None
    """The job whose chunk is on the device now."""
    health: DispatcherHealth
    next_reservation: ReservationRow | None
    loop_hold: tuple[LoopPause, float] | None
    """The hybrid loop the QPU is held for, and until when (docs/policy.md rule 9)."""


@dataclasses.dataclass(frozen=True)
class ReplicaSnapshot:
    """An HA replica: its name, whether it leads, its lease's epoch and since when."""

    name: str
    leading: bool
    epoch: int
    since: float | None


@dataclasses.dataclass(frozen=True)
class EstimateSnapshot:
    """Where a would-be job stands (``GET /estimate``), and the queue as its caller sees it."""

    place: Place
    run_s: float
    calibration_age_s: float
    queue: dict[str, Any]


def reservation_view(row: ReservationRow, now: float) -> dict[str, Any]:
    return {**dataclasses.asdict(row), "active": row.starts_at <= now < row.ends_at}


def held_by(holds: Holds, started: bool, position: int | None) -> str | None:
    """What keeps an active job from running, as the timeline names its holds: a device DOWN
    stalls every job, maintenance runs nothing (a started job's chunk in flight ends, then it
    waits), a drain runs only jobs that have started, a loop hold keeps every waiting job
    idle; None when only the queue ahead does."""
    if position is None:
        return None
    if holds.down:
        return "down"
    if holds.maintenance:
        return "maintenance"
    if holds.draining and not started:
        return "draining"
    if holds.loop_until is not None:
        return "loop_hold"
    return None


def job_view(job: JobRow, place: Place = NOWHERE) -> dict[str, Any]:
    """A job (``JobOut``) standing at ``place``: the wire contract builds it from the row."""
    return job_document(job, place.position, place.eta_s, place.held_by)


def sweep_sets_view(job: JobRow, sets: list[SweepSetRow]) -> dict[str, Any]:
    """A sweep's results per set (``SweepSetsOut``)."""
    return {
        "job_id": job.id,
        "status": job.status,
        "sets": [
            {
                "index": s.index,
                "shots": s.shots,
                "variables": s.variables,
                "shots_done": s.shots_done,
                "counter": s.counts,
            }
            for s in sets
        ],
    }


def logs_view(job: JobRow, timeline: list[dict[str, Any]]) -> dict[str, str]:
    """A job's log (``LogsOut``): Warden's one summary line, then the job's timeline told as
    text (:func:`qhpc_lab.scheduler.timeline.story`)."""
    return {"logs": story(job, timeline)}


def session_view(session: SessionRow) -> dict[str, Any]:
    """A session (``SessionOut``); ``scheduler_job_id`` is Warden's name of the Slurm job."""
    return {
        "id": session.id,
        "user_id": session.user_id,
        "slurm_job_id": session.slurm_job_id,
        "scheduler_job_id": session.slurm_job_id,
        "qpu_slots": session.qpu_slots,
        "created_at": iso_time(session.created_at),
        "revoked_at": iso_time(session.revoked_at),
        "revoke_reason": session.revoke_reason,
        "revocation_reason": session.revoke_reason,
        "idle_expires_at": iso_time(session.idle_expires_at),
        "expires_at": iso_time(session.expires_at),
        "slurm_account": session.slurm_account,
    }


def quotas_view(uses: list[tuple[Quota, float]], now: float) -> dict[str, Any]:
    """Quotas and their use in the period holding ``now`` (``QuotasOut``)."""
    shown = []
    for quota, used in uses:
        start, resets_at = period_bounds(quota, now)
        shown.append(
            {
                **dataclasses.asdict(quota),
                "used": used,
                "remaining": max(0.0, quota.budget - used),
                "period_start": iso_time(start),
                "resets_at": iso_time(resets_at),
            }
        )
    return {"quotas": shown}


def qpu_slots_view(slots: SlotUse) -> dict[str, int] | None:
    """QPU slot capacity (``QpuSlotsOut``), Warden's names; None when slots are not managed."""
    if not slots.total:
        return None
    return {
        "qpu_slots_total": slots.total,
        "qpu_slots_used": slots.used,
        "qpu_slots_available": max(slots.total - slots.used, 0),
    }


def accessible_view(accessible: bool, message: str, slots: SlotUse) -> dict[str, Any]:
    """Whether submissions are open, and the QPU slots when managed (``AccessibleOut``)."""
    return {"is_accessible": accessible, "message": message, **(qpu_slots_view(slots) or {})}


def dispatcher_view(health: DispatcherHealth) -> dict[str, Any]:
    """The dispatcher's health (``DispatcherOut``), in ``/health`` and ``/device``."""
    return {
        "ok": health.ok,
        "reason": health.reason,
        "detail": health.detail,
        "since": iso_time(health.since),
    }


def replica_view(replica: ReplicaSnapshot | None) -> dict[str, Any] | None:
    """An HA replica as ``/health`` shows it; None for the single daemon."""
    if replica is None:
        return None
    return {
        "name": replica.name,
        "leading": replica.leading,
        "epoch": replica.epoch,
        "since": iso_time(replica.since) if replica.leading else None,
    }


def device_info_view(
    device: DeviceSnapshot, user_id: str | None = None, admin: bool = False
) -> dict[str, Any]:
    """The device as ``/device`` shows it (``DeviceOut``); the running job's id and the held
    loop's name only to their owner or an administrator."""
    now, running, upcoming = device.now, device.running, device.next_reservation
    due = device.next_calibration_at
    return {
        "name": device.name,
        "profile": device.profile,
        "formats": list(device.formats),
        "state": device.state,
        "accessible": device.accessible,
        "draining": device.draining,
        "message": device.message,
        "calibrated_at": device.calibrated_at,
        "calibration_id": device.calibration_id,
        "calibration_age_s": round(now - device.calibrated_at, 3),
        "next_calibration_at": due if device.calibrates else None,
        "next_calibration_in_s": round(max(0.0, due - now), 3) if device.calibrates else None,
        "calibration_duration_s": device.calibration_duration_s,
        "time_per_shot_s": device.time_per_shot_s,
        "chunk_shots": device.chunk_shots,
        "cell_job_class": device.cell_job_class,
        "queue_depth": dict(device.queue_depth),
        "running": None if running is None else {"job_class": running.job_class},
        "running_job": running.id
        if running is not None and (admin or running.user_id == user_id)
        else None,
        "dispatcher": dispatcher_view(device.health),
        "next_reservation": None if upcoming is None else reservation_view(upcoming, now),
        "held_for_loop": _loop_hold_view(device.loop_hold, user_id, admin),
    }


def _loop_hold_view(
    hold: tuple[LoopPause, float] | None, user_id: str | None, admin: bool
) -> dict[str, Any] | None:
    """The hybrid loop the QPU is held for (docs/policy.md rule 9); its id only to its
    owner or an administrator."""
    if hold is None:
        return None
    pause, until = hold
    visible = admin or pause.user_id == user_id
    return {"loop": pause.loop if visible else None, "until": until}


def resource_status_view(
    device: DeviceSnapshot,
    waiting: int,
    slots: SlotUse,
    queue_position: int | None = None,
) -> dict[str, Any]:
    """The device as QRMI's ``ResourceStatus`` (``ResourceStatusOut``); ``waiting``: the
    active jobs not started."""
    reason = {"MAINTENANCE": "maintenance", "CALIBRATING": "calibration", "OFFLINE": "down"}.get(
        device.state
    )
    reason = reason or ("draining" if device.draining else None)
    status = {"maintenance": "offline", "down": "offline", None: "online"}.get(reason, "paused")
    managed = qpu_slots_view(slots)
    return {
        "status": status,
        "status_reason": reason,
        "healthy": device.health.ok,
        "busy": sum(device.queue_depth.values()) > 0,
        "capacity": managed
        and {
            "available_slots": managed["qpu_slots_available"],
            "max_slots": managed["qpu_slots_total"],
        },
        "pending_job_count": waiting,
        "queue_position": queue_position,
    }


def status_view(waiting: int, running: JobRow | None, sessions: list[SessionRow]) -> dict[str, Any]:
    """Warden's ``GET /status`` (``StatusOut``): waiting jobs, the running one, open sessions."""
    return {
        "pending_jobs_count": waiting,
        "current_job": running
        and {
            "id": running.id,
            "session_id": running.session_id,
            "user_id": running.user_id,
            "started_at": iso_time(running.started_at),
            "backend_id": None,
        },
        "open_sessions": [
            {
                "id": s.id,
                "user_id": s.user_id,
                "created_at": iso_time(s.created_at),
                "slurm_job_id": s.slurm_job_id,
            }
            for s in sessions
        ],
    }


def estimate_view(estimate: EstimateSnapshot) -> dict[str, Any]:
    """``GET /estimate`` (``EstimateOut``): a hold gives no ETA, as for a queued job."""
    return {
        "position": estimate.place.position,
        "done_in_s": estimate.place.eta_s,
        "run_s": estimate.run_s,
        "held_by": estimate.place.held_by,
        "calibration_age_s": estimate.calibration_age_s,
        "queue": estimate.queue,
    }


def page_view(query: AccountingQuery, count: int, total: int) -> dict[str, int]:
    """Warden's pagination: ``start`` clamped to ``total``, ``end - start == count``."""
    start = min(query.offset, total)
    return {"total": total, "start": start, "end": start + count}


def _job_stats(row: dict[str, Any]) -> dict[str, int]:
    return {
        "count": int(row["count"]),
        "execution_time": int(row["execution_time"]),
        "wait_time": int(row["wait_time"]),
        "shots": int(row["shots"]),
    }


def users_accounting_view(
    query: AccountingQuery,
    total: int,
    summaries: list[dict[str, Any]],
    per_status: list[dict[str, Any]],
) -> dict[str, Any]:
    """Warden's ``GET /accounting`` (``UsersAccountingOut``) from the store's rows."""
    jobs: dict[str, dict[str, Any]] = {
        s["user_id"]: {
            "count": 0,
            "execution_time": 0,
            "wait_time": 0,
            "shots": 0,
            "per_status": {},
        }
        for s in summaries
    }
    for row in per_status:
        stats, summary = _job_stats(row), jobs[row["user_id"]]
        summary["per_status"][row["status"]] = stats
        for key, value in stats.items():
            summary[key] += value
    data = [
        {
            "user_id": s["user_id"],
            "sessions": {"count": s["count"], "total_duration": int(s["total_duration"])},
            "jobs": jobs[s["user_id"]],
        }
        for s in summaries
    ]
    return {"data": data, "pagination": page_view(query, len(data), total)}


def sessions_accounting_view(
    query: AccountingQuery, total: int, rows: list[dict[str, Any]]
) -> dict[str, Any]:
    """Warden's ``GET /accounting/sessions`` (``SessionsAccountingOut``)."""
    data = [
        {
            "id": r["id"],
            "user_id": r["user_id"],
            "created_at": iso_time(r["created_at"]),
            "revoked_at": iso_time(r["revoked_at"]),
            "slurm_job_id": r["slurm_job_id"],
            "total_duration": int(r["total_duration"] or 0),
            "jobs_count": int(r["jobs_count"]),
        }
        for r in rows
    ]
    return {"data": data, "pagination": page_view(query, len(data), total)}


def jobs_accounting_view(
    query: AccountingQuery, total: int, rows: list[dict[str, Any]]
) -> dict[str, Any]:
    """Warden's ``GET /accounting/jobs`` (``JobsAccountingOut``)."""
    data = [
        {
            **r,
            "execution_time": int(r["execution_time"]),
            "wait_time": int(r["wait_time"]),
            "qpu_seconds": round(r["qpu_seconds"], 6),
        }
        for r in rows
    ]
    return {"data": data, "pagination": page_view(query, len(data), total)}


def policy_view(policy: PolicyConfig) -> dict[str, Any]:
    """The policy settings (``PolicyOut``), also what the store keeps across restarts."""
    return dataclasses.asdict(policy)
