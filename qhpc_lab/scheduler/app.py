"""The scheduler's ASGI app: Warden's routes field for field, plus qhpc extensions.

The routes live in :mod:`qhpc_lab.scheduler.routes`, one router per resource; they are thin:
they authenticate, parse, call :class:`~qhpc_lab.scheduler.core.Scheduler` and return the
documents of :mod:`~qhpc_lab.scheduler.views`, which FastAPI checks against the response
models. This module assembles the app and its middleware.
"""

import contextlib
from collections.abc import AsyncIterator
from typing import Protocol

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from qhpc_lab.qpu import DeviceProfile, QPUDriver
from qhpc_lab.qpu.api import QPUApiDriver, QPUApiSettings
from qhpc_lab.qpu.emulated import EmulatedQPU
from qhpc_lab.scheduler.auth import Authenticator, load_or_create_secret
from qhpc_lab.scheduler.caller_limits import CallerCaps, CallerLimits
from qhpc_lab.scheduler.config import SchedulerConfig, state_dir
from qhpc_lab.scheduler.core import Scheduler
from qhpc_lab.scheduler.errors import error_response, install_error_handling
from qhpc_lab.scheduler.metrics import RequestMetrics
from qhpc_lab.scheduler.routes import ROUTERS
from qhpc_lab.scheduler.store import Store
from qhpc_lab.scheduler.traces import FRAMEWORK_TELEMETRY_OFF


class DriverFactory(Protocol):
    """Makes the QPU driver from the device profile and the calibration the store kept: when
    (None on a fresh store) and its number. ``EmulatedQPU`` is one."""

    def __call__(
        self, profile: DeviceProfile, calibrated_at: float | None, *, calibration_id: int = 1
    ) -> QPUDriver: ...


def qpu_driver(config: SchedulerConfig) -> DriverFactory:
    """The device the settings name: the one behind the QPU API at ``qpu_url`` (its specs
    read now), else the emulated QPU of profile ``device``."""
    if not config.qpu_url:
        return EmulatedQPU
    settings = QPUApiSettings(
        config.qpu_url.rstrip("/"),
        time_per_shot_s=config.qpu_time_per_shot_s,
        chunk_seconds=config.qpu_chunk_seconds,
        overhead_share=config.qpu_overhead_share,
        calibrates_when_down=config.qpu_calibrates_when_down,
        start_wait_s=config.qpu_start_wait_s,
    )

    def connect(
        profile: DeviceProfile, calibrated_at: float | None, *, calibration_id: int = 1
    ) -> QPUDriver:
        return QPUApiDriver.connect(settings, calibrated_at, calibration_id=calibration_id)

    return connect


def build_scheduler(config: SchedulerConfig, driver: DriverFactory) -> Scheduler:
    """Store, QPU driver and scheduler from settings (the daemon's assembly)."""
    if not config.db:
        state_dir().mkdir(parents=True, exist_ok=True)
    store = Store(config.db_url)
    qpu = driver(
        DeviceProfile.load(config.device),
        store.get_fact("calibrated_at"),
        calibration_id=store.get_fact("calibration_id") or 1,
    )
    if store.get_fact("calibrated_at") is None:
        store.set_facts({"calibrated_at": qpu.calibrated_at, "calibration_id": qpu.calibration.id})
    return Scheduler(config, store, qpu)


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
        admin_unbound_hosts=config.admin_unbound_hosts,
    )


def create_app(
    config: SchedulerConfig,
    scheduler: Scheduler | None = None,
    authenticator: Authenticator | None = None,
    *,
    driver: DriverFactory | None = None,
) -> FastAPI:
    """The ASGI app, over ``scheduler`` or one it builds with ``driver``. Given a
    ``scheduler``, the caller starts and stops it (in-process tests); a built one starts
    and stops with the app."""
    owned = scheduler is None
    if scheduler is None:
        if driver is None:
            raise TypeError("create_app needs a scheduler or a driver factory")
        scheduler = build_scheduler(config, driver)
    sched = scheduler

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
        telemetry=FRAMEWORK_TELEMETRY_OFF,
    )
    app.state.scheduler = sched
    app.state.authenticator = authenticator or build_authenticator(config, sched.store)
    app.add_middleware(PayloadLimit, limit=config.max_payload_bytes)
    app.state.caller_limits = CallerLimits(
        config.max_requests_per_user,
        config.max_streams_per_user,
        config.anonymous_rate_per_second,
        config.anonymous_burst,
    )
    app.add_middleware(CallerCaps, limits=app.state.caller_limits)
    app.add_middleware(RequestMetrics, metrics=sched.metrics)
    install_error_handling(app)
    for router in ROUTERS:
        app.include_router(router)
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
