"""What the API shows: the scheduler's rows and state as the documents of ``schemas.py``.

Each function builds the dict one response model checks (``job_view`` is ``JobOut``, and so
on); the routes return them and FastAPI validates them against the published schema, and the
event stream sends the same documents.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from qhpc_lab.scheduler.policy import PolicyConfig
from qhpc_lab.scheduler.store import JobRow, SessionRow
from qhpc_lab.scheduler.timeline import story

if TYPE_CHECKING:
    from qhpc_lab.scheduler.core import Scheduler


def iso_time(timestamp: float | None) -> str | None:
    """RFC 3339 in UTC, the form Warden clients parse."""
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).isoformat().replace("+00:00", "Z")


def held_by(scheduler: Scheduler, started: bool) -> str | None:
    """What keeps a waiting job from running, as the timeline names its holds: maintenance
    runs nothing, a drain only jobs that have started; None when only the queue ahead does."""
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
    hold = held_by(scheduler, job.shots_done > 0) if position else None
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
    }


def accessible_view(scheduler: Scheduler) -> dict[str, Any]:
    """Whether submissions are open (``AccessibleOut``)."""
    return {"is_accessible": scheduler.accessible, "message": scheduler.message}


def policy_view(policy: PolicyConfig) -> dict[str, Any]:
    """The policy settings (``PolicyOut``), also what the store keeps across restarts."""
    return dataclasses.asdict(policy)
