"""HTTP API of the scheduler: Warden's routes field for field, plus qhpc extensions.

Handlers are thin: they authenticate, parse and call :class:`~qhpc_lab.scheduler.core.Scheduler`.
"""

import contextlib
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from qhpc_lab.eventstream import StreamEvent, server_sent_event
from qhpc_lab.programs import Program, ProgramError
from qhpc_lab.qpu import DeviceProfile
from qhpc_lab.qpu.emulated import EmulatedQPU
from qhpc_lab.scheduler.auth import Authenticator, AuthError, Identity, load_or_create_secret
from qhpc_lab.scheduler.config import SchedulerConfig, state_dir
from qhpc_lab.scheduler.core import (
    STORE_DOWN,
    STORE_RETRY_AFTER_S,
    Scheduler,
    SchedulerError,
    iso_time,
)
from qhpc_lab.scheduler.errors import error_response, error_responses, install_error_handling
from qhpc_lab.scheduler.schemas import (
    AccessibleIn,
    AccessibleOut,
    JobIn,
    JobOut,
    LogsOut,
    PolicyIn,
    RevokeReason,
    SessionId,
    SessionIn,
    SessionOut,
    SpecsOut,
    StatusFilter,
    TimeBound,
)
from qhpc_lab.scheduler.store import SessionRow, Store

# -- identity -------------------------------------------------------------------------------


async def _identity(
    request: Request,
    x_munge_cred: Annotated[str | None, Header()] = None,
    authorization: Annotated[str | None, Header()] = None,
) -> Identity:
    auth: Authenticator = request.app.state.authenticator
    try:
        return await auth.identify_async(x_munge_cred, authorization)
    except STORE_DOWN as err:  # the replay memory is in the store
        raise SchedulerError(
            503,
            "the scheduler's database is unavailable; try again",
            "store",
            retry_after=STORE_RETRY_AFTER_S,
        ) from err


async def _admin(who: Annotated[Identity, Depends(_identity)]) -> Identity:
    if not who.admin:
        raise AuthError(403, "this route needs an administrator identity")
    return who


User = Annotated[Identity, Depends(_identity)]
Admin = Annotated[Identity, Depends(_admin)]
WardenSession = Annotated[str | None, Header(alias="X-Warden-Session")]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        max_length=128,
        description="A retried submission with the same key returns the first job.",
    ),
]
HEARTBEAT_S = 15


# -- assembly --------------------------------------------------------------------------------


def build_scheduler(config: SchedulerConfig) -> Scheduler:
    """Store, emulated QPU and scheduler from settings (the daemon's default assembly)."""
    if not config.db:
        state_dir().mkdir(parents=True, exist_ok=True)
    store = Store(config.db_url)
    profile = DeviceProfile.load(config.device)
    driver = EmulatedQPU(profile, calibrated_at=store.get_fact("calibrated_at"))
    if store.get_fact("calibrated_at") is None:
        store.set_fact("calibrated_at", driver.calibrated_at)
    return Scheduler(config, store, driver)


def build_authenticator(config: SchedulerConfig, store: Store | None = None) -> Authenticator:
    """The daemon's authenticator; with ``store`` it remembers accepted MUNGE credentials there
    (replays stay refused across munged and scheduler restarts)."""
    secret = config.token_secret or None
    if "token" in config.auth and not secret:
        secret = load_or_create_secret(state_dir() / "token.secret")
    return Authenticator(
        config.auth,
        frozenset(config.admin_uids),
        secret,
        config.munge_socket or None,
        replay_guard=store,
    )


def create_app(
    config: SchedulerConfig,
    scheduler: Scheduler | None = None,
    authenticator: Authenticator | None = None,
) -> FastAPI:
    """The ASGI app. Given a ``scheduler``, the caller starts and stops it (in-process tests)."""
    owned = scheduler is None
    sched = scheduler or build_scheduler(config)
    auth = authenticator or build_authenticator(config, sched.store)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if owned:
            await sched.start()
        yield
        if owned:
            await sched.stop()

    app = FastAPI(
        title="qhpc-lab second-level scheduler",
        version="0.1.0",
        description="A superset of the Pasqal Warden API: QRMI's pasqal-local resource works "
        "unchanged. Errors are {detail, rule}.",
        lifespan=lifespan,
    )
    app.state.scheduler = sched
    app.state.authenticator = auth

    app.add_middleware(PayloadLimit, limit=config.max_payload_bytes)

    install_error_handling(app)

    # -- Warden-compatible routes --------------------------------------------------------

    @app.get(
        "/accessible", response_model=AccessibleOut, tags=["warden"], responses=error_responses()
    )
    async def get_accessible() -> dict[str, Any]:
        return {"is_accessible": sched.accessible, "message": sched.message}

    @app.post(
        "/accessible",
        response_model=AccessibleOut,
        tags=["warden", "admin"],
        responses=error_responses(400, 401, 403, 408, 413, 422),
    )
    async def post_accessible(body: AccessibleIn, _who: Admin) -> dict[str, Any]:
        await sched.set_accessible(body.is_accessible, body.message)
        return {"is_accessible": sched.accessible, "message": sched.message}

    @app.post(
        "/sessions",
        response_model=SessionOut,
        tags=["warden", "admin"],
        responses=error_responses(400, 401, 403, 408, 413, 422),
    )
    async def post_session(body: SessionIn, _who: Admin) -> dict[str, Any]:
        job = body.slurm_job_id if body.slurm_job_id is not None else body.scheduler_job_id
        session = await sched.open_session(
            str(body.user_id), None if job is None else str(job), body.qpu_slots
        )
        return _session_view(session)

    @app.get(
        "/sessions",
        response_model=list[SessionOut],
        tags=["admin"],
        responses=error_responses(401, 403, 422),
    )
    async def get_sessions(_who: Admin, active: bool | None = None) -> list[dict[str, Any]]:
        return [_session_view(s) for s in await sched.db(sched.store.list_sessions, active)]

    @app.delete(
        "/sessions/{session_id}",
        response_model=SessionOut,
        tags=["warden"],
        responses=error_responses(401, 404, 422),
    )
    async def delete_session(
        session_id: SessionId,
        who: User,
        reason: RevokeReason = "session released",
    ) -> dict[str, Any]:
        """Revoke a session; its queued jobs are cancelled with ``reason`` (the Slurm Epilog
        says "Slurm job ended")."""
        session = await sched.get_session(session_id)
        if session is None or (session.user_id != who.user_id and not who.admin):
            raise SchedulerError(404, f"session {session_id} not found")
        return _session_view(await sched.revoke_session(session_id, reason))

    @app.delete(
        "/sessions",
        response_model=SessionOut,
        tags=["warden", "admin"],
        responses=error_responses(401, 403, 404, 422),
    )
    async def delete_session_by_header(_who: Admin, session_id: WardenSession = None) -> Any:
        if session_id is None:
            raise SchedulerError(403, "missing X-Warden-Session header", "session")
        return _session_view(await sched.revoke_session(session_id, "session released"))

    @app.post(
        "/jobs",
        response_model=JobOut,
        tags=["warden"],
        responses=error_responses(400, 401, 403, 408, 413, 422, 429),
    )
    async def post_job(
        body: JobIn,
        who: User,
        session_id: WardenSession = None,
        idempotency_key: IdempotencyKey = None,
    ) -> JSONResponse:
        try:
            program = Program(
                body.format, body.sequence, body.shots, body.name, body.variables or {}
            )
        except ProgramError as err:
            sched.metrics.rejected += 1
            raise SchedulerError(422, str(err), err.rule) from None
        job = await sched.submit(
            who.user_id,
            who.admin,
            session_id,
            program,
            body.job_class,
            body.max_calibration_age_s,
            idempotency_key,
        )
        return JSONResponse(sched.job_view(job))

    @app.get(
        "/jobs", response_model=list[JobOut], tags=["warden"], responses=error_responses(401, 422)
    )
    async def get_jobs(
        request: Request,
        who: User,
        status: StatusFilter = None,
        limit: Annotated[int | None, Query(ge=1, le=10_000)] = None,
        before_id: Annotated[int | None, Query(ge=1)] = None,
    ) -> JSONResponse:
        """All of the caller's jobs, newest first, as Warden lists them. ``limit`` asks for a
        page; a full page carries a ``Link: <...>; rel="next"`` header to the next one."""
        jobs = await sched.list_jobs(who.user_id, who.admin, status, limit, before_id)
        headers = {}
        if limit is not None and len(jobs) == limit:
            following = request.url.include_query_params(before_id=jobs[-1].id)
            headers["Link"] = f'<{following}>; rel="next"'
        return JSONResponse(sched.job_views(jobs), headers=headers)

    @app.get(
        "/jobs/{job_id}",
        response_model=JobOut,
        tags=["warden"],
        responses=error_responses(401, 404, 422),
    )
    async def get_job(job_id: int, who: User) -> JSONResponse:
        return JSONResponse(sched.job_view(await sched.get_job(job_id, who.user_id, who.admin)))

    @app.get(
        "/jobs/{job_id}/logs",
        response_model=LogsOut,
        tags=["warden"],
        responses=error_responses(401, 404, 422),
    )
    async def get_logs(job_id: int, who: User) -> dict[str, str]:
        job = await sched.get_job(job_id, who.user_id, who.admin)
        lines = [
            f"job {job.id} ({job.format}, {job.shots} shots, class {job.job_class}): "
            f"{job.status}, {job.shots_done}/{job.shots} shots done"
        ]
        if job.error:
            lines.append(job.error)
        return {"logs": "\n".join(lines)}

    @app.post(
        "/jobs/{job_id}/cancel",
        response_model=JobOut,
        tags=["warden"],
        responses=error_responses(401, 404, 422),
    )
    async def cancel_job(job_id: int, who: User) -> JSONResponse:
        reason = "canceled by an administrator" if who.admin else "canceled by user"
        job = await sched.cancel(job_id, who.user_id, who.admin, reason)
        return JSONResponse(sched.job_view(job))

    @app.get("/qpu/specs", response_model=SpecsOut, tags=["warden"], responses=error_responses())
    async def get_specs() -> dict[str, str]:
        return {"specs": sched.driver.profile.spec.json}

    # -- extensions ------------------------------------------------------------------------

    @app.get("/device", tags=["qhpc"], responses=error_responses(401))
    async def get_device(request: Request) -> dict[str, Any]:
        """The device, queue depth and dispatcher health; the running job's id only to its
        owner or an administrator (an anonymous caller sees its class)."""
        who = await _optional_identity(request)
        return sched.device_info(who and who.user_id, bool(who and who.admin))

    @app.get(
        "/events",
        tags=["qhpc"],
        response_class=EventSourceResponse,
        responses=error_responses(401, 422),
    )
    async def get_events(
        who: User,
        last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=32)] = None,
    ) -> EventSourceResponse:
        """Server-sent events: ``job`` (the caller's jobs), ``device``, ``queue`` (coalesced,
        personal: own positions and ETAs, anonymous aggregates) and ``reset``; see
        docs/scheduler.md. Reconnect with ``Last-Event-ID`` to resume."""
        events = sched.bus.subscribe(
            who.user_id, who.admin, last_event_id, sched.device_info(who.user_id, who.admin)
        )
        return EventSourceResponse(
            _sse(events),
            ping=HEARTBEAT_S,
            sep="\n",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @app.get(
        "/metrics", response_class=PlainTextResponse, tags=["qhpc"], responses=error_responses()
    )
    async def get_metrics() -> PlainTextResponse:
        info = sched.device_info()
        text = sched.metrics.render(
            info["queue_depth"],
            await sched.db(sched.store.count_by_status),
            info["state"],
            info["calibration_age_s"],
        )
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4")

    @app.get("/health", tags=["qhpc"], responses=error_responses())
    async def health() -> JSONResponse:
        """200 while the dispatcher makes progress; 503 with the reason while it is stalled
        (the database unreachable, say). Answered from memory: it never waits on the store."""
        if sched.health.ok:
            return JSONResponse({"status": "ok", "dispatcher": sched.health.view()})
        return JSONResponse(
            {"status": "stalled", "dispatcher": sched.health.view()},
            status_code=503,
            headers={"Retry-After": "5"},
        )

    @app.get("/admin/policy", tags=["admin"], responses=error_responses(401, 403, 422))
    async def get_policy(_who: Admin) -> dict[str, Any]:
        return sched.policy_settings()

    @app.put(
        "/admin/policy", tags=["admin"], responses=error_responses(400, 401, 403, 408, 413, 422)
    )
    async def put_policy(body: PolicyIn, _who: Admin) -> dict[str, Any]:
        return await sched.set_policy(body.model_dump(exclude_none=True))

    @app.get("/admin/accounting", tags=["admin"], responses=error_responses(401, 403, 422))
    async def get_accounting(
        _who: Admin,
        since: TimeBound = None,
        until: TimeBound = None,
        by: Literal["user", "slurm_job"] = "user",
    ) -> dict[str, Any]:
        """Shots, QPU-seconds and waits per user or Slurm job, for jobs submitted in
        [since, until) (Unix times; open-ended when left out)."""
        rows = await sched.db(sched.store.accounting, since, until, by)
        return {"since": since, "until": until, "by": by, "rows": rows}

    @app.post("/admin/calibrate", tags=["admin"], responses=error_responses(401, 403, 422))
    async def calibrate(_who: Admin) -> dict[str, Any]:
        sched.request_calibration()
        return sched.device_info()

    @app.post("/admin/drain", tags=["admin"], responses=error_responses(401, 403, 422))
    async def drain(_who: Admin) -> dict[str, Any]:
        await sched.set_draining(True)
        return sched.device_info()

    @app.post("/admin/resume", tags=["admin"], responses=error_responses(401, 403, 422))
    async def resume(_who: Admin) -> dict[str, Any]:
        await sched.set_draining(False)
        return sched.device_info()

    return app


class PayloadLimit:
    """Refuse request bodies over ``limit`` bytes with 413, before any route reads them.

    A pure ASGI middleware: Starlette's ``BaseHTTPMiddleware`` costs a task and a receive
    wrapper per request, which showed in the submission benchmark. A declared Content-Length
    is checked up front; a streamed (chunked) body is counted as it arrives and replayed.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            detail = f"request body of {int(length)} bytes exceeds the limit of {self.limit} bytes"
            return await error_response(413, detail, "max_payload_bytes")(scope, receive, send)
        if length is None and b"transfer-encoding" in headers:
            chunks: list[bytes] = []
            size = 0
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    break
                chunks.append(message.get("body", b""))
                size += len(chunks[-1])
                if size > self.limit:
                    detail = f"streamed request body exceeds the limit of {self.limit} bytes"
                    refusal = error_response(413, detail, "max_payload_bytes")
                    return await refusal(scope, receive, send)
                if not message.get("more_body"):
                    break
            replayed = False

            async def replay() -> Message:
                nonlocal replayed
                if replayed:
                    return await receive()
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}

            return await self.app(scope, replay, send)
        return await self.app(scope, receive, send)


async def _optional_identity(request: Request) -> Identity | None:
    """The caller when credentials came with the request; None for an anonymous one."""
    munge_cred = request.headers.get("x-munge-cred")
    authorization = request.headers.get("authorization")
    if not munge_cred and not authorization:
        return None
    return await _identity(request, munge_cred, authorization)


async def _sse(events: AsyncIterator[StreamEvent]) -> AsyncIterator[ServerSentEvent]:
    async for event in events:
        yield server_sent_event(event)


def _session_view(session: SessionRow) -> dict[str, Any]:
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
