"""The scheduler target: our second-level scheduler's HTTP API, over httpx.

Identity is a fresh MUNGE credential per request (HPC) and/or a bearer token (laptops, tests).
Waiting is event-driven: one ``GET /events`` stream per target (:attr:`SchedulerTarget.feed`)
serves every watched job and device, and whoever else follows the target (the Jupyter server
extension), so there is no thread and no polling loop per job. A job's own changes come with
``event: job``, its place in line and the queue's length with ``event: queue``; nothing is
re-read but on a ``reset``. A server without ``/events`` (plain Warden) is polled instead.

A target may name several URLs: the replicas of one scheduler (docs/operations.md, "High
availability"). Requests go to one of them; when it cannot be reached the next one is tried at
once, each at most once per request, and the one that answered is kept (the event stream
reconnects to it and resumes with ``Last-Event-ID``).

Every answer is read in one place (:func:`parse_job` and the models below it): one in a form
this client does not know raises :class:`AnswerError`, naming the target and the value.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, TypeVar

import httpx
import pydantic
import tenacity
from opentelemetry.trace import SpanKind
from pydantic import Json

from qhpc_lab import munge, tracing
from qhpc_lab.client._target import (
    AnswerError,
    CalibrationRange,
    ClientError,
    Estimate,
    JobState,
    LoopMark,
    Quota,
    RefusedError,
    SetResult,
    Target,
    TargetError,
    TargetInfo,
)
from qhpc_lab.eventstream import EventStream, Feed, StreamEvent, StreamState
from qhpc_lab.programs import DeviceSpec, Program
from qhpc_lab.vocabulary import DeviceState
from qhpc_lab.wire.documents import (
    WARDEN_JOB_FIELDS,
    AccessibleOut,
    DeviceOut,
    EstimateOut,
    JobOut,
    JobResults,
    LogsOut,
    QueueEventOut,
    QuotasOut,
    SpecsOut,
    SweepSetsOut,
    TimelineOut,
    read_error,
    tolerant,
)

AUTH_MODES = ("auto", "munge", "token")
TIMEOUT = httpx.Timeout(60.0, connect=5.0)
"""Generous reads: a cold daemon imports Pulser to validate its first program."""
SUBMIT_ATTEMPTS = 3
"""Tries of one ``POST /jobs`` that no answer reached (one Idempotency-Key for all)."""
POLL_S = 2.0
"""How often a watched job is re-read where the server has no event stream (plain Warden)."""
SHOWN_CHARS = 120
"""How much of an answer that cannot be read an error message quotes."""


class SchedulerTarget(Target):
    kind = "scheduler"

    def __init__(
        self,
        name: str,
        url: str | Sequence[str],
        *,
        type: str = "scheduler",
        origin: str,
        token: str | None = None,
        auth: str = "auto",
        session: str | None = None,
        job_timeout_s: float | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        """``url``: the scheduler's, or its replicas' (tried in turn when one is unreachable).
        ``auth``: ``munge`` or ``token`` only, or ``auto``: a MUNGE credential when munged
        answers, plus the bearer token when there is one (the server uses what it accepts).
        ``transport``: what requests go through (default: httpx's own; tests record them)."""
        if auth not in AUTH_MODES:
            raise ValueError(f"auth must be one of {', '.join(AUTH_MODES)}, got {auth!r}")
        if auth == "token" and not token:
            raise ValueError("auth = 'token' needs a token (token, token_file or $QHPC_TOKEN)")
        super().__init__(name, type, origin, job_timeout_s)
        tracing.configure_from_environment("qhpc-kernel")
        self.urls = tuple(u.strip().rstrip("/") for u in ([url] if isinstance(url, str) else url))
        if not self.urls or not all(self.urls):
            raise ValueError(f"a scheduler target needs one URL or more, got {url!r}")
        self._auth = auth
        self._token = token
        self._munge_answers = auth != "token"
        headers = {"X-Warden-Session": session} if session else {}
        self._http = httpx.AsyncClient(
            base_url=self.urls[0],
            headers=headers,
            timeout=TIMEOUT,
            auth=self._authenticate,
            transport=transport,
        )
        self._spec: DeviceSpec | None = None
        self._formats: tuple[str, ...] = ()
        self.time_per_shot_s: float | None = None
        """The device's time per shot, from its last ``/device`` (None from a plain Warden):
        what a waiting job's start estimate takes off its end estimate."""
        self.feed = Feed(self._stream)
        """This target's event stream, shared by every watcher: subscribe to follow it."""

    def _authenticate(self, request: httpx.Request) -> httpx.Request:
        """Called for every request (stream reconnections too): MUNGE refuses replays, and
        each credential is bound to its request (an admin's counts only so)."""
        if self._munge_answers:
            try:
                request.headers["X-Munge-Cred"] = munge.encode_for_request(
                    request.method, request.url.raw_path, request.read()
                )
            except munge.MungeError as err:
                if self._auth == "munge":
                    raise TargetError(f"target {self.name!r} needs MUNGE: {err}") from None
                self._munge_answers = False
        if self._token and self._auth != "munge":
            request.headers["Authorization"] = f"Bearer {self._token}"
        return request

    @property
    def url(self) -> str:
        """The URL requests go to now (one of :attr:`urls`)."""
        return str(self._http.base_url).rstrip("/")

    def _fail_over(self) -> None:
        """Send what follows to the next URL (the replicas in turn)."""
        self._http.base_url = httpx.URL(self.urls[(self.urls.index(self.url) + 1) % len(self.urls)])

    async def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """The JSON answer; a refusal raises RefusedError, no answer TargetError.

        A URL that refuses the connection is failed over at once to the next (each once); a
        connection lost after the request went out fails over too but raises: whether to
        send it again is the caller's (a submission does, under its Idempotency-Key)."""
        return _json(await self._send(method, path, **kwargs), method, path, self.name)

    async def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """The answer to a request, failed over as :meth:`request` says; a refusal raises."""
        for tried in range(1, len(self.urls) + 1):
            try:
                response = await self._http.request(method, path, **kwargs)
                break
            except httpx.TransportError as err:
                reason, unreachable = str(err) or type(err).__name__, self.url
                if len(self.urls) > 1:
                    self._fail_over()
                if isinstance(err, httpx.ConnectError) and tried < len(self.urls):
                    continue
                raise TargetError(
                    f"target {self.name!r} is unreachable at {unreachable}: {reason}"
                ) from None
        if response.status_code >= 400:
            raise _refusal(self.name, response)
        return response

    async def info(self) -> TargetInfo:
        try:
            accessible = _parse(
                _Accessible, await self.request("GET", "/accessible"), self, "its accessibility"
            )
            device = await self._device()
            if self._spec is None:
                specs = _parse(
                    _Specs, await self.request("GET", "/qpu/specs"), self, "device specs"
                )
                self._spec = _device_spec(specs.specs, self)
                self._formats = tuple(specs.formats or ("pulser",))
            return self._describe(device, accessible, await self._queue_facts())
        except ClientError as err:
            return self.unreachable(str(err))

    def _describe(
        self, device: _Device | None, accessible: _Accessible, estimate: Estimate | None = None
    ) -> TargetInfo:
        """The info from ``GET /device`` (or a device event), Warden's ``/accessible`` and
        the queue from ``GET /estimate`` (a one-shot job's). Without ``/device`` (plain Warden)
        the state is unknown (None) unless Warden refuses jobs (MAINTENANCE)."""
        assert self._spec is not None
        device = device or _Device()
        if device.time_per_shot_s is not None:
            self.time_per_shot_s = device.time_per_shot_s
        state = device.state or (None if accessible.is_accessible else DeviceState.MAINTENANCE)
        queue, queued = self.feed.latest("queue"), None
        if estimate is not None and estimate.waiting is not None:
            queued = estimate.waiting
        elif queue is not None:
            queued = _parse(_Queue, queue.data, self, "a queue event").waiting
        elif device.queue_depth is not None:  # a server without queue events counts the running job
            queued = sum(device.queue_depth.values()) - (device.running is not None)
        return TargetInfo(
            self.name,
            self.kind,
            self.type,
            self.origin,
            True,
            url=self.url,
            device=device.name or self._spec.name,
            state=state,
            calibration_age_s=device.calibration_age_s,
            cell_job_class=device.cell_job_class,
            message=accessible.message or device.message or "",
            spec=self._spec,
            queued=queued,
            queue_start_in_s=None if estimate is None else estimate.start_in_s,
            yours=estimate.yours if estimate is not None else (),
            formats=self._formats,
        )

    async def _queue_facts(self) -> Estimate | None:
        """A one-shot job's estimate, for the queue's facts in :meth:`info`: None where the
        server refuses it or answers it in a form this client does not read (an older
        scheduler, a Warden stand-in), which leaves the target usable, its queue unknown."""
        try:
            return await self.estimate(1, None)
        except (RefusedError, AnswerError):
            return None

    async def _device(self) -> _Device | None:
        """``GET /device`` (our extension); None from a plain Warden, which has none."""
        try:
            return _parse(_Device, await self.request("GET", "/device"), self, "a device")
        except RefusedError as err:
            if err.status == 404:
                return None
            raise

    async def submit(
        self,
        program: Program,
        job_class: str | None,
        single_calibration: bool = False,
        max_calibration_age_s: float | None = None,
        loop: LoopMark | None = None,
        sweep: Sequence[tuple[int, dict[str, Any]]] | None = None,
    ) -> JobState:
        """``POST /jobs`` with a fresh ``Idempotency-Key``, reused when a dropped connection
        makes us send it again: the server queues the job once however many tries reach it.
        ``sweep``: its sets (shots, variables), one job (docs/scheduler.md, Sweeps)."""
        body: dict[str, Any] = {
            "sequence": program.body,
            "shots": program.shots,
            "format": program.format,
        }
        if sweep is not None:
            body["sweep"] = [{"shots": n, "variables": v} for n, v in sweep]
        optional = {
            "job_class": job_class,
            "name": program.name,
            "variables": program.variables,
            "single_calibration": single_calibration,
            "max_calibration_age_s": max_calibration_age_s,
            "loop": loop.loop if loop else None,
            "think_time_s": loop.think_time_s if loop else None,
        }
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
            state = parse_job(view, self)
            span.set_attribute("qhpc.job_id", int(state.id))  # the daemon's int id
        return state

    async def state(self, job_id: str) -> JobState:
        return parse_job(await self.request("GET", f"/jobs/{job_id}"), self)

    async def cancel(self, job_id: str) -> JobState:
        """Warden refuses (409) to cancel a finished job or one already being stopped: the
        job's state then, as from our scheduler."""
        try:
            return parse_job(await self.request("POST", f"/jobs/{job_id}/cancel"), self)
        except RefusedError as err:
            if err.status == 409:
                return await self.state(job_id)
            raise

    async def estimate(
        self, shots: int, job_class: str | None, max_calibration_age_s: float | None = None
    ) -> Estimate | None:
        """``GET /estimate`` (our extension); None from a server without it (plain Warden)."""
        query = {
            "shots": shots,
            "job_class": job_class,
            "max_calibration_age_s": max_calibration_age_s,
        }
        try:
            answer = await self.request(
                "GET", "/estimate", params={k: v for k, v in query.items() if v is not None}
            )
        except RefusedError as err:
            if err.status == 404:
                return None
            raise
        estimate = _parse(_Estimate, answer, self, "an estimate")
        return Estimate(
            position=estimate.position,
            done_in_s=estimate.done_in_s,
            run_s=estimate.run_s,
            held_by=estimate.held_by,
            calibration_age_s=estimate.calibration_age_s,
            waiting=None if estimate.queue is None else estimate.queue.waiting,
            yours=() if estimate.queue is None else _places(estimate.queue),
            target=self.name,
        )

    async def jobs(self) -> list[JobState]:
        """``GET /jobs``: the caller's jobs, whichever process submitted them (Warden serves
        it too), newest first there."""
        answer = _parse(_JobList, await self.request("GET", "/jobs"), self, "a job list")
        return [_state(job, self.time_per_shot_s) for job in reversed(answer.root)]

    async def logs(self, job_id: str) -> str:
        """``GET /jobs/{id}/logs``: the job's story as the scheduler tells it (Warden: its log)."""
        answer = await self.request("GET", f"/jobs/{job_id}/logs")
        return _parse(_Logs, answer, self, "a job's logs").logs

    async def quotas(self) -> list[Quota] | None:
        """``GET /quotas`` (our extension): the quotas the caller's jobs are charged to; None
        from a server without it (plain Warden)."""
        try:
            answer = await self.request("GET", "/quotas")
        except RefusedError as err:
            if err.status == 404:
                return None
            raise
        quotas = _parse(_Quotas, answer, self, "quotas").quotas
        kept = {field.name for field in dataclasses.fields(Quota)}
        return [Quota(self.name, **quota.model_dump(include=kept)) for quota in quotas]

    async def submit_sweep(
        self,
        program: Program,
        sets: Sequence[tuple[int, dict[str, Any]]],
        job_class: str | None,
        single_calibration: bool = False,
        max_calibration_age_s: float | None = None,
        loop: LoopMark | None = None,
    ) -> JobState:
        return await self.submit(
            program, job_class, single_calibration, max_calibration_age_s, loop, sweep=sets
        )

    async def sweep_sets(self, job_id: str) -> tuple[SetResult, ...]:
        """``GET /jobs/{id}/sets``, every page: each links the next while sets remain."""
        path, results = f"/jobs/{job_id}/sets", list[SetResult]()
        page: httpx.QueryParams | None = httpx.QueryParams()
        while page is not None:
            response = await self._send("GET", path, params=page)
            answer = _json(response, "GET", path, self.name)
            sets = _parse(_Sets, answer, self, "a sweep's sets").sets
            results += (SetResult(s.index, s.variables, s.counter) for s in sets)
            following = response.links.get("next", {}).get("url")
            # The next page's query only: the link names the daemon's own address, which a
            # proxy's prefix or a failed-over URL may not be.
            page = httpx.URL(following).params if sets and following else None
        return tuple(results)

    async def timeline(self, job_id: str) -> list[dict[str, Any]] | None:
        """``GET /jobs/{id}/timeline``; None from a server without that route (plain Warden:
        the job itself exists, it was submitted here)."""
        try:
            answer = await self.request("GET", f"/jobs/{job_id}/timeline")
            return _parse(_Timeline, answer, self, "a timeline").entries
        except RefusedError as err:
            if err.status == 404:
                return None
            raise

    def _stream(self, on_state: Callable[[StreamState], None]) -> EventStream:
        """The ``/events`` stream on this target's identity (a fresh MUNGE credential or the
        bearer token on each connection); a lost one reconnects to the next URL."""

        def followed(state: StreamState) -> None:
            if state.phase == "reconnecting" and len(self.urls) > 1:
                self._fail_over()
            on_state(state)

        return EventStream(self._http, "/events", on_state=followed)

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
            return parse_job(event.data, self)
        if event.kind == "queue":
            places = _parse(_Queue, event.data, self, "a queue event").jobs or {}
            place = places.get(state.id)
            if place is not None:
                return dataclasses.replace(
                    state, position=place.position, end_in_s=place.eta_s, held_by=place.held_by
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
                    device = _parse(_Device, item.data, self, "a device event")
                    accessible = _Accessible(is_accessible=device.accessible is not False)
                    new = self._describe(device, accessible)
                    new = dataclasses.replace(
                        new, queue_start_in_s=info.queue_start_in_s, yours=info.yours
                    )
                elif item.kind == "queue":
                    queue = _parse(_Queue, item.data, self, "a queue event")
                    new = dataclasses.replace(info, queued=queue.waiting, yours=_places(queue))
                else:
                    continue
                if new != info:
                    info = new
                    yield info

    async def aclose(self) -> None:
        await self._http.aclose()


# -- reading answers --------------------------------------------------------------------------
# The daemon's documents (qhpc_lab.wire), each read tolerantly: beyond Warden's own fields any
# may be absent (a plain Warden, an older scheduler), but what is there has the field's type.

Answer = TypeVar("Answer", bound=pydantic.BaseModel)


class _Job(tolerant(JobOut, WARDEN_JOB_FIELDS)):  # type: ignore[misc]
    """A job, with its ``results`` text read as what it holds."""

    results: Json[JobResults] | None = None


_JobList = pydantic.RootModel[list[_Job]]
"""Warden's ``GET /jobs``."""
_Logs = tolerant(LogsOut, ("logs",))
_Quotas = tolerant(QuotasOut, ("quotas",))
_Accessible = tolerant(AccessibleOut, ("is_accessible",))
_Specs = tolerant(SpecsOut, ("specs",))
"""Warden's ``GET /qpu/specs``: a plain Warden does not say which formats the device runs
(it runs pulser)."""
_Device = tolerant(DeviceOut)
"""Our scheduler's ``GET /device`` and ``event: device``; a plain Warden has none."""
_Queue = tolerant(QueueEventOut)
_Estimate = tolerant(EstimateOut, ("position", "done_in_s", "run_s"))
_Timeline = tolerant(TimelineOut, ("entries",))
_Sets = tolerant(SweepSetsOut, ("sets",))


def _json(response: httpx.Response, method: str, path: str, target: str) -> Any:
    """The JSON of ``target``'s answer to ``method path``; AnswerError when it is not JSON."""
    try:
        return response.json()
    except ValueError:
        raise AnswerError(
            f"target {target!r} answered {method} {path} with {_excerpt(response)}, not JSON"
        ) from None


def _places(queue: QueueEventOut) -> tuple[int, ...]:
    """The caller's jobs' places in a queue event (0 = running), nearest first."""
    return tuple(sorted(place.position for place in (queue.jobs or {}).values()))


def parse_job(view: Any, target: SchedulerTarget) -> JobState:
    """A job of the API (Warden's fields and ours) as a JobState; AnswerError if it is not one."""
    return _state(_parse(_Job, view, target, "a job"), target.time_per_shot_s)


def _state(job: _Job, time_per_shot_s: float | None = None) -> JobState:
    return JobState(
        id=str(job.id),
        status=job.status,
        shots=job.shots,
        shots_done=job.shots_done or 0,
        position=job.position,
        end_in_s=job.eta_s,
        time_per_shot_s=time_per_shot_s,
        held_by=job.held_by,
        counts=None if job.results is None else job.results.counter,
        error=job.error,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        calibration_age_s=job.calibration_age_s,
        calibrations=tuple(
            CalibrationRange(**entry.model_dump()) for entry in job.calibrations or ()
        ),
        qpu_seconds=job.qpu_seconds,
        sets=job.sets,
        sets_done=job.sets_done,
    )


def _parse(model: type[Answer], value: Any, target: SchedulerTarget, what: str) -> Answer:
    """``value`` read as ``model``; AnswerError naming ``what``, the target and the first
    field that does not fit."""
    try:
        return model.model_validate(value)
    except pydantic.ValidationError as err:
        raise AnswerError(
            f"target {target.name!r} sent {what} this client cannot read: {_explain(err)}"
        ) from None


def _explain(err: pydantic.ValidationError) -> str:
    first = err.errors(include_url=False)[0]
    place = ".".join(str(part) for part in first["loc"] if part != "[key]")
    if first["type"] == "missing":
        return f"no {place!r} in {_quote(first['input'])}"
    said = "Input should be a JSON object" if first["type"] == "model_type" else first["msg"]
    return f"{place or 'the answer'} is {_quote(first['input'])}: {said}"


def _quote(value: Any) -> str:
    """``value`` as Python writes it, clipped to SHOWN_CHARS."""
    text = repr(value)
    return text if len(text) <= SHOWN_CHARS else f"{text[:SHOWN_CHARS]}…"


def _device_spec(text: str, target: SchedulerTarget) -> DeviceSpec:
    """The device of ``GET /qpu/specs``; AnswerError if its text is not a Pulser device."""
    try:
        return DeviceSpec(text)
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise AnswerError(
            f"target {target.name!r} sent device specs this client cannot read "
            f"({type(err).__name__}: {err}): {_quote(text)}"
        ) from None


def _refusal(target: str, response: httpx.Response) -> RefusedError:
    error = read_error(response.content)
    detail = _excerpt(response) if error is None else error.detail
    return RefusedError(
        f"target {target!r} refused ({response.status_code}): {detail or response.reason_phrase}",
        response.status_code,
        None if error is None else error.rule,
    )


def _excerpt(response: httpx.Response) -> str:
    """A body that is not JSON, as one short line: its type and its text (an HTML page's
    text without its markup)."""
    text = response.text
    kind = response.headers.get("content-type", "no content type").split(";")[0]
    if "html" in kind:
        text = re.sub(r"(?is)<(script|style)\b.*?</\1>|<[^>]+>", " ", text)
    text = " ".join(text.split())
    return f"{kind} {_quote(text)}" if text else f"an empty {kind} body"
