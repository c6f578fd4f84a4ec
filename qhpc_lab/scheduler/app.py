"""HTTP API of the scheduler: Warden's routes field for field, plus qhpc extensions.

Handlers are thin: they authenticate, parse and call :class:`~qhpc_lab.scheduler.core.Scheduler`.
"""

import contextlib
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from qhpc_lab.programs import Program, ProgramError
from qhpc_lab.qpu import DeviceProfile
from qhpc_lab.qpu.emulated import EmulatedQPU
from qhpc_lab.scheduler.auth import Authenticator, AuthError, Identity, load_or_create_secret
from qhpc_lab.scheduler.config import SchedulerConfig, state_dir
from qhpc_lab.scheduler.core import Scheduler, SchedulerError, iso_time
from qhpc_lab.scheduler.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from qhpc_lab.scheduler.metrics import RequestMetrics, Snapshot
from qhpc_lab.scheduler.schemas import (
    AccessibleIn,
    AccessibleOut,
    JobIn,
    JobOut,
    LogsOut,
    PolicyIn,
    SessionIn,
    SessionOut,
    SpecsOut,
)
from qhpc_lab.scheduler.store import SessionRow, Store

# -- identity -------------------------------------------------------------------------------


async def _identity(
    request: Request,
    x_munge_cred: Annotated[str | None, Header()] = None,
    authorization: Annotated[str | None, Header()] = None,
) -> Identity:
    auth: Authenticator = request.app.state.authenticator
    if x_munge_cred:  # munged is asked over a socket: keep the event loop free meanwhile
        return await run_in_threadpool(auth.identify, x_munge_cred, authorization)
    return auth.identify(None, authorization)


async def _admin(who: Annotated[Identity, Depends(_identity)]) -> Identity:
    if not who.admin:
        raise AuthError(403, "this route needs an administrator identity")
    return who


User = Annotated[Identity, Depends(_identity)]
Admin = Annotated[Identity, Depends(_admin)]
WardenSession = Annotated[str | None, Header(alias="X-Warden-Session")]


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


def build_authenticator(config: SchedulerConfig) -> Authenticator:
    secret = config.token_secret or None
    if "token" in config.auth and not secret:
        secret = load_or_create_secret(state_dir() / "token.secret")
    return Authenticator(
        config.auth, frozenset(config.admin_uids), secret, config.munge_socket or None
    )


def create_app(
    config: SchedulerConfig,
    scheduler: Scheduler | None = None,
    authenticator: Authenticator | None = None,
) -> FastAPI:
    """The ASGI app. Given a ``scheduler``, the caller starts and stops it (in-process tests)."""
    owned = scheduler is None
    sched = scheduler or build_scheduler(config)
    auth = authenticator or build_authenticator(config)

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
    app.add_middleware(RequestMetrics, metrics=sched.metrics)

    @app.exception_handler(SchedulerError)
    async def scheduler_error(_request: Request, err: SchedulerError) -> JSONResponse:
        return _error(err.status, str(err), err.rule)

    @app.exception_handler(AuthError)
    async def auth_error(_request: Request, err: AuthError) -> JSONResponse:
        return _error(err.status, str(err), "auth")

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, err: RequestValidationError) -> JSONResponse:
        problems = err.errors()
        if any(p.get("type") == "json_invalid" for p in problems):
            return _error(400, "malformed JSON body", "json")
        text = "; ".join(
            f"{'.'.join(str(x) for x in p.get('loc', ())[1:]) or 'body'}: {p.get('msg')}"
            for p in problems
        )
        return _error(422, text, "request")

    # -- Warden-compatible routes --------------------------------------------------------

    @app.get("/accessible", response_model=AccessibleOut, tags=["warden"])
    async def get_accessible() -> dict[str, Any]:
        return {"is_accessible": sched.accessible, "message": sched.message}

    @app.post("/accessible", response_model=AccessibleOut, tags=["warden", "admin"])
    async def post_accessible(body: AccessibleIn, _who: Admin) -> dict[str, Any]:
        sched.set_accessible(body.is_accessible, body.message)
        return {"is_accessible": sched.accessible, "message": sched.message}

    @app.post("/sessions", response_model=SessionOut, tags=["warden", "admin"])
    async def post_session(body: SessionIn, _who: Admin) -> dict[str, Any]:
        job = body.slurm_job_id if body.slurm_job_id is not None else body.scheduler_job_id
        session = sched.open_session(
            str(body.user_id), None if job is None else str(job), body.qpu_slots
        )
        return _session_view(session)

    @app.get("/sessions", response_model=list[SessionOut], tags=["admin"])
    async def get_sessions(_who: Admin, active: bool | None = None) -> list[dict[str, Any]]:
        return [_session_view(s) for s in sched.store.list_sessions(active)]

    @app.delete("/sessions/{session_id}", response_model=SessionOut, tags=["warden"])
    async def delete_session(
        session_id: str,
        who: User,
        reason: Annotated[str, Query(max_length=200)] = "session released",
    ) -> dict[str, Any]:
        """Revoke a session; its queued jobs are cancelled with ``reason`` (the Slurm Epilog
        says "Slurm job ended")."""
        session = sched.store.get_session(session_id)
        if session is None or (session.user_id != who.user_id and not who.admin):
            raise SchedulerError(404, f"session {session_id} not found")
        return _session_view(sched.revoke_session(session_id, reason))

    @app.delete("/sessions", response_model=SessionOut, tags=["warden", "admin"])
    async def delete_session_by_header(_who: Admin, session_id: WardenSession = None) -> Any:
        if session_id is None:
            raise SchedulerError(403, "missing X-Warden-Session header", "session")
        return _session_view(sched.revoke_session(session_id, "session released"))

    @app.post("/jobs", response_model=JobOut, tags=["warden"])
    async def post_job(body: JobIn, who: User, session_id: WardenSession = None) -> JSONResponse:
        try:
            program = Program(
                body.format, body.sequence, body.shots, body.name, body.variables or {}
            )
        except ProgramError as err:
            sched.metrics.rejected()
            raise SchedulerError(422, str(err), err.rule) from None
        job = sched.submit(
            who.user_id,
            who.admin,
            session_id,
            program,
            body.job_class,
            body.max_calibration_age_s,
        )
        return JSONResponse(sched.job_view(job))

    @app.get("/jobs", response_model=list[JobOut], tags=["warden"])
    async def get_jobs(who: User, status: str | None = None, limit: int = 100) -> JSONResponse:
        jobs = sched.list_jobs(who.user_id, who.admin, status, min(max(limit, 1), 1000))
        return JSONResponse([sched.job_view(j) for j in jobs])

    @app.get("/jobs/{job_id}", response_model=JobOut, tags=["warden"])
    async def get_job(job_id: int, who: User) -> JSONResponse:
        return JSONResponse(sched.job_view(sched.get_job(job_id, who.user_id, who.admin)))

    @app.get("/jobs/{job_id}/logs", response_model=LogsOut, tags=["warden"])
    async def get_logs(job_id: int, who: User) -> dict[str, str]:
        job = sched.get_job(job_id, who.user_id, who.admin)
        lines = [
            f"job {job.id} ({job.format}, {job.shots} shots, class {job.job_class}): "
            f"{job.status}, {job.shots_done}/{job.shots} shots done"
        ]
        if job.error:
            lines.append(job.error)
        return {"logs": "\n".join(lines)}

    @app.get("/jobs/{job_id}/timeline", tags=["qhpc"])
    async def get_timeline(job_id: int, who: User) -> dict[str, Any]:
        """Why the job waited: its chunks, the classes that ran while it waited, and the
        calibrations and holds it waited through (docs/operations.md)."""
        job = sched.get_job(job_id, who.user_id, who.admin)
        return {"job_id": job.id, "status": job.status, "entries": sched.timelines.view(job)}

    @app.post("/jobs/{job_id}/cancel", response_model=JobOut, tags=["warden"])
    async def cancel_job(job_id: int, who: User) -> JSONResponse:
        reason = "canceled by an administrator" if who.admin else "canceled by user"
        return JSONResponse(sched.job_view(sched.cancel(job_id, who.user_id, who.admin, reason)))

    @app.get("/qpu/specs", response_model=SpecsOut, tags=["warden"])
    async def get_specs() -> dict[str, str]:
        return {"specs": sched.driver.profile.spec.json}

    # -- extensions ------------------------------------------------------------------------

    @app.get("/device", tags=["qhpc"])
    async def get_device() -> dict[str, Any]:
        return sched.device_info()

    @app.get("/events", tags=["qhpc"], response_class=StreamingResponse)
    async def get_events(who: User) -> StreamingResponse:
        return StreamingResponse(
            sched.metrics.track_subscriber(sched.bus.subscribe(who.user_id, who.admin)),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @app.get("/metrics", response_class=PlainTextResponse, tags=["qhpc"])
    async def get_metrics() -> Response:
        """Prometheus text exposition (docs/operations.md lists the metrics)."""
        info = sched.device_info()
        profile = sched.driver.profile
        snapshot = Snapshot(
            queue_depth=info["queue_depth"],
            jobs_by_status=sched.store.count_by_status(),
            device_state=info["state"],
            calibration_age_s=info["calibration_age_s"],
            calibration_interval_s=profile.calibration_interval_s,
            calibration_duration_s=profile.calibration_duration_s,
            accessible=sched.accessible,
            draining=sched.draining,
            sessions_open=len(sched.store.list_sessions(active=True)),
            emulator_worker_up=getattr(sched.driver, "worker_alive", None),
        )
        return Response(sched.metrics.render(snapshot), media_type=METRICS_CONTENT_TYPE)

    @app.get("/health", tags=["qhpc"])
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/admin/policy", tags=["admin"])
    async def get_policy(_who: Admin) -> dict[str, Any]:
        return sched.policy_settings()

    @app.put("/admin/policy", tags=["admin"])
    async def put_policy(body: PolicyIn, _who: Admin) -> dict[str, Any]:
        return sched.set_policy(body.model_dump(exclude_none=True))

    @app.get("/admin/accounting", tags=["admin"])
    async def get_accounting(
        _who: Admin,
        since: float | None = None,
        until: float | None = None,
        by: Literal["user", "slurm_job"] = "user",
    ) -> dict[str, Any]:
        """Shots, QPU-seconds and waits per user or Slurm job, for jobs submitted in
        [since, until) (Unix times; open-ended when left out)."""
        rows = sched.store.accounting(since, until, by)
        return {"since": since, "until": until, "by": by, "rows": rows}

    @app.post("/admin/calibrate", tags=["admin"])
    async def calibrate(_who: Admin) -> dict[str, Any]:
        sched.request_calibration()
        return sched.device_info()

    @app.post("/admin/drain", tags=["admin"])
    async def drain(_who: Admin) -> dict[str, Any]:
        sched.set_draining(True)
        return sched.device_info()

    @app.post("/admin/resume", tags=["admin"])
    async def resume(_who: Admin) -> dict[str, Any]:
        sched.set_draining(False)
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
            return await _error(413, detail, "max_payload_bytes")(scope, receive, send)
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
                    return await _error(413, detail, "max_payload_bytes")(scope, receive, send)
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


def _error(status: int, detail: str, rule: str | None) -> JSONResponse:
    return JSONResponse({"detail": detail, "rule": rule}, status_code=status)


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
