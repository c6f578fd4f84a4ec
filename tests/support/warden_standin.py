"""A stand-in for a plain Pasqal Warden, to test the kernel client against one.

It stands in for what cannot exist here: a vendor's Warden in front of a real QPU. It serves
only the routes of Warden's API (pasqal-io/warden, ``warden/api/routes/*.py``) with the
fields and types of its schemas (``warden/api/schemas/*.py``), and none of our scheduler's
extensions: no ``/device``, ``/events``, ``/jobs/{id}/timeline``, ``/health`` or
``/metrics``; a job is ``{id, user_id, created_at, status, results}`` and nothing more.
Accounting (``/accounting``) is left out: no client reads it.

- Identity is Warden's: a MUNGE credential in ``X-Munge-Cred``, decoded by the system munged;
  uid 0 is the admin (sessions, ``POST /accessible``, ``/status``).
- ``POST /jobs`` needs an open ``X-Warden-Session`` of the caller's own.
- Jobs run by the clock, with no QPU: PENDING for :attr:`WardenStandin.pending_s`, RUNNING for
  :attr:`~WardenStandin.running_s`, then DONE with counts drawn over the register's
  bitstrings (``results``: JSON text ``{"counter": {bitstring: count}}``). Cancel is Warden's:
  a job not yet started is CANCELED at once; a running one stays RUNNING until it stops (here
  when its run would have ended); a second cancel, or one of a finished job, is a 409.
- :attr:`~WardenStandin.corrupt` makes it misbehave in one of the ways of
  :data:`CORRUPTIONS`, for the client's tests of answers it must not choke on.
- :attr:`~WardenStandin.requests` records ``METHOD path`` of every request, in order.
"""

import asyncio
import contextlib
import json
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

import uvicorn
from fastapi import Depends, FastAPI, Header, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse
from pydantic import BaseModel, Field

from qhpc_lab import munge
from qhpc_lab.qpu import DeviceProfile
from tests.support.daemons import free_port
from tests.support.polling import poll_until

ADMIN_UID = "0"
FLIP_PROBABILITY = 0.2
"""Each atom of a shot reads 1 with this probability: counts spread like a weak drive's."""

CORRUPTIONS = {
    "results-not-string": "a DONE job's results as a JSON object, not JSON text",
    "results-not-json": "a DONE job's results as text that is not JSON",
    "counter-not-mapping": "a DONE job's counter as a list of pairs",
    "counts-not-ints": "a DONE job's counts as text",
    "counter-not-bitstrings": "a DONE job's counter keyed by words, not bitstrings",
    "status-unknown": "a job's status FINISHED",
    "status-missing": "a job without its status",
    "id-not-int": "a job's id as text",
    "job-not-object": "a job as a JSON list",
    "specs-not-json": "the specs as text that is not JSON",
    "specs-not-string": "the specs as a number",
    "specs-not-a-device": "the specs as JSON that is no Pulser device",
    "accessible-missing": "/accessible without is_accessible",
    "not-json": "every answer a 200 text/plain 'OK'",
    "html-error": "every answer a 502 HTML page, as a proxy in front of a dead Warden sends",
}
"""What :attr:`WardenStandin.corrupt` may be set to, and the misbehaviour each makes."""


# -- Warden's schemas (warden/api/schemas/*.py): the fields and types it serves -------------


class JobCreate(BaseModel):
    sequence: str
    shots: int


class JobResponse(BaseModel):
    id: int
    user_id: str
    created_at: datetime
    status: str
    results: str | None


class JobLogResponse(BaseModel):
    logs: str = "There are no logs for this job"


class CreateSession(BaseModel):
    user_id: str
    slurm_job_id: str
    qpu_slots: int = Field(default=1, ge=1)


class SessionResponse(BaseModel):
    id: uuid.UUID
    user_id: str
    created_at: datetime
    revoked_at: datetime | None
    qpu_slots: int


class AccessibleResponse(BaseModel):
    is_accessible: bool
    message: str
    qpu_slots_total: int | None = None
    qpu_slots_used: int | None = None
    qpu_slots_available: int | None = None


class UpdateAccessibleRequest(BaseModel):
    is_accessible: bool
    message: str = "Accessibility toggled"


class QPUSpecsResponse(BaseModel):
    specs: str


class CurrentJob(BaseModel):
    id: int
    session_id: uuid.UUID
    user_id: str
    started_at: datetime | None
    backend_id: str | None


class OpenSession(BaseModel):
    id: uuid.UUID
    user_id: str
    created_at: datetime
    slurm_job_id: str


class StatusResponse(BaseModel):
    pending_jobs_count: int
    current_job: CurrentJob | None
    open_sessions: list[OpenSession]


# -- state ------------------------------------------------------------------------------------


@dataclass
class Session:
    id: uuid.UUID
    user_id: str
    slurm_job_id: str
    qpu_slots: int
    created_at: datetime
    revoked_at: datetime | None = None

    def response(self) -> SessionResponse:
        return SessionResponse(
            id=self.id,
            user_id=self.user_id,
            created_at=self.created_at,
            revoked_at=self.revoked_at,
            qpu_slots=self.qpu_slots,
        )


@dataclass
class Job:
    id: int
    session: Session
    shots: int
    sequence: str
    created_at: datetime
    starts_at: float
    """Monotonic time at which the job leaves PENDING."""
    ends_at: float
    canceled: bool = False
    ended: str | None = None
    """The final status, once reached."""
    results: str | None = None

    def status(self, now: float) -> str:
        if self.ended is None and now >= self.ends_at:
            self.ended = "CANCELED" if self.canceled else "DONE"
            if not self.canceled:
                self.results = json.dumps({"counter": _counts(self.sequence, self.shots, self.id)})
        if self.ended is not None:
            return self.ended
        return "PENDING" if now < self.starts_at else "RUNNING"


def _counts(sequence: str, shots: int, seed: int) -> dict[str, int]:
    """Plausible counts: each atom of the register reads 1 with FLIP_PROBABILITY."""
    try:
        atoms = len(json.loads(sequence)["register"]) or 1
    except (ValueError, KeyError, TypeError):
        atoms = 1
    draw = random.Random(seed)
    shots_read = (
        "".join("1" if draw.random() < FLIP_PROBABILITY else "0" for _ in range(atoms))
        for _ in range(shots)
    )
    return dict(Counter(shots_read))


class WardenStandin:
    """The stand-in's state and its FastAPI app (:attr:`app`)."""

    def __init__(self, device: str = "test") -> None:
        self.specs = DeviceProfile.load(device).spec.json
        self.url = ""
        """Where :func:`serve` serves it."""
        self.pending_s = 0.3
        self.running_s = 0.5
        self.corrupt: str | None = None
        """None, or a key of CORRUPTIONS."""
        self.requests: list[str] = []
        self.accessible = AccessibleResponse(is_accessible=True, message="Warden ok.")
        self.sessions: dict[uuid.UUID, Session] = {}
        self.jobs: dict[int, Job] = {}
        self.app = self._build()

    def open_session(self, user_id: str, slurm_job_id: str = "4242") -> str:
        """What the Slurm prolog's ``POST /sessions`` does; the session id."""
        session = Session(uuid.uuid4(), user_id, slurm_job_id, 1, datetime.now(UTC))
        self.sessions[session.id] = session
        return str(session.id)

    def job_view(self, job: Job) -> Any:
        """A job as Warden serves it, bent as :attr:`corrupt` says."""
        view: dict[str, Any] = JobResponse(
            id=job.id,
            user_id=job.session.user_id,
            created_at=job.created_at,
            status=job.status(time.monotonic()),
            results=job.results,
        ).model_dump(mode="json")
        bent = {
            "results-not-string": {"results": {"counter": {"00": job.shots}}},
            "results-not-json": {"results": f"counter 00={job.shots}"},
            "counter-not-mapping": {"results": json.dumps({"counter": [["00", job.shots]]})},
            "counts-not-ints": {"results": json.dumps({"counter": {"00": str(job.shots)}})},
            "counter-not-bitstrings": {"results": json.dumps({"counter": {"up": job.shots}})},
        }
        if self.corrupt in bent and view["results"] is not None:
            view.update(bent[self.corrupt])
        elif self.corrupt == "status-unknown":
            view["status"] = "FINISHED"
        elif self.corrupt == "status-missing":
            del view["status"]
        elif self.corrupt == "id-not-int":
            view["id"] = f"job-{job.id}"
        elif self.corrupt == "job-not-object":
            return list(view.items())
        return view

    def _build(self) -> FastAPI:
        app = FastAPI(title="Warden stand-in")

        @app.middleware("http")
        async def record_and_corrupt(request: Request, call_next: Any) -> Any:
            self.requests.append(f"{request.method} {request.url.path}")
            if self.corrupt == "not-json":
                return PlainTextResponse("OK")
            if self.corrupt == "html-error":
                page = (
                    "<html><head><title>502 Bad Gateway</title><style>h1 {color: red}</style>"
                    "</head><body><h1>502 Bad Gateway</h1><hr><p>nginx</p></body></html>"
                )
                return HTMLResponse(page, status_code=502)
            return await call_next(request)

        async def identity(x_munge_cred: Annotated[str | None, Header()] = None) -> str:
            if not x_munge_cred:
                raise HTTPException(401, "Missing MUNGE credential")
            try:
                credential = await asyncio.to_thread(munge.decode, x_munge_cred)
            except munge.MungeError as err:
                raise HTTPException(401, str(err)) from None
            return str(credential.uid)

        async def admin(uid: Annotated[str, Depends(identity)]) -> str:
            if uid != ADMIN_UID:
                raise HTTPException(403, "Endpoint restricted to admin user.")
            return uid

        async def session(
            uid: Annotated[str, Depends(identity)],
            x_warden_session: Annotated[uuid.UUID | None, Header()] = None,
        ) -> Session:
            if x_warden_session is None:
                raise HTTPException(403, "Missing 'X-Warden-Session' header.")
            found = self.sessions.get(x_warden_session)
            if found is None:
                raise HTTPException(403, "Invalid session.")
            if found.revoked_at is not None:
                raise HTTPException(403, "Session has been revoked.")
            if found.user_id != uid:
                raise HTTPException(403, "Session belongs to another user.")
            return found

        def own_job(id: int, uid: str) -> Job:
            job = self.jobs.get(id)
            if job is None or job.session.user_id != uid:
                raise HTTPException(404, "Job not found")
            return job

        @app.get("/")
        async def ping() -> dict[str, str]:
            return {"message": "Warden stand-in is operational."}

        @app.get("/accessible")
        async def is_accessible() -> Any:
            if self.corrupt == "accessible-missing":
                return {"message": self.accessible.message}
            return self.accessible

        @app.post("/accessible", dependencies=[Depends(admin)])
        async def update_accessible(payload: UpdateAccessibleRequest) -> AccessibleResponse:
            self.accessible = AccessibleResponse(
                is_accessible=payload.is_accessible, message=payload.message
            )
            return self.accessible

        @app.post("/sessions", dependencies=[Depends(admin)])
        async def create_session(payload: CreateSession) -> SessionResponse:
            opened = self.open_session(payload.user_id, payload.slurm_job_id)
            return self.sessions[uuid.UUID(opened)].response()

        @app.delete("/sessions/{id}", dependencies=[Depends(admin)])
        async def revoke_session(id: uuid.UUID) -> SessionResponse:
            found = self.sessions.get(id)
            if found is None:
                raise HTTPException(404, "Session not found.")
            found.revoked_at = datetime.now(UTC)
            return found.response()

        @app.post("/jobs")
        async def create_job(
            job: JobCreate, owner: Annotated[Session, Depends(session)]
        ) -> JSONResponse:
            now = time.monotonic()
            created = Job(
                id=len(self.jobs) + 1,
                session=owner,
                shots=job.shots,
                sequence=job.sequence,
                created_at=datetime.now(UTC),
                starts_at=now + self.pending_s,
                ends_at=now + self.pending_s + self.running_s,
            )
            self.jobs[created.id] = created
            return JSONResponse(self.job_view(created))

        @app.get("/jobs")
        async def list_jobs(uid: Annotated[str, Depends(identity)]) -> JSONResponse:
            mine = [self.job_view(j) for j in self.jobs.values() if j.session.user_id == uid]
            return JSONResponse(mine)

        @app.get("/jobs/{id}")
        async def get_job(id: int, uid: Annotated[str, Depends(identity)]) -> JSONResponse:
            return JSONResponse(self.job_view(own_job(id, uid)))

        @app.post("/jobs/{id}/cancel")
        async def cancel_job(id: int, uid: Annotated[str, Depends(identity)]) -> JSONResponse:
            job = own_job(id, uid)
            now = time.monotonic()
            status = job.status(now)
            if status in ("CANCELED", "DONE", "ERROR"):
                raise HTTPException(409, f"Job with status '{status}' can't be canceled")
            if job.canceled:
                raise HTTPException(409, "Job with status was already requested to be stopped")
            job.canceled = True
            if status == "PENDING":
                job.ended = "CANCELED"
            return JSONResponse(self.job_view(job))

        @app.get("/jobs/{id}/logs")
        async def get_job_logs(id: int, uid: Annotated[str, Depends(identity)]) -> JobLogResponse:
            own_job(id, uid)
            return JobLogResponse()

        @app.get("/qpu/specs")
        async def get_specs() -> Any:
            specs: Any = {
                "specs-not-json": "QHPC-Test, 16 atoms",
                "specs-not-string": 42,
                "specs-not-a-device": json.dumps({"atoms": 16}),
            }.get(self.corrupt or "", self.specs)
            return {"specs": specs}

        @app.get("/qpu-slots")
        async def qpu_slots() -> None:
            raise HTTPException(404, "QPU slots are not configured.")

        @app.get("/status", dependencies=[Depends(admin)])
        async def get_status() -> StatusResponse:
            now = time.monotonic()
            statuses = {job.id: job.status(now) for job in self.jobs.values()}
            running = next((j for j in self.jobs.values() if statuses[j.id] == "RUNNING"), None)
            current = None
            if running is not None:
                current = CurrentJob(
                    id=running.id,
                    session_id=running.session.id,
                    user_id=running.session.user_id,
                    started_at=None,
                    backend_id=None,
                )
            return StatusResponse(
                pending_jobs_count=sum(s == "PENDING" for s in statuses.values()),
                current_job=current,
                open_sessions=[
                    OpenSession(
                        id=s.id,
                        user_id=s.user_id,
                        created_at=s.created_at,
                        slurm_job_id=s.slurm_job_id,
                    )
                    for s in self.sessions.values()
                    if s.revoked_at is None
                ],
            )

        return app


@contextlib.contextmanager
def serve(standin: WardenStandin) -> Iterator[str]:
    """``standin`` under uvicorn on 127.0.0.1 (a free port) in a thread; its URL. Stopped
    (and the thread joined) on the way out."""
    port = free_port()
    config = uvicorn.Config(standin.app, host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="warden-standin", daemon=True)
    thread.start()
    try:
        poll_until(lambda: server.started or not thread.is_alive(), "the stand-in to start")
        assert thread.is_alive(), "the Warden stand-in's uvicorn exited"
        standin.url = f"http://127.0.0.1:{port}"
        yield standin.url
    finally:
        server.should_exit = True
        thread.join(30)
