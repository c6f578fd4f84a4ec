"""Jobs: Warden's submission, listing, lookup, logs and cancellation, and the timeline."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request, Response

from qhpc_lab import tracing
from qhpc_lab.scheduler.core import JobRow
from qhpc_lab.scheduler.errors import SUBMIT_ERRORS, error_responses
from qhpc_lab.scheduler.routes.deps import SchedulerDep, User, WardenSession
from qhpc_lab.scheduler.schemas import (
    MAX_SWEEP_SETS,
    JobIn,
    JobOut,
    LogsOut,
    StatusFilter,
    SweepSetsOut,
    TimelineOut,
)
from qhpc_lab.scheduler.views import logs_view, sweep_sets_view

router = APIRouter()

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        max_length=128,
        description="A retried submission with the same key returns the first job.",
    ),
]


@router.post(
    "/jobs",
    response_model=JobOut,
    tags=["warden"],
    responses=SUBMIT_ERRORS,
)
async def post_job(
    request: Request,
    body: JobIn,
    who: User,
    sched: SchedulerDep,
    session_id: WardenSession = None,
    idempotency_key: IdempotencyKey = None,
) -> dict[str, Any]:
    await sched.check_session(session_id, who.user_id, who.admin)  # before the program (Warden)
    program = await sched.program(
        body.sequence, body.format, body.shots, body.name, body.variables or {}
    )
    sweep = None
    if body.sweep is not None:
        sets = [(point.shots or body.shots, point.variables) for point in body.sweep]
        program, sweep = await sched.sweep(program, sets)
    job = await sched.submit(
        who.user_id,
        who.admin,
        session_id,
        program,
        body.job_class,
        body.max_calibration_age_s,
        idempotency_key,
        tracing.extract(request.headers),
        single_calibration=body.single_calibration,
        loop=body.loop,
        think_time_s=body.think_time_s,
        sweep=sweep,
    )
    return sched.job_view(job)


@router.get(
    "/jobs", response_model=list[JobOut], tags=["warden"], responses=error_responses(401, 422)
)
async def get_jobs(
    request: Request,
    response: Response,
    who: User,
    sched: SchedulerDep,
    status: StatusFilter = None,
    limit: Annotated[int | None, Query(ge=1, le=10_000)] = None,
    before_id: Annotated[int | None, Query(ge=1)] = None,
) -> list[dict[str, Any]]:
    """All of the caller's jobs, newest first, as Warden lists them. ``limit`` asks for a
    page; a full page carries a ``Link: <...>; rel="next"`` header to the next one."""
    jobs = await sched.list_jobs(who.user_id, who.admin, status, limit, before_id)
    if limit is not None and len(jobs) == limit:
        following = request.url.include_query_params(before_id=jobs[-1].id)
        response.headers["Link"] = f'<{following}>; rel="next"'
    return sched.job_views(jobs)


async def _visible_job(job_id: int, who: User, sched: SchedulerDep) -> JobRow:
    return await sched.get_job(job_id, who.user_id, who.admin)


VisibleJob = Annotated[JobRow, Depends(_visible_job)]
"""The job of the path, when the caller may see it (its owner or an administrator); else 404."""
BY_ID = error_responses(401, 404, 422)


@router.get("/jobs/{job_id}", response_model=JobOut, tags=["warden"], responses=BY_ID)
async def get_job(job: VisibleJob, sched: SchedulerDep) -> dict[str, Any]:
    return sched.job_view(job)


@router.get("/jobs/{job_id}/logs", response_model=LogsOut, tags=["warden"], responses=BY_ID)
async def get_logs(job: VisibleJob, sched: SchedulerDep) -> dict[str, str]:
    """The job's story as text: its summary, then its timeline (what QRMI shows users)."""
    return logs_view(job, sched.timelines.view(job))


@router.get("/jobs/{job_id}/timeline", response_model=TimelineOut, tags=["qhpc"], responses=BY_ID)
async def get_timeline(job: VisibleJob, sched: SchedulerDep) -> dict[str, Any]:
    """Why the job waited: its chunks, the classes that ran while it waited, and the
    calibrations and holds it waited through (docs/operations.md)."""
    return {"job_id": job.id, "status": job.status, "entries": sched.timelines.view(job)}


@router.get("/jobs/{job_id}/sets", response_model=SweepSetsOut, tags=["qhpc"], responses=BY_ID)
async def get_sets(
    request: Request,
    response: Response,
    job: VisibleJob,
    sched: SchedulerDep,
    limit: Annotated[int | None, Query(ge=1, le=MAX_SWEEP_SETS)] = None,
    after_index: Annotated[int, Query(ge=-1)] = -1,
) -> dict[str, Any]:
    """A sweep's results per set, in the order submitted (docs/scheduler.md, Sweeps): a page
    of the sets after ``after_index``, at most ``limit`` and the site's page; a page that
    sets remain after carries a ``Link: <...>; rel="next"`` header to the next one."""
    sets = await sched.sweep_sets(job, after_index, limit)
    if sets and job.sets is not None and sets[-1].index < job.sets - 1:
        following = request.url.include_query_params(after_index=sets[-1].index)
        response.headers["Link"] = f'<{following}>; rel="next"'
    return sweep_sets_view(job, sets)


@router.post("/jobs/{job_id}/cancel", response_model=JobOut, tags=["warden"], responses=BY_ID)
async def cancel_job(job_id: int, who: User, sched: SchedulerDep) -> dict[str, Any]:
    reason = "canceled by an administrator" if who.admin else "canceled by user"
    return sched.job_view(await sched.cancel(job_id, who.user_id, who.admin, reason))
