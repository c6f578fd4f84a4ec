"""The scheduler target: our second-level scheduler's HTTP API, over httpx.

Identity is a fresh MUNGE credential per request (HPC) and/or a bearer token (laptops, tests).
Waiting is event-driven: one ``GET /events`` stream per target serves every watched job and
device, so there is no thread and no polling loop per job; a dropped stream is reopened and
the watched jobs are re-read, which also keeps a server without ``/events`` (plain Warden)
working.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import httpx

from qhpc_lab import munge
from qhpc_lab.client._target import (
    ClientError,
    JobState,
    RefusedError,
    Target,
    TargetError,
    TargetInfo,
)
from qhpc_lab.programs import DeviceSpec, Program

AUTH_MODES = ("auto", "munge", "token")
TIMEOUT = httpx.Timeout(60.0, connect=5.0)
"""Generous reads: a cold daemon imports Pulser to validate its first program."""
STREAM_TIMEOUT = httpx.Timeout(5.0, read=60.0)
"""The server sends a heartbeat every 15 s: a stream silent for 60 s is dead and reopened."""
RETRY_MAX_S = 2.0


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
        self.url = url.rstrip("/")
        self._auth = auth
        self._token = token
        self._munge_answers = auth != "token"
        headers = {"X-Warden-Session": session} if session else {}
        self._http = httpx.AsyncClient(
            base_url=self.url, headers=headers, timeout=TIMEOUT, auth=self._authenticate
        )
        self._spec: DeviceSpec | None = None
        self._feed = _EventFeed(self)

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
        depth = device.get("queue_depth")
        queued = None
        if isinstance(depth, dict):
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
        body: dict[str, Any] = {
            "sequence": program.body,
            "shots": program.shots,
            "format": program.format,
        }
        optional = {"job_class": job_class, "name": program.name, "variables": program.variables}
        body.update({key: value for key, value in optional.items() if value})
        return job_state(await self.request("POST", "/jobs", json=body))

    async def state(self, job_id: str) -> JobState:
        return job_state(await self.request("GET", f"/jobs/{job_id}"))

    async def cancel(self, job_id: str) -> JobState:
        return job_state(await self.request("POST", f"/jobs/{job_id}/cancel"))

    async def watch(self, job_id: str) -> AsyncIterator[JobState]:
        async with self._feed.subscribe(job_id) as updates:
            state = await self.state(job_id)
            yield state
            while not state.final:
                view = await updates.get()
                try:
                    new = await self.state(job_id) if view is None else job_state(view)
                except TargetError:  # a restarting daemon keeps accepted jobs: wait for it
                    continue
                if new != state:
                    state = new
                    yield state

    async def watch_device(self) -> AsyncIterator[TargetInfo]:
        """Our ``event: device`` stream; also re-read when one of the user's jobs enters or
        leaves the queue, which changes its length without a device event."""
        async with self._feed.subscribe_device() as updates:
            info = await self.info()
            yield info
            while True:
                view = await updates.get()
                if view is None or self._spec is None:
                    new = await self.info()
                else:
                    new = self._describe(view, {"is_accessible": view.get("accessible", True)})
                if new != info:
                    info = new
                    yield info

    async def aclose(self) -> None:
        await self._http.aclose()


class _EventFeed:
    """One ``/events`` stream per target, open while some job or device is watched.

    Each job subscriber gets the job's views as they are published, or None whenever it must
    re-read the job: once the stream is open (covering events before that), after a drop, and
    when another of the user's jobs enters or leaves the queue (positions move, and the
    scheduler publishes no event for the jobs that moved). Device subscribers get the device
    views, or None to re-read the device.
    """

    def __init__(self, target: SchedulerTarget) -> None:
        self._target = target
        self._queues: dict[str, set[asyncio.Queue[dict[str, Any] | None]]] = {}
        self._devices: set[asyncio.Queue[dict[str, Any] | None]] = set()
        self._task: asyncio.Task[None] | None = None

    @contextlib.asynccontextmanager
    async def subscribe(self, job_id: str) -> AsyncIterator[asyncio.Queue[dict[str, Any] | None]]:
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self._queues.setdefault(job_id, set()).add(queue)
        self._start()
        try:
            yield queue
        finally:
            listeners = self._queues.get(job_id, set())
            listeners.discard(queue)
            if not listeners:
                self._queues.pop(job_id, None)
            self._stop_if_idle()

    @contextlib.asynccontextmanager
    async def subscribe_device(self) -> AsyncIterator[asyncio.Queue[dict[str, Any] | None]]:
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self._devices.add(queue)
        self._start()
        try:
            yield queue
        finally:
            self._devices.discard(queue)
            self._stop_if_idle()

    def _start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"qhpc-events-{self._target.name}")

    def _stop_if_idle(self) -> None:
        if not self._queues and not self._devices and self._task is not None:
            self._task.cancel()
            self._task = None

    def _resync(self) -> None:
        for listeners in self._queues.values():
            for queue in listeners:
                queue.put_nowait(None)
        for queue in self._devices:
            queue.put_nowait(None)

    async def _run(self) -> None:
        delay = 0.1
        while True:
            # Best effort: whatever breaks the stream, watchers re-read their jobs below.
            with contextlib.suppress(Exception):
                if await self._stream():
                    delay = 0.1
            self._resync()
            await asyncio.sleep(delay)
            delay = min(RETRY_MAX_S, delay * 2)

    async def _stream(self) -> bool:
        """Follow the stream until it ends; False if it never opened."""
        http = self._target._http
        opened = False
        async with http.stream("GET", "/events", timeout=STREAM_TIMEOUT) as response:
            if response.status_code != 200:
                return False
            kind, data = "message", ""
            async for line in response.aiter_lines():
                if not opened:
                    opened = True
                    self._resync()
                if line.startswith("event:"):
                    kind = line[6:].strip()
                elif line.startswith("data:"):
                    data += line[5:].strip()
                elif not line and data:
                    if kind == "job":
                        self._dispatch(json.loads(data))
                    elif kind == "device":
                        for queue in self._devices:
                            queue.put_nowait(json.loads(data))
                    kind, data = "message", ""
        return opened

    def _dispatch(self, view: dict[str, Any]) -> None:
        job_id = str(view.get("id"))
        for queue in self._queues.get(job_id, ()):
            queue.put_nowait(view)
        if view.get("status") == "RUNNING" and view.get("shots_done"):
            return  # a chunk done: the queue did not change
        others = [q for j, listeners in self._queues.items() if j != job_id for q in listeners]
        for queue in [*others, *self._devices]:
            if queue.empty():  # a re-read already pending covers this change too
                queue.put_nowait(None)


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
