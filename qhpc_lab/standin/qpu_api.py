"""The emulated QPU served over Pasqal's on-premises QPU API: ``qhpc qpu serve``.

The QPU API is what Warden's worker drives on a real device: base ``/api/v1``, JSend envelopes
``{code, message, data}``; ``GET /system`` (the specs, Pulser's device JSON), ``GET
/system/operational`` (``UP`` or ``DOWN``), ``POST /jobs`` (``nb_run``, ``pulser_sequence``,
``context``), ``GET /jobs/{uid}``, ``PUT /jobs/{uid}/cancel`` (400 with code ``3003`` once the
program can no longer be stopped), ``GET /programs/{id}``.

Behind it is :class:`~qhpc_lab.qpu.emulated.EmulatedQPU`, and it behaves like a device rather
than a mock: it runs what the device could run (a job's sequence and ``nb_run`` are checked
against the profile's device, a refusal names the rule), one job at a time in arrival order; a
job stays ``PENDING`` while another runs or the device is ``DOWN`` and while it loads (upload,
register loading: ``setup_s``, or the emulation if that takes longer), then runs ``nb_run ×
time_per_shot_s`` ``RUNNING``, and its counts carry the readout drift of the calibration's age.
The profile's calibration cycle shows as ``DOWN`` periods between jobs, and an operator can
take the device ``DOWN`` and back (``/stand-in/`` routes, outside the QPU API), or inject faults
(:class:`Faults`: 503s, slow answers, lost answers to ``POST /jobs``, malformed or short
results, changed specs) for a driver's tests. ``GET /system`` says that it stands in for
hardware.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from qhpc_lab.programs import DeviceSpec, Program, ProgramError
from qhpc_lab.programs.validation import (
    await_validation_worker,
    start_validation_worker,
    validate_async,
)
from qhpc_lab.qpu import DeviceState
from qhpc_lab.qpu.emulated import STANDS_IN, EmulatedQPU
from qhpc_lab.standin import RESULT_FORMATS

API_PREFIX = "/api/v1"
CANNOT_CANCEL = "3003"
"""The QPU API's code for "the program can no longer be canceled" (the job will finish)."""


class JobCreation(BaseModel):
    nb_run: int
    pulser_sequence: str
    context: dict[str, Any] = {}


class OperatorDown(BaseModel):
    reason: str = "taken DOWN by an operator"


class Faults(BaseModel):
    """What the device does wrong on purpose, for a driver's fault tests (``POST
    /stand-in/faults``; each call replaces the last; ``{}`` clears them)."""

    unavailable: int = 0
    """The next N QPU API requests answer 503 (the API restarting behind a proxy)."""
    delay_s: float = 0.0
    """Every QPU API request waits this long before it is answered (a client's time-out)."""
    lost_post_answers: int = 0
    """The next N ``POST /jobs`` create their job and never answer: the hard case of a driver
    that cannot tell whether its job exists."""
    result: Literal["malformed", "short"] | None = None
    """Jobs that end from now on: a result that is neither JSON nor a Python literal, or a
    counter with fewer shots than ``nb_run`` (a device may return fewer)."""
    specs: dict[str, Any] = {}
    """Changes to the device's specs (``{"max_runs": 100}``): ``GET /system`` and the checks of
    new jobs use them from now on (a recalibrated or reconfigured device)."""


@dataclass
class QPUJob:
    """One job of the device: a sequence to run ``nb_run`` times."""

    uid: int
    nb_run: int
    pulser_sequence: str
    context: dict[str, Any]
    created: datetime
    status: str = "PENDING"
    result: str | None = None
    error: str | None = None
    started: datetime | None = None
    ended: datetime | None = None
    program_status: str = "CREATED"

    def view(self) -> dict[str, Any]:
        """The job as ``GET /jobs/{uid}`` gives it."""
        return {
            "uid": self.uid,
            "batch_id": self.context.get("batch_id"),
            "context": self.context,
            "nb_run": self.nb_run,
            "status": self.status,
            "result": self.result,
            "errors": [self.error] if self.error else [],
            "program_id": self.uid,
            "created_datetime": self.created.isoformat(),
            "start_datetime": self.started.isoformat() if self.started else None,
            "end_datetime": self.ended.isoformat() if self.ended else None,
        }


class Refused(Exception):
    """A request the device turns down: an HTTP 400 with a JSend ``code`` and message."""

    def __init__(self, code: str, message: str, data: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.data = data or {}


@dataclass
class ServedQPU:
    """The device's side of the QPU API: its jobs, its queue and the loop that runs them."""

    qpu: EmulatedQPU
    setup_s: float = 0.0
    """Per job, before its first shot (upload, register loading): what a real device spends."""
    result_format: str = "json"
    clock: Callable[[], float] = time.time
    jobs: dict[int, QPUJob] = field(default_factory=dict)
    down_reason: str | None = None
    """Why an operator took the device DOWN (None: it is not held DOWN)."""
    faults: Faults = field(default_factory=Faults)
    _pending: deque[int] = field(default_factory=deque)
    _wake: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        if self.result_format not in RESULT_FORMATS:
            raise ValueError(f"result_format must be one of {', '.join(RESULT_FORMATS)}")

    @property
    def operational(self) -> str:
        up = self.down_reason is None and self.qpu.state == DeviceState.ONLINE
        return "UP" if up else "DOWN"

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    async def submit(self, creation: JobCreation) -> QPUJob:
        """A new PENDING job, once its sequence and ``nb_run`` suit the device."""
        try:
            program = Program("pulser", creation.pulser_sequence, creation.nb_run)
            await validate_async(program, self.qpu.profile.spec)
        except ProgramError as err:
            raise Refused(
                "400", f"the device cannot run this job: {err}", {"rule": err.rule}
            ) from None
        uid = len(self.jobs)  # jobs are never dropped: uids 0, 1, 2, … in creation order
        job = QPUJob(uid, creation.nb_run, creation.pulser_sequence, creation.context, self._now())
        self.jobs[uid] = job
        self._pending.append(uid)
        self._wake.set()
        return job

    def cancel(self, uid: int) -> QPUJob:
        """Cancel a job that has not started; one that has runs to its end (code 3003)."""
        job = self.job(uid)
        if job.status != "PENDING" or job.program_status == "CANCELED":
            raise Refused(
                CANNOT_CANCEL,
                f"job {uid} is {job.status}: its program can no longer be canceled",
                {"status": job.status},
            )
        if uid in self._pending:
            self._pending.remove(uid)
        job.status = job.program_status = "CANCELED"
        job.ended = self._now()
        return job

    def job(self, uid: int) -> QPUJob:
        if uid not in self.jobs:
            raise Refused("404", f"no job {uid}")
        return self.jobs[uid]

    def inject(self, faults: Faults) -> None:
        """Faults from now on; changed specs replace the device's (its profile keeps the rest)."""
        self.faults = faults
        if faults.specs:
            specs = {**json.loads(self.qpu.profile.spec.json), **faults.specs}
            spec = DeviceSpec(json.dumps(specs))
            self.qpu.profile = dataclasses.replace(self.qpu.profile, spec=spec)

    def take_down(self, reason: str) -> None:
        self.down_reason = reason

    def bring_up(self) -> None:
        self.down_reason = None
        self._wake.set()

    def _calibration_due_in(self) -> float:
        profile = self.qpu.profile
        return self.qpu.calibrated_at + profile.calibration_interval_s - self.clock()

    async def run(self) -> None:
        """The device: calibrate when due, else run the next job; never two at once."""
        while True:
            due_in = self._calibration_due_in()
            if due_in <= 0:
                await self.qpu.calibrate()
                continue
            if self.down_reason is not None or not self._pending:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), due_in)
                continue
            await self._run_job(self.jobs[self._pending.popleft()])

    async def _run_job(self, job: QPUJob) -> None:
        """Load the job (``setup_s``, and its emulation meanwhile: it runs as long as its shots
        would on hardware), then run it."""
        job.program_status = "LOADING"
        key = f"qpu-job-{job.uid}"
        program = Program("pulser", job.pulser_sequence, job.nb_run)
        loading = self.clock()
        try:
            await self.qpu.prepare(key, program, job.nb_run)
        except Exception as err:  # the device reports it on the job, and goes on
            job.status = job.program_status = "ERROR"
            job.error = str(err) or type(err).__name__
            job.ended = self._now()
            self.qpu.forget(key)
            return
        await asyncio.sleep(max(0.0, self.setup_s - (self.clock() - loading)))
        if job.status == "CANCELED":  # canceled while it was loaded
            self.qpu.forget(key)
            return
        job.status = job.program_status = "RUNNING"
        job.started = self._now()
        try:
            outcome = await self.qpu.run_chunk(key, program, job.nb_run, job.nb_run)
        except Exception as err:  # the device reports it on the job, and goes on
            job.status = job.program_status = "ERROR"
            job.error = str(err) or type(err).__name__
        else:
            job.result = self._result_text(outcome.counts)
            job.status = job.program_status = "DONE"
        finally:
            self.qpu.forget(key)
            job.ended = self._now()

    def _result_text(self, counts: dict[str, int]) -> str:
        if self.faults.result == "malformed":
            return "<counter>not a result</counter>"
        if self.faults.result == "short":
            counts = dict(list(counts.items())[:1])
            counts = {bits: max(0, n - 1) for bits, n in counts.items()}
        counter = {"counter": counts}
        return json.dumps(counter) if self.result_format == "json" else repr(counter)


def _jsend(data: Any) -> dict[str, Any]:
    return {"code": 200, "message": "OK.", "data": data}


def create_app(device: ServedQPU) -> FastAPI:
    """The QPU API over ``device``; its loop runs while the app does."""

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        device.qpu.start()
        start_validation_worker()  # its SDK imports before the first job, as a device's are
        await asyncio.to_thread(await_validation_worker)
        loop = asyncio.create_task(device.run())
        try:
            yield
        finally:
            loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loop

    app = FastAPI(title="QPU API (emulated device: qhpc qpu serve)", lifespan=lifespan)

    @app.middleware("http")
    async def injected(request: Request, call_next: Callable[[Request], Any]) -> Any:
        faults = device.faults
        if not request.url.path.startswith(API_PREFIX):
            return await call_next(request)
        await asyncio.sleep(faults.delay_s)
        if faults.unavailable > 0:
            faults.unavailable -= 1
            body = {"code": 503, "message": "injected fault: unavailable", "data": None}
            return JSONResponse(body, status_code=503)
        answer = await call_next(request)
        lose = request.method == "POST" and request.url.path == f"{API_PREFIX}/jobs"
        if lose and answer.status_code == 200 and faults.lost_post_answers > 0:
            faults.lost_post_answers -= 1
            await asyncio.Event().wait()  # the job exists; its answer never comes
        return answer

    @app.exception_handler(Refused)
    async def refused(_: object, err: Refused) -> JSONResponse:
        status = 404 if err.code == "404" else 400
        body = {"code": err.code, "message": str(err), "data": err.data}
        return JSONResponse(body, status_code=status)

    @app.get(f"{API_PREFIX}/system")
    async def system() -> dict[str, Any]:
        specs = json.loads(device.qpu.profile.spec.json)
        return _jsend({"specs": specs, "stands_in": STANDS_IN, "calibrates_when_down": True})

    @app.get(f"{API_PREFIX}/system/operational")
    async def operational() -> dict[str, Any]:
        return _jsend({"operational_status": device.operational})

    @app.post(f"{API_PREFIX}/jobs")
    async def create_job(creation: JobCreation) -> dict[str, Any]:
        return _jsend((await device.submit(creation)).view())

    @app.get(f"{API_PREFIX}/jobs/{{uid}}")
    async def get_job(uid: int) -> dict[str, Any]:
        return _jsend(device.job(uid).view())

    @app.put(f"{API_PREFIX}/jobs/{{uid}}/cancel")
    async def cancel_job(uid: int) -> dict[str, Any]:
        return _jsend(device.cancel(uid).view())

    @app.get(f"{API_PREFIX}/programs/{{uid}}")
    async def program(uid: int) -> dict[str, Any]:
        return _jsend({"uid": uid, "status": device.job(uid).program_status})

    @app.post("/stand-in/down")
    async def down(body: OperatorDown) -> dict[str, Any]:
        device.take_down(body.reason)
        return _jsend({"operational_status": device.operational, "reason": body.reason})

    @app.post("/stand-in/faults")
    async def faults(body: Faults) -> dict[str, Any]:
        device.inject(body)
        return _jsend(body.model_dump())

    @app.get("/stand-in/jobs")
    async def every_job() -> dict[str, Any]:
        return _jsend([job.view() for job in device.jobs.values()])

    @app.post("/stand-in/up")
    async def up() -> dict[str, Any]:
        device.bring_up()
        return _jsend({"operational_status": device.operational})

    return app
