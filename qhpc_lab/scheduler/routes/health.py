"""``/health`` and ``/metrics``: what probes and Prometheus read, answered from memory."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import PlainTextResponse

from qhpc_lab.scheduler.errors import RETRY_AFTER_HEADER, ErrorOut, error_responses
from qhpc_lab.scheduler.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from qhpc_lab.scheduler.routes.deps import SchedulerDep
from qhpc_lab.scheduler.schemas import HealthOut
from qhpc_lab.scheduler.views import dispatcher_view, replica_view

router = APIRouter(tags=["qhpc"])

STALLED_RETRY_AFTER_S = 5
"""What a stalled dispatcher's 503 tells probes to wait before asking again."""


@router.get(
    "/health",
    response_model=HealthOut,
    responses={
        **error_responses(),
        503: {
            "model": HealthOut | ErrorOut,
            "description": "The dispatcher is stalled (dispatcher says why and since when), "
            "or the server is at its connection limit.",
            "headers": RETRY_AFTER_HEADER,
        },
    },
)
async def health(response: Response, sched: SchedulerDep) -> dict[str, Any]:
    """200 while the dispatcher makes progress; 503 with the reason while it is stalled
    (the database unreachable, say). The device's state beside it: a QPU that says DOWN stops
    dispatching but is no fault of the daemon's. Answered from memory: it never waits on the
    store."""
    answer = {
        "dispatcher": dispatcher_view(sched.health),
        "replica": replica_view(sched.replica()),
        "device": {"state": sched.device_state.value, "message": sched.device_message},
    }
    if sched.health.ok:
        return {"status": "ok", **answer}
    response.status_code = 503
    response.headers["Retry-After"] = str(STALLED_RETRY_AFTER_S)
    return {"status": "stalled", **answer}


@router.get("/metrics", response_class=PlainTextResponse, responses=error_responses())
async def get_metrics(sched: SchedulerDep) -> Response:
    """Prometheus text exposition (docs/operations.md lists the metrics)."""
    snapshot = await sched.metrics_snapshot()
    return Response(sched.metrics.render(snapshot), media_type=METRICS_CONTENT_TYPE)
