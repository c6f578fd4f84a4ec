"""What the API shows: the scheduler's rows and state as the documents of ``schemas.py``.

Each function builds the dict one response model checks (``job_view`` is ``JobOut``, and so
on); the routes return them and FastAPI validates them against the published schema, and the
event stream sends the same documents.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from qhpc_lab.qpu import DeviceState
from qhpc_lab.scheduler.policy import PolicyConfig
from qhpc_lab.scheduler.quotas import Quota, period_bounds
from qhpc_lab.scheduler.store import AccountingQuery, JobRow, ReservationRow, SessionRow
from qhpc_lab.scheduler.timeline import story

if TYPE_CHECKING:
    from qhpc_lab.scheduler.core import Scheduler


def iso_time(timestamp: float | None) -> str | None:
    """RFC 3339 in UTC, the form Warden clients parse."""
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).isoformat().replace("+00:00", "Z")


def unix_time(moment: datetime | None) -> float | None:
    """A request's date-time as a Unix time; one without an offset is UTC, as Warden reads it."""
    if moment is None:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def reservation_view(row: ReservationRow, now: float) -> dict[str, Any]:
    return {**dataclasses.asdict(row), "active": row.starts_at <= now < row.ends_at}


def held_by(scheduler: Scheduler, started: bool, position: int | None) -> str | None:
    """What keeps an active job from running, as the timeline names its holds: maintenance
    runs nothing, nor does a device DOWN (which also stalls the running job's chunk); a drain
    runs only jobs that have started; None when only the queue ahead does."""
    if position is None:
        return None
    if scheduler.driver.state is DeviceState.OFFLINE:
        return "down"
    if position == 0:
        return None
    if not scheduler.accessible:
        return "maintenance"
    if scheduler.draining and not started:
        return "draining"
    return None


def job_view(
    scheduler: Scheduler, job: JobRow, estimates: dict[int, tuple[int, float]] | None = None
) -> dict[str, Any]:
    """A job (``JobOut``): Warden's fields first, then the extensions. A held job keeps its
    position but shows no ETA: it would be a guess at when the operator lifts the hold."""
    position, eta = scheduler.position(job.id, estimates)
    hold = held_by(scheduler, job.shots_done > 0, position)
    return {
        "id": job.id,
        "user_id": job.user_id,
        "created_at": iso_time(job.created_at),
        "status": job.status,
        "results": job.results,
        "session_id": job.session_id,
        "slurm_job_id": job.slurm_job_id,
        "name": job.name,
        "format": job.format,
        "job_class": job.job_class,
        "shots": job.shots,
        "shots_done": job.shots_done,
        "position": position,
        "eta_s": None if hold else eta,
        "held_by": hold,
        "started_at": iso_time(job.started_at),
        "finished_at": iso_time(job.finished_at),
        "qpu_seconds": round(job.qpu_seconds, 6),
        "emulator_seconds": round(job.emulator_seconds, 6),
        "calibration_age_s": job.calibration_age_s,
        "calibrations": [calibration_range_view(entry) for entry in job.calibrations],
        "single_calibration": job.single_calibration,
        "loop": job.loop,
        "think_time_s": job.think_time_s,
        "error": job.error,
    }


def calibration_range_view(entry: dict[str, Any]) -> dict[str, Any]:
    """One of a job's calibration ranges (``CalibrationRangeOut``) as the store keeps it."""
    return {
        **entry,
        "calibrated_at": iso_time(entry["calibrated_at"]),
        "age_s_first": round(entry["age_s_first"], 3),
        "age_s_last": round(entry["age_s_last"], 3),
    }


def job_views(scheduler: Scheduler, jobs: list[JobRow]) -> list[dict[str, Any]]:
    """Many jobs: past a few active ones, one pass over the queue instead of one lookup each."""
    estimates = scheduler.estimates(jobs)
    return [job_view(scheduler, job, estimates) for job in jobs]


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


def qpu_slots_view(scheduler: Scheduler) -> dict[str, int] | None:
    """QPU slot capacity (``QpuSlotsOut``), Warden's names; None when slots are not managed."""
    total = scheduler.config.qpu_slots_total
    if not total:
        return None
    used = scheduler.qpu_slots_used
    return {
        "qpu_slots_total": total,
        "qpu_slots_used": used,
        "qpu_slots_available": max(total - used, 0),
    }


def accessible_view(scheduler: Scheduler) -> dict[str, Any]:
    """Whether submissions are open, and the QPU slots when managed (``AccessibleOut``)."""
    return {
        "is_accessible": scheduler.accessible,
        "message": scheduler.message,
        **(qpu_slots_view(scheduler) or {}),
    }


def resource_status_view(scheduler: Scheduler, queue_position: int | None = None) -> dict[str, Any]:
    """The device as QRMI's ``ResourceStatus`` (``ResourceStatusOut``)."""
    info = scheduler.device_info()
    reason = {"MAINTENANCE": "maintenance", "CALIBRATING": "calibration", "OFFLINE": "down"}.get(
        info["state"]
    )
    reason = reason or ("draining" if scheduler.draining else None)
    status = {"maintenance": "offline", "down": "offline", None: "online"}.get(reason, "paused")
    slots = qpu_slots_view(scheduler)
    waiting = _waiting(info)
    return {
        "status": status,
        "status_reason": reason,
        "healthy": scheduler.health.ok,
        "busy": info["running"] is not None or waiting > 0,
        "capacity": slots
        and {
            "available_slots": slots["qpu_slots_available"],
            "max_slots": slots["qpu_slots_total"],
        },
        "pending_job_count": waiting,
        "queue_position": queue_position,
    }


def _waiting(info: dict[str, Any]) -> int:
    """Active jobs not running, from :meth:`Scheduler.device_info`."""
    return sum(info["queue_depth"].values()) - (info["running"] is not None)


def status_view(
    scheduler: Scheduler, running: JobRow | None, sessions: list[SessionRow]
) -> dict[str, Any]:
    """Warden's ``GET /status`` (``StatusOut``): waiting jobs, the running one, open sessions."""
    return {
        "pending_jobs_count": _waiting(scheduler.device_info()),
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
