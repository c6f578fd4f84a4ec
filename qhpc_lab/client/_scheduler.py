"""The scheduler target: our second-level scheduler's HTTP API, over httpx.

Identity is a fresh MUNGE credential per request (HPC) and/or a bearer token (laptops, tests).
Waiting is event-driven: one ``GET /events`` stream per target (:attr:`SchedulerTarget.feed`)
serves every watched job and device, and whoever else follows the target (the Jupyter server
extension), so there is no thread and no polling loop per job. A job's own changes come with
``event: job``, its place in line and the queue's length with ``event: queue``; nothing is
re-read but on a ``reset``. A server without ``/events`` (plain Warden) is polled instead.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any

import httpx
import tenacity
from opentelemetry.trace import SpanKind

from qhpc_lab import munge, tracing
from qhpc_lab.client._target import (
    ClientError,
    JobState,
    RefusedError,
    Target,
    TargetError,
    TargetInfo,
)
from qhpc_lab.eventstream import EventStream, Feed, StreamEvent, StreamState
from qhpc_lab.programs import DeviceSpec, Program

AUTH_MODES = ("auto", "munge", "token")
TIMEOUT = httpx.Timeout(60.0, connect=5.0)
"""Generous reads: a cold daemon imports Pulser to validate its first program."""
SUBMIT_ATTEMPTS = 3
"""Tries of one ``POST /jobs`` that no answer reached (one Idempotency-Key for all)."""
POLL_S = 2.0
"""How often a watched job is re-read where the server has no event stream (plain Warden)."""


class SchedulerTarget(Target):
    kind = "scheduler"

    def __init__(
        self,
        name: str,
        url: str,
        *,
        type: str = "scheduler",
        origin: str,
        token: str | None = None,
        auth: str = "auto",
        session: str | None = None,
        job_timeout_s: float | None = None,
    ) -> None:
        """``auth``: ``munge`` or ``token`` only, or ``auto``: a MUNGE credential when munged
        answers, plus the bearer token when there is one (the server uses what it accepts)."""
        if auth not in AUTH_MODES:
            raise ValueError(f"auth must be one of {', '.join(AUTH_MODES)}, got {auth!r}")
        if auth == "token" and not token:
            raise ValueError("auth = 'token' needs a token (token, token_file or $QHPC_TOKEN)")
        super().__init__(name, type, origin, job_timeout_s)
        tracing.configure_from_environment("qhpc-kernel")
        self.url = url.rstrip("/")
        self._auth = auth
        self._token = token
        self._munge_answers = auth != "token"
        headers = {"X-Warden-Session": session} if session else {}
        self._http = httpx.AsyncClient(
            base_url=self.url, headers=headers, timeout=TIMEOUT, auth=self._authenticate
        )
        self._spec: DeviceSpec | None = None
        self.feed = Feed(self._stream)
        """This target's event stream, shared by every watcher: subscribe to follow it."""

    def _authenticate(self, request: httpx.Request) -> httpx.Request:
        """Called for every request (stream reconnections too): MUNGE refuses replays."""
        if self._munge_answers:
            try:
                request.headers["X-Munge-Cred"] = munge.encode()
            except munge.MungeError as err:
                if self._auth == "munge":
                    raise TargetError(f"target {self.name!r} needs MUNGE: {err}") from None
                self._munge_answers = False
        if self._token and self._auth != "munge":
            request.headers["Authorization"] = f"Bearer {self._token}"
        return request

    async def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """The JSON answer; a refusal raises RefusedError, no answer TargetError."""
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.TransportError as err:
            reason = str(err) or type(err).__name__
            raise TargetError(
                f"target {self.name!r} is unreachable at {self.url}: {reason}"
            ) from None
        if response.status_code >= 400:
            raise _refusal(self.name, response)
        return response.json()

    async def info(self) -> TargetInfo:
        try:
            accessible = await self.request("GET", "/accessible")
            device = await self._device()
            if self._spec is None:
                self._spec = DeviceSpec((await self.request("GET", "/qpu/specs"))["specs"])
            return self._describe(device, accessible)
        except ClientError as err:
            return self.unreachable(str(err))
        except (KeyError, TypeError, ValueError) as err:
            return self.unreachable(f"{self.url} does not answer like a scheduler ({err!r})")

    def _describe(self, device: dict[str, Any], accessible: dict[str, Any]) -> TargetInfo:
        """The info from ``GET /device`` (or a device event) and Warden's ``/accessible``."""
        assert self._spec is not None
        state = "ONLINE" if accessible.get("is_accessible") else "MAINTENANCE"
        queue, depth, queued = self.feed.latest("queue"), device.get("queue_depth"), None
        if queue is not None:
            queued = queue.data.get("waiting")
        elif isinstance(depth, dict):  # a server without queue events counts the running job
            queued = sum(depth.values()) - (device.get("running_job") is not None)
        return TargetInfo(
            self.name,
            self.kind,
            self.type,
            self.origin,
            True,
            url=self.url,
            device=device.get("name", self._spec.name),
            state=device.get("state", state),
            calibration_age_s=device.get("calibration_age_s"),
            message=accessible.get("message") or device.get("message", ""),
            spec=self._spec,
            queued=queued,
        )

    async def _device(self) -> dict[str, Any]:
        """``GET /device`` (our extension); a plain Warden has none."""
        try:
            return await self.request("GET", "/device")
        except RefusedError as err:
            if err.status == 404:
                return {}
            raise

    async def submit(self, program: Program, job_class: str | None) -> JobState:
        """``POST /jobs`` with a fresh ``Idempotency-Key``, reused when a dropped connection
        makes us send it again: the server queues the job once however many tries reach it."""
        body: dict[str, Any] = {
            "sequence": program.body,
            "shots": program.shots,
            "format": program.format,
        }
        optional = {"job_class": job_class, "name": program.name, "variables": program.variables}
        body.update({key: value for key, value in optional.items() if value})
        retrying = tenacity.AsyncRetrying(
            stop=tenacity.stop_after_attempt(SUBMIT_ATTEMPTS),
            wait=tenacity.wait_exponential(multiplier=0.25, max=2.0),
            retry=tenacity.retry_if_exception_type(TargetError),
            reraise=True,
        )
        attributes = {
            "qhpc.target": self.name,
            "qhpc.format": program.format,
            "qhpc.shots": program.shots,
        }
        with tracing.tracer().start_as_current_span(
            "qhpc.submit", kind=SpanKind.CLIENT, attributes=attributes
        ) as span:
            headers = tracing.inject({"Idempotency-Key": str(uuid.uuid4())})
            async for attempt in retrying:
                with attempt:
                    view = await self.request("POST", "/jobs", json=body, headers=headers)
            span.set_attribute("qhpc.job_id", view["id"])
        return job_state(view)

    async def state(self, job_id: str) -> JobState:
        return job_state(await self.request("GET", f"/jobs/{job_id}"))

    async def cancel(self, job_id: str) -> JobState:
        return job_state(await self.request("POST", f"/jobs/{job_id}/cancel"))

    async def timeline(self, job_id: str) -> list[dict[str, Any]] | None:
        """``GET /jobs/{id}/timeline``; None from a server without that route (plain Warden:
        the job itself exists, it was submitted here)."""
        try:
            return (await self.request("GET", f"/jobs/{job_id}/timeline"))["entries"]
        except RefusedError as err:
            if err.status == 404:
                return None
            raise

    def _stream(self, on_state: Callable[[StreamState], None]) -> EventStream:
        """The ``/events`` stream on this target's identity (a fresh MUNGE credential or the
        bearer token on each connection)."""
        return EventStream(self._http, "/events", on_state=on_state)

    async def watch(self, job_id: str) -> AsyncIterator[JobState]:
        """The job's own events, and its place in line from each ``queue`` event: no job is
        re-read but on a ``reset`` (or, where the server has no event stream, every few s)."""
        async with self.feed.subscribe() as items:
            polling = (await items.connected()).phase == "failed"
            state = await self.state(job_id)
            yield state
            while not state.final:
                try:
                    item = await asyncio.wait_for(items.get(), POLL_S if polling else None)
                except TimeoutError:
                    item = StreamEvent("reset", {})
                if isinstance(item, StreamState):
                    polling = item.phase == "failed"
                    continue
                try:
                    new = await self._follow(state, item)
                except TargetError:  # a restarting daemon keeps accepted jobs: wait for it
                    continue
                if new != state:
                    state = new
                    yield state

    async def _follow(self, state: JobState, event: StreamEvent) -> JobState:
        """``state`` after ``event``."""
        if event.kind == "job" and str(event.data.get("id")) == state.id:
            return job_state(event.data)
        if event.kind == "queue":
            place = (event.data.get("jobs") or {}).get(state.id)
            if place is not None:
                return dataclasses.replace(
                    state, position=place.get("position"), eta_s=place.get("eta_s")
                )
        elif event.kind == "reset":
            return await self.state(state.id)
        return state

    async def watch_device(self) -> AsyncIterator[TargetInfo]:
        """The device from ``event: device``, the queue's length from ``event: queue``; the
        device is re-read only on a ``reset``."""
        async with self.feed.subscribe() as items:
            await items.connected()
            info = await self.info()
            yield info
            while True:
                item = await items.get()
                if isinstance(item, StreamState):
                    continue
                if item.kind == "reset" or self._spec is None:
                    new = await self.info()
                elif item.kind == "device":
                    accessible = {"is_accessible": item.data.get("accessible", True)}
                    new = self._describe(item.data, accessible)
                elif item.kind == "queue":
                    new = dataclasses.replace(info, queued=item.data.get("waiting"))
                else:
                    continue
                if new != info:
                    info = new
                    yield info

    async def aclose(self) -> None:
        await self._http.aclose()


def job_state(view: dict[str, Any]) -> JobState:
    """A job view of the API (Warden's fields and ours) as a JobState."""
    results = view.get("results")
    counts = json.loads(results).get("counter") if results else None
    return JobState(
        id=str(view["id"]),
        status=str(view["status"]).upper(),
        shots=view.get("shots"),
        shots_done=view.get("shots_done") or 0,
        position=view.get("position"),
        eta_s=view.get("eta_s"),
        counts=counts,
        error=view.get("error"),
        created_at=_time(view.get("created_at")),
        started_at=_time(view.get("started_at")),
        finished_at=_time(view.get("finished_at")),
        calibration_age_s=view.get("calibration_age_s"),
    )


def _time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def _refusal(target: str, response: httpx.Response) -> RefusedError:
    try:
        body = response.json()
        detail, rule = body.get("detail"), body.get("rule")
    except ValueError:
        detail, rule = response.text.strip(), None
    if not isinstance(detail, str):
        detail = json.dumps(detail)
    return RefusedError(
        f"target {target!r} refused ({response.status_code}): {detail or response.reason_phrase}",
        response.status_code,
        rule,
    )
