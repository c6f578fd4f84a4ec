"""``/events``: the server-sent event stream of jobs, the device and the queue."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, Request
from sse_starlette import EventSourceResponse, ServerSentEvent

from qhpc_lab.eventstream import HEARTBEAT_S, StreamEvent, server_sent_event
from qhpc_lab.scheduler.errors import error_responses
from qhpc_lab.scheduler.routes.deps import SchedulerDep, User

router = APIRouter()


@router.get(
    "/events",
    tags=["qhpc"],
    response_class=EventSourceResponse,
    responses=error_responses(401, 422, 429),
)
async def get_events(
    request: Request,
    who: User,
    sched: SchedulerDep,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=32)] = None,
) -> EventSourceResponse:
    """Server-sent events: ``job`` (the caller's jobs), ``device``, ``queue`` (coalesced,
    personal: own positions and ETAs, anonymous aggregates) and ``reset``; see
    docs/scheduler.md. Reconnect with ``Last-Event-ID`` to resume. A user's streams are
    capped (``max_streams_per_user``: 429)."""
    request.app.state.caller_limits.open_stream(request.scope, who.user_id, who.admin)
    events = sched.bus.subscribe(
        who.user_id, who.admin, last_event_id, sched.device_info(who.user_id, who.admin)
    )
    return EventSourceResponse(
        sched.metrics.track_subscriber(_sse(events)),
        ping=HEARTBEAT_S,
        sep="\n",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _sse(events: AsyncIterator[StreamEvent]) -> AsyncIterator[ServerSentEvent]:
    async for event in events:
        yield server_sent_event(event)
