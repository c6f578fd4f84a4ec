"""A QPU behind Pasqal's on-premises QPU API: the driver a site points at its device.

The QPU API is what Warden's worker drives (base ``/api/v1``, JSend envelopes ``{code,
message, data}``): ``GET /system`` gives the device's specs (Pulser's device JSON), ``GET
/system/operational`` says ``UP`` or ``DOWN``, ``POST /jobs`` runs a sequence ``nb_run``
times, ``GET /jobs/{uid}`` follows it, ``PUT /jobs/{uid}/cancel`` stops it (400 with a code
holding ``3003`` once it can no longer be stopped). ``qhpc qpu serve`` serves the emulated
device over the same API.

Each shot chunk is one QPU job, so the chunk boundary stays the preemption point. What the
driver guarantees, and how (docs/scheduler.md, "The QPU API driver"):

- **no chunk runs twice**: the QPU job's uid goes to the scheduler's :class:`Ledger` before the
  driver waits on it, and a scheduler that restarts (or a replica that takes over) adopts the
  job it finds there (:meth:`QPUApiDriver.adopt`). A ``POST /jobs`` is sent again only when
  the request provably never reached the device (refused connection, 502/503). An answer lost
  after sending is looked for among the jobs created after the last one known, by our
  ``pasqman_job_id``: found, it is waited on; not found within ``lost_answer_wait_s``, the
  chunk is sent again, and should the lost one appear later it is canceled;
- **DOWN stops dispatching**: the device's state is polled; while it is DOWN (or the API is
  unreachable) the driver reports OFFLINE, jobs wait, and the scheduler is woken on UP;
- **device time is the device's**: accounting uses the QPU job's start and end; the time from
  creation to start (upload, register loading) is measured and sizes the chunks so that it
  stays under ``overhead_share`` of a chunk, and enters the per-shot time ETAs use;
- **calibration is not invented**: the API says nothing of it. The calibration in force is the
  last one an operator declared (``qhpc admin calibrate`` records one, it drives nothing), and
  the scheduler schedules none.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import dataclasses
import json
import logging
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
from tenacity import (
    AsyncRetrying,
    Retrying,
    retry_if_exception,
    stop_after_delay,
    wait_exponential,
)

from qhpc_lab.programs import DeviceSpec, Program
from qhpc_lab.qpu import (
    JOB_CANCELED,
    Calibration,
    ChunkCanceled,
    ChunkNotRun,
    ChunkOutcome,
    DeviceProfile,
    DeviceState,
    Drift,
    InFlight,
    Ledger,
)

log = logging.getLogger("qhpc.qpu")

API_PREFIX = "/api/v1"
CANNOT_CANCEL = "3003"
"""Part of the QPU API's error code for "the program can no longer be canceled"."""
ENDED = ("DONE", "ERROR", "CANCELED")
UNSEEN_INTERVAL_S = 5 * 365 * 86400.0
"""The calibration interval the scheduler is given for a device it does not calibrate: the
device calibrates itself, unseen, so no periodic calibration is ever due."""
NO_DRIFT = Drift(0.0, 0.0, 0.0)
"""What the QPU API tells of the readout error's drift: nothing."""
TIMING_DECAY = 0.8
"""How much the timing measured so far keeps of its weight at each new QPU job (a moving
average: the shot time is weighted by shots, so a one-shot job barely moves it)."""
CHUNK_HYSTERESIS = 0.25
"""Chunks keep their size until the measured timing moves it by more than this share: a job
of one chunk is not cut in two by noise in the last measurement."""
EARLY = 0.97
"""A running QPU job is first polled at this share of its shots' expected time after it
started at the latest, then every ``TAIL_POLL`` of that time (2 to 20 ms): the device idles
little between two chunks, and a 10 s chunk costs a dozen polls."""
TAIL_POLL = 0.002


@dataclass(frozen=True)
class QPUApiSettings:
    """How the scheduler drives a device through the QPU API (``qpu_*`` scheduler settings)."""

    url: str
    """The QPU API's base address, without ``/api/v1`` (``qpu_url``)."""
    time_per_shot_s: float = 0.2
    """First estimate of one shot's device time, until the device's own job times replace it."""
    chunk_seconds: float = 10.0
    """Device time of one chunk (the preemption point), as with an emulated profile."""
    overhead_share: float = 0.10
    """Chunks are made long enough that the measured setup time (QPU job creation → start)
    stays under this share of a chunk. 10 %: the policy frontier's knee (docs/policy.md); 5 %
    made a 2 s setup's chunks 38 s long, and interactive waits twice as long."""
    timeout_s: float = 10.0
    """One QPU API request's time-out, but ``POST /jobs``'s."""
    create_timeout_s: float = 60.0
    """``POST /jobs``'s time-out: the device checks and stores the sequence before answering."""
    retry_for_s: float = 30.0
    """How long transient faults (refused connections, 5xx, time-outs) of one call are retried
    before the call gives up (a running job's polls are retried for as long as it takes)."""
    start_wait_s: float = 300.0
    """How long :meth:`QPUApiDriver.connect` waits for the QPU API to answer (``qpu_start_wait_s``):
    a device, or an emulated one started beside the scheduler, may come up after it."""
    status_poll_s: float = 1.0
    """How often the device's operational status (and, every ``specs_poll_s``, its specs) is
    read."""
    specs_poll_s: float = 30.0
    lost_answer_wait_s: float = 10.0
    """After a lost ``POST /jobs`` answer: how long to look for the job before giving up."""
    calibrates_when_down: bool = False
    """The site declares that its device calibrates while DOWN: each return to UP then counts
    as a new calibration. Off, only an operator's mark does, unless the device says so itself
    (``GET /system`` with ``calibrates_when_down``: ``qhpc qpu serve`` does)."""


@dataclass
class MeasuredTiming:
    """Sums over the QPU jobs measured so far, each decayed by :data:`TIMING_DECAY` at every
    new job: the setup time per job, and the shot time per shot (weighted by shots)."""

    jobs: float = 0.0
    setup_s: float = 0.0
    busy_s: float = 0.0
    shots: float = 0.0

    def fold(self, shots: int, setup_s: float, busy_s: float) -> None:
        self.jobs = self.jobs * TIMING_DECAY + 1
        self.setup_s = self.setup_s * TIMING_DECAY + setup_s
        self.busy_s = self.busy_s * TIMING_DECAY + busy_s
        self.shots = self.shots * TIMING_DECAY + shots


class QPUApiError(RuntimeError):
    """The device refused or failed a chunk; the message carries the device's own answer."""


class _Transient(Exception):
    """A 5xx answer: retried like a refused connection."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(f"{response.status_code} {_message(response)}")
        self.response = response


class _Refused(Exception):
    """A 4xx answer: the device's JSend ``code`` and message."""

    def __init__(self, response: httpx.Response) -> None:
        self.code = str(_body(response).get("code", response.status_code))
        self.data = _body(response).get("data")
        super().__init__(f"{response.status_code} (code {self.code}): {_message(response)}")


def _body(response: httpx.Response) -> dict[str, Any]:
    with contextlib.suppress(ValueError):
        body = response.json()
        if isinstance(body, dict):
            return body
    return {}


def _message(response: httpx.Response) -> str:
    return str(_body(response).get("message") or response.text[:200] or response.reason_phrase)


def _said(err: BaseException) -> str:
    """An error as a log or a job's error shows it (httpx's time-outs have no message)."""
    return f"{type(err).__name__}: {err}" if str(err) else type(err).__name__


def _transient(err: BaseException) -> bool:
    return isinstance(err, httpx.TransportError | _Transient)


def _never_sent(err: BaseException) -> bool:
    """Whether a failed ``POST /jobs`` provably never reached the device: sending it again
    cannot create a second job."""
    if isinstance(err, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
        return True
    return isinstance(err, _Transient) and err.response.status_code in (502, 503)


def parse_result(text: Any, nb_run: int) -> dict[str, int]:
    """A QPU job's ``result``: ``{"counter": {bits: n}}`` as JSON text, as the text of a Python
    literal (Warden's mock answers that) or as an object, with exactly ``nb_run`` shots. Anything
    else raises :class:`QPUApiError` quoting the device's answer."""
    data = text
    if isinstance(text, str):
        try:
            data = json.loads(text)
        except ValueError:
            try:
                data = ast.literal_eval(text)
            except (ValueError, SyntaxError, MemoryError, RecursionError):
                raise QPUApiError(f"the device's result is not readable: {text[:200]!r}") from None
    counter = data.get("counter") if isinstance(data, dict) else None
    valid = isinstance(counter, dict) and all(
        isinstance(bits, str)
        and bits
        and set(bits) <= {"0", "1"}
        and isinstance(n, int)
        and not isinstance(n, bool)
        and n >= 0
        for bits, n in counter.items()
    )
    if not valid:
        raise QPUApiError(f"the device's result has no counter of bitstrings: {str(text)[:200]!r}")
    shots = sum(counter.values())
    if shots != nb_run:
        raise QPUApiError(
            f"the device returned {shots} shots for a job of {nb_run}: {str(text)[:200]!r}"
        )
    return {bits: n for bits, n in counter.items() if n}


def _time(value: Any) -> float:
    """A QPU API datetime (ISO 8601; naive means UTC) as a Unix time."""
    moment = datetime.fromisoformat(str(value))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


class QPUApiDriver:
    """A :class:`~qhpc_lab.qpu.QPUDriver` for a device behind the QPU API."""

    def __init__(
        self,
        settings: QPUApiSettings,
        specs: dict[str, Any],
        calibrated_at: float | None = None,
        *,
        calibration_id: int = 1,
        clock: Callable[[], float] = time.time,
        stands_in: str = "",
    ) -> None:
        """``specs``: the device as ``GET /system`` gives it (:meth:`connect` reads them)."""
        self.settings = settings
        self._clock = clock
        self._specs = specs
        self._stands_in = stands_in
        self._time_per_shot_s = settings.time_per_shot_s
        self._setup_s = 0.0
        self._measured = MeasuredTiming()
        self._chunk_shots: int | None = None
        self.profile = self._profile()
        self._calibration = Calibration(
            calibration_id, clock() if calibrated_at is None else calibrated_at, NO_DRIFT
        )
        self._state = DeviceState.ONLINE
        self._down_since: float | None = None
        self._unreachable: str | None = None
        self._last_uid: int | None = None
        self._lost: set[str] = set()
        """pasqman_job_ids of requests whose answer was lost and whose job was not found: if
        one appears later, it is canceled."""
        self._built: dict[str, str] = {}
        self._client: httpx.AsyncClient | None = None
        self._monitor: asyncio.Task[None] | None = None
        self.ledger: Ledger | None = None
        self.on_change: Callable[[], None] = lambda: None
        """Called when the device's state, specs or timing changed (the scheduler wakes its
        dispatcher and tells watchers)."""

    @classmethod
    def connect(
        cls, settings: QPUApiSettings, calibrated_at: float | None = None, **kw: Any
    ) -> QPUApiDriver:
        """The driver for the device at ``settings.url``, its specs read now (retried for
        ``start_wait_s``; a device that cannot be reached raises, naming the address)."""
        try:
            with httpx.Client(base_url=settings.url + API_PREFIX, timeout=settings.timeout_s) as c:
                for attempt in _retrying(settings.start_wait_s, sync=True):
                    with attempt:
                        data = _checked(c.get("/system"))["data"]
            DeviceSpec(json.dumps(data["specs"]))  # Pulser's device JSON, or a clear error
        except (httpx.HTTPError, _Transient, _Refused, KeyError, TypeError, ValueError) as err:
            raise RuntimeError(
                f"cannot read the device's specs from the QPU API at {settings.url}: {err}"
            ) from None
        if data.get("calibrates_when_down") is True:
            settings = dataclasses.replace(settings, calibrates_when_down=True)
        stands_in = data.get("stands_in", "")
        return cls(settings, data["specs"], calibrated_at, stands_in=stands_in, **kw)

    # -- what the scheduler reads ----------------------------------------------------------

    @property
    def notice(self) -> str:
        """What users read about the device: where it is, and why it is DOWN."""
        if self._unreachable is not None:
            return f"the QPU API at {self.settings.url} cannot be reached: {self._unreachable}"
        if self._down_since is not None:
            since = datetime.fromtimestamp(self._down_since, UTC).strftime("%H:%M:%S UTC")
            return f"the QPU reports DOWN since {since}: jobs wait until it is UP again"
        where = f"QPU {self.profile.spec.name} through the QPU API at {self.settings.url}"
        return f"{where} ({self._stands_in})" if self._stands_in else where

    @property
    def state(self) -> DeviceState:
        return self._state

    @property
    def calibrated_at(self) -> float:
        return self._calibration.calibrated_at

    @property
    def calibration(self) -> Calibration:
        return self._calibration

    @property
    def setup_s(self) -> float:
        """The measured time from a QPU job's creation to its start (upload, loading)."""
        return self._setup_s

    @property
    def shot_s(self) -> float:
        """The measured time a shot runs, the setup excluded."""
        return self._time_per_shot_s

    def _profile(self) -> DeviceProfile:
        """The device as the scheduler sees it: the specs, and timing from what was measured.

        A chunk is ``chunk_seconds`` of shots, or more when the setup time would otherwise
        exceed ``overhead_share`` of it, never more than the device's ``max_runs``; the shot
        time and the setup per chunk are the measured ones (``job_setup_s``): the policy fits
        chunks into windows with both, and ETAs count the setup spread over a chunk."""
        spec = DeviceSpec(json.dumps(self._specs))
        s = self.settings
        shot = self._time_per_shot_s
        shots = max(1, int(s.chunk_seconds / shot))
        share = s.overhead_share
        if self._setup_s > 0 and 0 < share < 1:
            shots = max(shots, math.ceil(self._setup_s * (1 - share) / (share * shot)))
        kept = self._chunk_shots
        if kept is not None and abs(shots - kept) <= CHUNK_HYSTERESIS * kept:
            shots = kept
        if spec.max_runs:
            shots = min(shots, spec.max_runs)
        self._chunk_shots = shots
        return DeviceProfile(
            name="qpu-api",
            description=f"the device behind the QPU API at {s.url}",
            spec=spec,
            time_per_shot_s=shot,
            chunk_seconds=(shots + 0.5) * shot,
            calibration_interval_s=UNSEEN_INTERVAL_S,
            calibration_duration_s=0.0,
            drift=NO_DRIFT,
            calibrates=False,
            job_setup_s=self._setup_s,
        )

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self._client = httpx.AsyncClient(
            base_url=self.settings.url + API_PREFIX, timeout=self.settings.timeout_s
        )
        self._monitor = asyncio.get_running_loop().create_task(self._watch(), name="qhpc-qpu-api")

    async def close(self) -> None:
        if self._monitor is not None:
            self._monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._monitor
        if self._client is not None:
            await self._client.aclose()

    async def calibrate(self) -> None:
        """An operator's mark: the device was calibrated now (the API can neither do it nor
        tell it). Results after it carry the new calibration's number and time."""
        self._calibration = Calibration(self._calibration.id + 1, self._clock(), NO_DRIFT)

    def forget(self, key: str) -> None:
        self._built.pop(key, None)

    # -- the device's state ------------------------------------------------------------------

    async def _watch(self) -> None:
        """Poll the operational status (and now and then the specs) for as long as we run."""
        specs_read = self._clock()
        while True:
            due = self._clock() - specs_read >= self.settings.specs_poll_s
            try:
                await self.refresh(specs=due)
            except Exception as err:  # a refusal, a malformed answer: said, and tried again
                log.warning("reading the QPU's state failed: %s", _said(err))
            else:
                specs_read = self._clock() if due else specs_read
            await asyncio.sleep(self.settings.status_poll_s)

    async def refresh(self, specs: bool = False) -> None:
        """Read the operational status now (and the specs with ``specs``, or on coming UP)."""
        try:
            status = (await self._request("GET", "/system/operational"))["operational_status"]
        except (httpx.HTTPError, _Transient) as err:
            self._set_state(DeviceState.OFFLINE, unreachable=_said(err))
            return
        up = status == "UP"
        if up and (specs or self._state is not DeviceState.ONLINE):
            await self._read_specs()
        self._set_state(DeviceState.ONLINE if up else DeviceState.OFFLINE)

    async def _read_specs(self) -> bool:
        """Re-read ``GET /system``; whether the specs changed (the profile follows them)."""
        specs = (await self._request("GET", "/system"))["specs"]
        if specs == self._specs:
            return False
        log.warning("the QPU's specs changed; validation and chunk sizes follow the new ones")
        self._specs = specs
        self.profile = self._profile()
        self.on_change()
        return True

    def _set_state(self, state: DeviceState, unreachable: str | None = None) -> None:
        changed = state is not self._state or (unreachable is None) != (self._unreachable is None)
        was_down = self._state is not DeviceState.ONLINE and self._unreachable is None
        self._unreachable = unreachable
        if state is DeviceState.ONLINE:
            if was_down and self.settings.calibrates_when_down:
                self._calibration = Calibration(self._calibration.id + 1, self._clock(), NO_DRIFT)
                log.warning(
                    "the QPU is UP: calibration #%d (it calibrates when DOWN)", self._calibration.id
                )
            self._down_since = None
        else:
            if self._down_since is None:
                self._down_since = self._clock()
                log.warning("the QPU is DOWN: %s", self.notice)
        self._state = state
        if changed:
            self.on_change()

    # -- chunks ------------------------------------------------------------------------------

    async def run_chunk(
        self, key: str, program: Program, shots: int, remaining: int
    ) -> ChunkOutcome:
        """One QPU job of ``shots`` runs. Raises :class:`~qhpc_lab.qpu.ChunkNotRun` when the
        device is DOWN or unreachable before the job exists (the job waits, nothing ran), and
        :class:`QPUApiError` when the device refused or failed it."""
        if shots > (self.profile.spec.max_runs or shots):
            raise ChunkNotRun(f"{shots} shots exceed the device's max_runs")
        sequence = await self._sequence(key, program)
        first = program.shots - remaining + 1  # numbered as results number shots
        ours = f"qhpc-job-{key}-shots-{first}-{first + shots - 1}-{uuid.uuid4().hex[:12]}"
        intent = InFlight(key, shots, ours, self._last_uid)
        if self.ledger is not None:  # before sending: a crash in between leaves a trace
            await self.ledger.sending(intent)
        sent_at = self._clock()
        flight = await self._create(intent, sequence)
        if self.ledger is not None:
            await self.ledger.submitted(flight)
        try:
            return await self._outcome(flight, sent_at)
        except asyncio.CancelledError as err:
            if err.args != (JOB_CANCELED,):
                raise  # the scheduler is stopping: the QPU job stays, its successor adopts it
            outcome = await asyncio.shield(self._cancel(flight))
            raise ChunkCanceled(flight.shots if outcome else 0, outcome) from None

    async def adopt(self, flight: InFlight) -> ChunkOutcome | None:
        """The outcome of a QPU job a previous scheduler left in flight, once it ends (None if
        the device canceled it, it failed, or it was never created: its shots run again). A
        flight without a uid was being sent: it is looked for by its pasqman_job_id."""
        if flight.uid is None:
            job = await self._find_lost(flight, "the scheduler stopped while sending it")
            if job is None:
                self._lost.add(flight.pasqman_job_id)
                return None
            flight = dataclasses.replace(flight, uid=int(job["uid"]))
        assert flight.uid is not None
        self._last_uid = max(self._last_uid or 0, flight.uid)
        try:
            return await self._outcome(flight)
        except QPUApiError as err:
            log.warning("adopted QPU job %s did not complete: %s", flight.uid, err)
            return None

    async def _sequence(self, key: str, program: Program) -> str:
        """The sequence the device runs: a parametrised one built with the job's variables (or
        its own defaults); built once per job."""
        built = self._built.get(key)
        if built is None:
            built = program.body
            if program.variables or json.loads(program.body).get("variables"):
                built = await asyncio.to_thread(_build, program)
            self._built[key] = built
        return built

    async def _create(self, intent: InFlight, sequence: str) -> InFlight:
        context = {"batch_id": f"qhpc-job-{intent.key}", "pasqman_job_id": intent.pasqman_job_id}
        payload = {"nb_run": intent.shots, "pulser_sequence": sequence, "context": context}
        try:
            job = await self._post_jobs(payload)
        except _Refused as err:
            if await self._read_specs():  # the device changed under us: decide again
                raise ChunkNotRun(f"the device's specs changed: {err}") from None
            raise QPUApiError(f"the QPU refused the job: {err}") from None
        except (httpx.HTTPError, _Transient) as err:
            if _never_sent(err):
                self._set_state(DeviceState.OFFLINE, unreachable=_said(err))
                raise ChunkNotRun(f"the QPU API cannot be reached: {_said(err)}") from None
            found = await self._find_lost(intent, f"its answer was lost: {_said(err)}")
            if found is None:
                self._lost.add(intent.pasqman_job_id)
                raise ChunkNotRun(
                    f"the answer to POST /jobs was lost ({_said(err)}) and its job does not "
                    "exist: the chunk is sent again"
                ) from None
            job = found
        flight = dataclasses.replace(intent, uid=int(job["uid"]))
        assert flight.uid is not None
        if self._lost and self._last_uid is not None and flight.uid > self._last_uid + 1:
            await self._cancel_late(range(self._last_uid + 1, flight.uid))
        self._last_uid = max(self._last_uid or 0, flight.uid)
        return flight

    async def _cancel_late(self, uids: range) -> None:
        """Jobs created between two of ours are looked at once a POST answer was lost: one
        carrying a lost request's pasqman_job_id came too late and was replaced; it is
        canceled (its shots must not run twice)."""
        for uid in uids:
            with contextlib.suppress(httpx.HTTPError, _Transient, _Refused):
                job = await self._request("GET", f"/jobs/{uid}")
                lost = (job.get("context") or {}).get("pasqman_job_id")
                if lost not in self._lost:
                    continue
                self._lost.discard(lost)
                try:
                    await self._request("PUT", f"/jobs/{uid}/cancel")
                    log.warning("canceled QPU job %s: a lost request's, created late", uid)
                except _Refused as err:
                    log.error(
                        "QPU job %s, a lost request's created late, could not be canceled "
                        "(%s): its shots ran on the device a second time, its result unused",
                        uid,
                        err,
                    )

    async def _post_jobs(self, payload: dict[str, Any]) -> dict[str, Any]:
        """``POST /jobs``, sent again only while the request provably never arrived."""
        async for attempt in _retrying(self.settings.retry_for_s, _never_sent):
            with attempt:
                return await self._request("POST", "/jobs", json=payload)
        raise AssertionError("unreachable")

    async def _find_lost(self, intent: InFlight, why: str) -> dict[str, Any] | None:
        """The job a ``POST /jobs`` with no answer may have created, looked for during
        ``lost_answer_wait_s`` among the uids after the last one known when it was sent (the
        API has no search by our ids; uids are taken to count up). None: it made no job."""
        pasqman_job_id = intent.pasqman_job_id
        log.warning("looking for the QPU job of a POST /jobs with no answer (%s)", why)
        deadline = self._clock() + self.settings.lost_answer_wait_s
        first = 0 if intent.after_uid is None else intent.after_uid + 1
        while True:
            uid = first
            with contextlib.suppress(httpx.HTTPError, _Transient):
                while True:
                    try:
                        job = await self._request("GET", f"/jobs/{uid}")
                    except _Refused:
                        break  # no job with this uid (yet)
                    if (job.get("context") or {}).get("pasqman_job_id") == pasqman_job_id:
                        log.warning("found the job of the lost answer: QPU job %s", uid)
                        return job
                    uid += 1
            if self._clock() >= deadline:
                log.warning("no job of the lost answer after QPU job %s: sent again", first - 1)
                return None
            await asyncio.sleep(0.2)

    async def _outcome(self, flight: InFlight, sent_at: float | None = None) -> ChunkOutcome:
        """Wait for the QPU job to end; retries through faults. A running job is polled from
        just before its earliest possible end on the scheduler's own clock (it started after
        it was last seen waiting, or after ``sent_at``): the device's clock is not trusted."""
        path = f"/jobs/{flight.uid}"
        seen_down = False
        waiting_seen = sent_at
        while True:
            try:
                job = await self._request("GET", path, retry_for_s=math.inf)
            except _Refused as err:
                raise QPUApiError(f"QPU job {flight.uid} cannot be followed: {err}") from None
            status = job.get("status")
            if status in ENDED:
                break
            if status == "PENDING":
                waiting_seen = self._clock()
                if self._state is not DeviceState.ONLINE:  # waits for UP: no need to hurry
                    seen_down = True
                    await asyncio.sleep(self.settings.status_poll_s)
                else:
                    await asyncio.sleep(min(0.1, max(0.01, self._setup_s / 4)))
                continue
            shots_s = flight.shots * self._time_per_shot_s
            if waiting_seen is None:  # adopted while running: no bound on its start
                await asyncio.sleep(min(1.0, max(0.005, shots_s / 10)))
                continue
            earliest = waiting_seen + EARLY * shots_s
            tail = min(0.02, max(0.002, TAIL_POLL * shots_s))
            await asyncio.sleep(min(1.0, max(tail, earliest - self._clock())))
        if status != "DONE":
            errors = job.get("errors") or job.get("error") or ""
            raise QPUApiError(f"QPU job {flight.uid} ended {status}: {errors or 'no reason given'}")
        counts = parse_result(job.get("result"), flight.shots)
        started, ended = _time(job["start_datetime"]), _time(job["end_datetime"])
        if not seen_down:
            self._learn(flight.shots, _time(job["created_datetime"]), started, ended)
        calibration = self._calibration
        return ChunkOutcome(
            counts,
            started,
            ended,
            started - calibration.calibrated_at,
            max(0.0, ended - started),
            0.0,
            calibration,
        )

    def _learn(self, shots: int, created: float, started: float, ended: float) -> None:
        """Fold one job's measured timing into the profile."""
        measured = self._measured
        measured.fold(shots, max(0.0, started - created), max(0.0, ended - started))
        self._setup_s = measured.setup_s / measured.jobs
        self._time_per_shot_s = max(1e-6, measured.busy_s / measured.shots)
        before = self.profile.chunk_shots
        self.profile = self._profile()
        if self.profile.chunk_shots != before:
            self.on_change()

    async def _cancel(self, flight: InFlight) -> ChunkOutcome | None:
        """Cancel a canceled job's QPU job: None when it stopped before it started; one that
        can no longer be stopped runs to its end, and its outcome is what the job is charged."""
        try:
            await self._request("PUT", f"/jobs/{flight.uid}/cancel")
            return None
        except _Refused as err:
            if CANNOT_CANCEL not in err.code:
                log.warning("cancel of QPU job %s refused: %s", flight.uid, err)
                return None
        except (httpx.HTTPError, _Transient) as err:
            log.warning("cancel of QPU job %s failed: %s", flight.uid, err)
            return None
        try:
            return await self._outcome(flight)
        except QPUApiError:
            return None

    async def _request(
        self, method: str, path: str, json: Any = None, retry_for_s: float | None = None
    ) -> dict[str, Any]:
        """One QPU API call's ``data``; transient faults retried (POST: see :meth:`_post_jobs`)."""
        assert self._client is not None, "start() first"
        client = self._client

        timeout = self.settings.create_timeout_s if method == "POST" else self.settings.timeout_s

        async def once() -> dict[str, Any]:
            return _checked(await client.request(method, path, json=json, timeout=timeout))["data"]

        if method == "POST":
            return await once()
        async for attempt in _retrying(
            self.settings.retry_for_s if retry_for_s is None else retry_for_s
        ):
            with attempt:
                return await once()
        raise AssertionError("unreachable")


def _checked(response: httpx.Response) -> dict[str, Any]:
    if response.status_code >= 500:
        raise _Transient(response)
    if response.status_code >= 400:
        raise _Refused(response)
    body = _body(response)
    if "data" not in body:
        raise _Transient(response)  # not the API's envelope: a proxy's page, say
    return body


def _retrying(
    seconds: float, retry: Callable[[BaseException], bool] = _transient, *, sync: bool = False
) -> Any:
    """Retries with exponential back-off (50 ms to 2 s) for ``seconds``; the last error raised."""
    kind = Retrying if sync else AsyncRetrying
    return kind(
        retry=retry_if_exception(retry),
        stop=stop_after_delay(seconds),
        wait=wait_exponential(multiplier=0.05, max=2.0),
        reraise=True,
    )


def _build(program: Program) -> str:
    from pulser import Sequence

    sequence = Sequence.from_abstract_repr(program.body)
    return sequence.build(**program.variables).to_abstract_repr()


__all__ = [
    "QPUApiDriver",
    "QPUApiError",
    "QPUApiSettings",
    "parse_result",
]
