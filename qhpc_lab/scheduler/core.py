"""The scheduler's domain core: sessions, submission, cancellation, and the daemon's side of
the dispatcher loop (the loop itself is :mod:`qhpc_lab.scheduler.dispatcher`).

Plain Python with no web framework: the HTTP routes are thin wrappers over these methods, and
tests drive them in-process. Dispatch is event-driven: a submission, a cancellation or a state
change wakes the dispatcher at once, so an idle QPU starts a job within milliseconds.

Store calls run in a small thread pool, never on the event loop, so a locked or restarting
database slows only what needs it. The dispatcher is supervised: a store error during dispatch
is retried with back-off until the store is back (the chunk that ran is then recorded, exactly
once), and meanwhile :attr:`Scheduler.health` says why dispatch is stalled, which ``/health``,
``/device``, the metrics and the log all report. API calls that need the store during an
outage are answered 503 with ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ParamSpec, TypeVar

import sqlalchemy.exc
from opentelemetry.context import Context
from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential

from qhpc_lab.programs import (
    Program,
    ProgramError,
    await_validation_worker,
    format_refusal,
    validate_async,
)
from qhpc_lab.programs.worker import WorkerDied
from qhpc_lab.qpu import ChunkBudgetExceeded, ChunkOutcome, DeviceState, InFlight, QPUDriver
from qhpc_lab.scheduler import policy
from qhpc_lab.scheduler.config import SchedulerConfig
from qhpc_lab.scheduler.dispatcher import Dispatcher, Recorder, WallClock
from qhpc_lab.scheduler.events import EventBus, QueueSnapshot, Replayed
from qhpc_lab.scheduler.journal import Journal, Listener
from qhpc_lab.scheduler.leadership import Leadership, LostLeadership
from qhpc_lab.scheduler.logs import job_fields
from qhpc_lab.scheduler.metrics import Metrics
from qhpc_lab.scheduler.quotas import QuotaExceeded
from qhpc_lab.scheduler.ranking import RankedQueue
from qhpc_lab.scheduler.reservations import Reservation, next_reservation
from qhpc_lab.scheduler.store import (
    DuplicateJob,
    JobRow,
    QuotaAdmission,
    ReservationOverlap,
    ReservationRow,
    SessionRow,
    Store,
)
from qhpc_lab.scheduler.timeline import Timelines
from qhpc_lab.scheduler.traces import JobTraces
from qhpc_lab.scheduler.views import held_by, iso_time, job_view, policy_view, reservation_view
from qhpc_lab.vocabulary import FINAL_STATUSES

log = logging.getLogger("qhpc.scheduler")

P = ParamSpec("P")
T = TypeVar("T")

STORE_DOWN = (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError)
"""Errors that mean the database is unreachable, locked or full: worth waiting out, unlike a
programming error or a constraint violation."""
STORE_RETRY_AFTER_S = 5
"""What a 503 during a store outage tells clients to wait before trying again."""
MAINTENANCE_RETRY_AFTER_S = 60
"""What a submission refused during maintenance is told to wait: an operator's work takes
minutes at least, and the message (GET /accessible) says until when."""
_ESTIMATE_ID = -1
"""The id a would-be job is ranked under for ``GET /estimate``: no stored job has it."""
JOB_LOOKUPS_PER_LISTING = 32
"""Active jobs a listing looks up one by one (~20 µs each) before it walks the whole queue once."""
QUEUE_EVENT_INTERVAL_S = 0.05
"""Queue events are coalesced to at most one per this interval (more while the queue is so long
that building one costs over a tenth of it: publishing never takes more than ~10 % of a core)."""
JOURNAL_POLL_S = 1.0
"""HA: how often a replica reads the journal when no NOTIFY said it changed (a lost one)."""
JOURNAL_BATCH = 1000
"""HA: journal events read at once, and replayed to a reconnecting client before a reset."""
JOURNAL_KEPT = 100_000
"""HA: journal events kept (the leader prunes older ones now and then)."""
ENDED_KEPT = 10_000
"""HA: ids of jobs this replica saw end, kept so that a journal entry read just before a job
ended does not put it back in the queue."""
IN_FLIGHT = "qpu_in_flight"
"""The store fact naming the QPU job a chunk waits on (a QPU API driver's): written before the
wait, deleted in the transaction that records the chunk; a restart adopts what it names."""


class SchedulerError(Exception):
    """A refusal the API turns into a 4xx/5xx: ``status`` and a message naming the rule."""

    def __init__(
        self,
        status: int,
        message: str,
        rule: str | None = None,
        retry_after: float | None = None,
        fields: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.rule = rule
        self.retry_after = retry_after
        self.fields = fields or {}
        """What the error document has beside ``detail`` and ``rule`` (a quota's numbers)."""


@dataclasses.dataclass(frozen=True)
class DispatcherHealth:
    """Whether the dispatcher is making progress, and if not, why and since when."""

    ok: bool = True
    reason: str | None = None
    """``store_unavailable`` or ``dispatcher_error`` while stalled."""
    detail: str | None = None
    since: float | None = None

    def view(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "reason": self.reason,
            "detail": self.detail,
            "since": iso_time(self.since),
        }


HEALTHY = DispatcherHealth()


class Scheduler:
    def __init__(
        self,
        config: SchedulerConfig,
        store: Store,
        driver: QPUDriver,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.store = store
        self.driver = driver
        self.clock = clock
        self.journal: Journal | None = None
        """HA replicas: the shared job-event journal (docs/operations.md); None alone."""
        self.leadership: Leadership | None = None
        """HA replicas: who dispatches; None for the single daemon, which always does."""
        if config.ha:
            self.journal = Journal(store)
            self.leadership = Leadership(
                store, self._off_loop, config.lease_renew_s, config.lease_ttl_s
            )
        self.bus = EventBus(self.queue_snapshot, replay=self._replay if config.ha else None)
        self.metrics = Metrics()
        self.health = HEALTHY
        self.timelines = Timelines(clock=clock)
        self.traces = JobTraces(clock)
        self._executor = ThreadPoolExecutor(store.pool_size, thread_name_prefix="qhpc-store")
        self.policy = config.policy
        self._queue = RankedQueue(self.policy)
        self.loop_hold: tuple[policy.LoopPause, float] | None = None
        """The hybrid loop the QPU is held for, and until when (docs/policy.md rule 9)."""
        self._sessions: dict[str, SessionRow] = {}
        """Open sessions: every submission names one on HPC, and asks for no database read."""
        self._opening = asyncio.Lock()
        """Held while a session is checked against the free QPU slots and stored, and while
        expired sessions are revoked."""
        self._programs: dict[int, Program] = {}
        self._reservations: dict[int, ReservationRow] = {}
        """Reservations not ended when last loaded (ended ones are dropped at the next change)."""
        self._queued_jobs: Counter[str] = Counter()
        self._queued_shots: Counter[str] = Counter()
        self._in_flight = False
        """Whether :data:`IN_FLIGHT` names the chunk now running (settled when it is recorded)."""
        self._marked_running: set[int] = set()
        """Jobs this dispatcher has seen RUNNING in the store: their next chunks need no
        ``mark_running`` write (only recovery's requeue makes a job PENDING again)."""
        driver.ledger = _QPULedger(self)
        driver.on_change = self._driver_changed
        self._calibration_id = driver.calibration.id
        """The calibration recorded last (a device calibrating by itself makes a new one)."""
        self._down_since: float | None = None
        self._recorder = _DaemonRecorder(self)
        self._dispatcher = Dispatcher(
            self._queue,
            driver,
            WallClock(clock),
            self.device_view,
            self._recorder,
            program=self._programs.__getitem__,
        )
        self._queue_dirty = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._leading: asyncio.Task[None] | None = None
        """HA: recovery then the dispatcher, while this replica holds the lease."""
        self._listener: Listener | None = None
        self._journal_news = asyncio.Event()
        self._ended: collections.deque[int] = collections.deque(maxlen=ENDED_KEPT)
        accessible = store.get_fact("accessible")
        self.accessible: bool = True if accessible is None else bool(accessible)
        self.message: str = store.get_fact("message") or ""
        self.draining: bool = bool(store.get_fact("draining"))
        saved = store.get_fact("policy")
        if saved:
            self._apply_policy(self.policy.changed(**saved))

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        self.driver.start()
        # Ready means ready: the first submission must not wait for the SDK imports.
        await asyncio.to_thread(await_validation_worker)
        if self.leadership is None:
            if await self._store_retrying(self.store.get_fact, IN_FLIGHT):
                # The API answers from the queue as stored while recovery runs: adopting a
                # chunk left on the device waits for it to end there (longer while DOWN).
                await self._load(leading=False)
                dispatching = self._lead()
            else:  # ready means recovered: nothing on the device to wait for
                await self._recover()
                dispatching = self._dispatch()
            self._tasks = [asyncio.create_task(dispatching, name="qhpc-dispatcher")]
            self._tasks[0].add_done_callback(self.metrics.dispatcher_ended)
            self._tasks[0].add_done_callback(self._alone_ended)
        else:  # a replica: the queue as it is, followed through the journal; leading later
            await self._load(leading=False)
            self._tasks = [
                asyncio.create_task(self._follow_journal_forever(), name="qhpc-journal"),
                asyncio.create_task(
                    self.leadership.run_forever(self._elected, self._deposed), name="qhpc-lease"
                ),
            ]
        self._tasks.append(
            asyncio.create_task(self._publish_queue_forever(), name="qhpc-queue-events")
        )
        if self.config.session_idle_timeout_s or self.config.session_max_lifetime_s:
            self._tasks.append(
                asyncio.create_task(self._reap_sessions_forever(), name="qhpc-session-reaper")
            )

    async def _recover(self) -> None:
        """Take over the dispatch: jobs left running by the previous dispatcher (this daemon
        before a crash, or a replica that lost the lease) go back to PENDING, keeping their
        committed chunks; a chunk it ran but never committed runs again, unless the device
        still has it (a QPU API job: adopted, recorded once)."""
        await self._adopt()
        requeued = await self._store_retrying(self.store.requeue_running)
        self._marked_running.clear()
        if requeued:
            log.warning(
                "requeued %d jobs that were running when the scheduler stopped", len(requeued)
            )
        await self._load(leading=True)

    async def _adopt(self) -> None:
        """Record the chunk the previous dispatcher left on the device, once it ends there."""
        record = await self._store_retrying(self.store.get_fact, IN_FLIGHT)
        if not record:
            return
        flight = InFlight.from_dict(record)
        log.warning(
            "adopting QPU job %s: a chunk of %d shots of job %s left in flight",
            flight.uid,
            flight.shots,
            flight.key,
        )
        outcome = await self.driver.adopt(flight)
        job = await self._store_retrying(self.store.get_job, int(flight.key))
        before = record.get("shots_done_before")
        # Merged already (a restart after the commit), or the job moved on: nothing to merge.
        settled = before is None or job is None or job.shots_done != before
        if outcome is not None and job is not None and job.status == "CANCELED" and not settled:
            # canceled meanwhile, its shots ran all the same: charged, as a 3003 cancel is
            await self._store_retrying(self.store.charge, job.id, outcome.device_seconds, IN_FLIGHT)
            return
        if outcome is None or settled:
            await self._store_retrying(self.store.delete_fact, IN_FLIGHT)
            return
        await self._store_retrying(
            self.store.record_chunk,
            int(flight.key),
            outcome.counts,
            flight.shots,
            outcome.device_seconds,
            outcome.calibration_age_s,
            before,
            outcome.emulator_seconds,
            self.clock(),
            outcome.calibration,
            IN_FLIGHT,
        )

    async def _load(self, leading: bool) -> None:
        """The open sessions and the active jobs from the store into the queue (kept jobs
        are brought up to date, ended ones dropped). ``leading``: also restart what the last
        calibration interrupted (a write only the dispatcher makes)."""
        sessions = await self._store_retrying(self.store.list_sessions, True)
        for session in sessions:
            self._sessions[session.id] = session
            self._queue.set_slots(session.id, session.qpu_slots)
        reserved = await self._store_retrying(self.store.list_reservations, self.clock())
        self._set_reservations(reserved)
        calibration_id = self.driver.calibration.id
        rows = await self._store_retrying(self.store.active_jobs)
        active = {row.id for row in rows}
        for job in list(self._queue.jobs()):
            if job.id not in active:
                self._dequeue(job.id)
        for row in rows:
            stale = bool(row.calibrations) and row.calibrations[-1]["id"] != calibration_id
            if leading and row.single_calibration and stale:  # stopped before restarting it
                restart = self.store.restart_shots
                row = await self._store_retrying(restart, row.id, row.shots_done) or row
            queued = self._queue.get(row.id)
            if queued is None:
                self._enqueue(row)
            else:
                self._queue.update(dataclasses.replace(queued, shots_done=row.shots_done))

    async def stop(self) -> None:
        for task in [*self._tasks, *([self._leading] if self._leading else [])]:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._leading is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._leading
        self._tasks = []
        if self.leadership is not None:
            await self.leadership.release()  # the next replica takes over at once
        if self._listener is not None:
            await asyncio.to_thread(self._listener.stop)
        self.bus.close()
        await self.driver.close()
        self._executor.shutdown(wait=False, cancel_futures=True)

    # -- replicas (HA): leading, and the journal ---------------------------------------------

    @property
    def leading(self) -> bool:
        """Whether this daemon dispatches: always alone, while it holds the lease as a replica."""
        return self.leadership is None or self.leadership.leading

    def replica_view(self) -> dict[str, Any] | None:
        """This replica as ``/health`` shows it; None for the single daemon."""
        if self.leadership is None:
            return None
        return {
            "name": self.leadership.lease.holder,
            "leading": self.leadership.leading,
            "epoch": self.leadership.epoch,
            "since": iso_time(self.leadership.since) if self.leadership.leading else None,
        }

    def _elected(self, epoch: int) -> None:
        self._leading = asyncio.create_task(self._lead(), name="qhpc-dispatcher")
        self._leading.add_done_callback(self._lead_ended)

    def _alone_ended(self, task: asyncio.Task[None]) -> None:
        """The single daemon's dispatching ended by itself (its recovery failed): said in the
        log and by ``/health``, which stays 503 until a restart."""
        if task.cancelled() or task.exception() is None:
            return
        error = task.exception()
        log.error("dispatching ended: %s: %s", type(error).__name__, error)
        self._stalled("dispatcher_error", f"{type(error).__name__}: {error}")

    def _lead_ended(self, task: asyncio.Task[None]) -> None:
        """Leading ended by itself (its recovery failed: deposed meanwhile, or a bug): the
        lease is given up, so this replica or another takes it again and recovers anew."""
        if task.cancelled() or self._leading is not task or self.leadership is None:
            return
        log.warning("dispatching ended: %s", task.exception())
        if not isinstance(task.exception(), LostLeadership):
            self.metrics.dispatcher_stalled("crashed")
        self._leading = None
        self._tasks.append(
            asyncio.create_task(self.leadership.release(), name="qhpc-lease-release")
        )

    async def _lead(self) -> None:
        await self._recover()
        await self._dispatch()

    async def _dispatch(self) -> None:
        self.metrics.dispatcher_running()
        self._device_changed()
        await self._dispatcher.run_forever()

    async def _deposed(self, why: str) -> None:
        task, self._leading = self._leading, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self.health = HEALTHY  # a follower's health is its API's: nothing of it is stalled
        self._device_changed()

    def _off_loop(self, call: Callable[[], T]) -> asyncio.Future[T]:
        """A blocking store call in the store's threads, its errors as they are."""
        return asyncio.get_running_loop().run_in_executor(self._executor, call)

    async def _follow_journal_forever(self) -> None:
        """Read what the journal says changed, as announced (or every JOURNAL_POLL_S):
        publish it to this replica's subscribers and bring the queue up to date (a job
        submitted or canceled on another replica)."""
        assert self.journal is not None
        last = await self._store_retrying(self.journal.last_id)
        loop = asyncio.get_running_loop()
        self._listener = Listener(
            self.store, lambda: loop.call_soon_threadsafe(self._journal_news.set)
        )
        self._listener.start()
        pruned_at = time.monotonic()
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(JOURNAL_POLL_S):
                    await self._journal_news.wait()
            self._journal_news.clear()
            try:
                entries, more = await self.db(self.journal.after, last, JOURNAL_BATCH)
                await self._learn_sessions({r.session_id for _, r in entries if r.session_id})
                await self._learn_reservations()
                if self.leading and time.monotonic() - pruned_at > 60:
                    pruned_at = time.monotonic()
                    await self.db(self.journal.prune, JOURNAL_KEPT)
            except SchedulerError:  # the store is away: read again once it is back
                continue
            except Exception:  # a bug: said, and the journal is read again, never given up
                log.exception("reading the journal failed")
                await asyncio.sleep(JOURNAL_POLL_S)
                continue
            for event_id, row in entries:
                last = max(last, event_id)
                self._journaled(event_id, row)
            if more:
                self._journal_news.set()

    async def _learn_reservations(self) -> None:
        """Reservations made or canceled on another replica (rows are only added or
        deleted, so their ids say what changed): the leader plans with them within a poll."""
        reserved = await self.db(self.store.list_reservations, self.clock())
        if {row.id for row in reserved} != set(self._reservations):
            self._set_reservations(reserved)

    async def _learn_sessions(self, session_ids: set[str]) -> None:
        """Sessions opened on another replica: their QPU slots weigh in this one's queue."""
        for session_id in session_ids - set(self._queue.slots):
            session = await self.db(self.store.get_session, session_id)
            if session is not None and session.active:
                self._sessions[session.id] = session
                self._queue.set_slots(session.id, session.qpu_slots)

    def _journaled(self, event_id: int, row: JobRow) -> None:
        queued = self._queue.get(row.id)
        if row.status in FINAL_STATUSES:
            if queued is not None:  # canceled on another replica: its chunk stops here too
                self._dispatcher.cancel_chunk(row.id)
                self._dequeue(row.id)
        elif queued is None:
            if row.id not in self._ended:  # (read just before it ended here)
                self._enqueue(row)
        elif not self.leading:  # the leader's own queue is ahead of what it reads back
            self._queue.update(dataclasses.replace(queued, shots_done=row.shots_done))
        self.bus.publish("job", job_view(self, row), user_id=row.user_id, event_id=event_id)

    async def _replay(self, last_event_id: int) -> list[Replayed]:
        """What a client that saw event ``last_event_id`` (on any replica) missed: each job
        changed since, as it is now; a ``reset`` when more changed than a batch holds."""
        assert self.journal is not None
        entries, more = await self.db(self.journal.after, last_event_id, JOURNAL_BATCH)
        if more:
            return [Replayed(await self.db(self.journal.last_id), "reset", {}, None)]
        return [Replayed(i, "job", job_view(self, row), row.user_id) for i, row in entries]

    # -- the store, off the event loop ----------------------------------------------------------

    async def db(self, call: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """A store call in the store's thread pool; an outage becomes a 503 for the API."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, lambda: call(*args, **kwargs))
        except STORE_DOWN as err:
            self.metrics.store_error()
            raise SchedulerError(
                503,
                f"the scheduler's database is unavailable ({_first_line(err)}); try again",
                "store",
                retry_after=STORE_RETRY_AFTER_S,
            ) from None

    async def _store_retrying(self, call: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """A store call the dispatcher cannot do without: retried until the store is back.

        While it fails the dispatcher is marked stalled (health, metric, one log line per
        outage); the first success marks it healthy again.
        """
        loop = asyncio.get_running_loop()
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(STORE_DOWN),
            wait=wait_exponential(multiplier=0.05, max=2.0),
            before_sleep=lambda state: self._stalled(
                "store_unavailable", _first_line(state.outcome and state.outcome.exception())
            ),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                result = await loop.run_in_executor(self._executor, lambda: call(*args, **kwargs))
        if not self.health.ok and self.health.reason == "store_unavailable":
            self._recovered()
        return result

    def _stalled(self, reason: str, detail: str) -> None:
        if reason == "store_unavailable":
            self.metrics.store_error()
        if self.health.ok or self.health.reason != reason:
            log.error("dispatcher stalled (%s): %s", reason, detail)
            self.health = DispatcherHealth(False, reason, detail, self.clock())
            self.metrics.dispatcher_stalled(reason)
            self._device_changed()
        else:
            self.health = dataclasses.replace(self.health, detail=detail)

    def _recovered(self) -> None:
        stalled = self.clock() - (self.health.since or self.clock())
        log.warning("dispatcher resumed after %.1f s (%s)", stalled, self.health.reason)
        self.health = HEALTHY
        self.metrics.dispatcher_running()
        self._device_changed()

    # -- device ---------------------------------------------------------------------------

    @property
    def device_state(self) -> DeviceState:
        if not self.accessible:
            return DeviceState.MAINTENANCE
        return self.driver.state

    def device_view(self) -> policy.DeviceView:
        profile = self.driver.profile
        return policy.DeviceView(
            state=self.device_state,
            calibrated_at=self.driver.calibrated_at,
            calibration_interval_s=profile.calibration_interval_s,
            calibration_duration_s=profile.calibration_duration_s,
            time_per_shot_s=profile.time_per_shot_s,
            chunk_shots=profile.chunk_shots,
            accepting=not self.draining,
            calibrates=profile.calibrates,
        )

    @property
    def _running(self) -> int | None:
        """The job whose chunk is running, as the dispatcher says."""
        return self._dispatcher.running

    @property
    def sessions_open(self) -> int:
        return len(self._queue.slots)

    def queue_depth(self) -> dict[str, int]:
        """Active jobs (waiting or running) per class."""
        return self._queue.depth()

    def device_info(self, user_id: str | None = None, admin: bool = False) -> dict[str, Any]:
        """The device as ``/device`` shows it; the running job's id only to its owner or admins."""
        now = self.clock()
        view = self.device_view()
        running = self._queue.get(self._running) if self._running is not None else None
        visible = running is not None and (admin or running.user_id == user_id)
        due = policy.calibration_due_at(view, now, self._queue.reservations)
        upcoming = next_reservation(self._queue.reservations, now)
        return {
            "name": self.driver.profile.spec.name,
            "profile": self.driver.profile.name,
            "formats": list(self.driver.profile.formats),
            "state": view.state.value,
            "accessible": self.accessible,
            "draining": self.draining,
            "message": self.message or self.driver.notice,
            "calibrated_at": view.calibrated_at,
            "calibration_id": self.driver.calibration.id,
            "calibration_age_s": round(now - view.calibrated_at, 3),
            "next_calibration_at": due if self.driver.profile.calibrates else None,
            "next_calibration_in_s": round(max(0.0, due - now), 3)
            if self.driver.profile.calibrates
            else None,
            "calibration_duration_s": view.calibration_duration_s,
            "time_per_shot_s": view.time_per_shot_s,
            "chunk_shots": view.chunk_shots,
            "cell_job_class": self.policy.cell_job_class,
            "queue_depth": self.queue_depth(),
            "running": None if running is None else {"job_class": running.job_class},
            "running_job": running.id if visible and running is not None else None,
            "dispatcher": self.health.view(),
            "next_reservation": None
            if upcoming is None
            else reservation_view(self._reservations[upcoming.id], now),
            "held_for_loop": self._loop_hold_view(admin, user_id),
        }

    def _loop_hold_view(self, admin: bool, user_id: str | None) -> dict[str, Any] | None:
        """The hybrid loop the QPU is held for (docs/policy.md rule 9); its id only to its
        owner or an administrator."""
        if self.loop_hold is None:
            return None
        pause, until = self.loop_hold
        visible = admin or pause.user_id == user_id
        return {"loop": pause.loop if visible else None, "until": until}

    async def set_accessible(self, accessible: bool, message: str | None = None) -> None:
        """Open or close submissions; reopening without a message clears the closing one."""
        await self.db(self.store.set_fact, "accessible", accessible)
        self.accessible = accessible
        self.timelines.hold("maintenance", not accessible, self.clock())
        if message is None and accessible:
            message = ""
        if message is not None:
            await self.db(self.store.set_fact, "message", message)
            self.message = message
        self._device_changed()

    async def set_draining(self, draining: bool) -> None:
        """Drain: started jobs finish, queued ones wait until resumed."""
        await self.db(self.store.set_fact, "draining", draining)
        self.draining = draining
        self.timelines.hold("draining", draining, self.clock())
        self._device_changed()

    # -- reservations -----------------------------------------------------------------------

    async def add_reservation(
        self, owner_kind: str, owner: str, starts_at: float, ends_at: float, created_by: str
    ) -> ReservationRow:
        """Reserve the QPU for ``owner`` over ``[starts_at, ends_at)`` (a start in the past is
        now): 422 unless it ends after it starts and in the future, 409 on an overlap."""
        now = self.clock()
        starts_at = max(starts_at, now)
        if ends_at <= starts_at:
            raise SchedulerError(
                422, "a reservation must end after it starts, and in the future", "ends_at"
            )
        if ends_at - starts_at > policy.MAX_SECONDS:
            raise SchedulerError(422, "a reservation may last ten years at most", "ends_at")
        try:
            row = await self.db(
                self.store.add_reservation, owner_kind, owner, starts_at, ends_at, created_by
            )
        except ReservationOverlap as err:
            raise SchedulerError(
                409,
                f"the QPU is already reserved for {err.existing.owner_kind} "
                f"{err.existing.owner} from {iso_time(err.existing.starts_at)} to "
                f"{iso_time(err.existing.ends_at)} (reservation {err.existing.id})",
                "reservation_overlap",
            ) from None
        log.info(
            "reservation %d: the QPU for %s %s from %s to %s",
            row.id,
            owner_kind,
            owner,
            iso_time(starts_at),
            iso_time(ends_at),
        )
        self._set_reservations([*self._reservations.values(), row])
        return row

    async def cancel_reservation(self, reservation_id: int) -> ReservationRow:
        """Cancel a reservation; 404 when there is none with this id."""
        row = await self.db(self.store.cancel_reservation, reservation_id)
        if row is None:
            raise SchedulerError(404, f"reservation {reservation_id} not found")
        log.info("reservation %d canceled", row.id)
        self._set_reservations(r for r in self._reservations.values() if r.id != row.id)
        return row

    def _set_reservations(self, rows: Iterable[ReservationRow]) -> None:
        """Hold these reservations (those not ended) and let the dispatcher plan with them."""
        now = self.clock()
        self._reservations = {row.id: row for row in rows if row.ends_at > now}
        self._queue.set_reservations(
            Reservation(row.id, row.starts_at, row.ends_at, row.owner_kind, row.owner)
            for row in self._reservations.values()
        )
        self._dispatcher.wake()
        self._device_changed()

    def _device_changed(self) -> None:
        self.bus.publish("device", self.device_info())
        self._queue_changed()

    def _driver_changed(self) -> None:
        """The device changed by itself (DOWN, UP, new specs, new timing, a calibration it
        made): decide again; a calibration is recorded as one the dispatcher made."""
        now = self.clock()
        down = self.driver.state is not DeviceState.ONLINE
        if down and self._down_since is None:
            self._down_since = now
        self.timelines.hold("down", down, now)
        calibration = self.driver.calibration
        if calibration.id != self._calibration_id and self.leading:
            since = self._down_since or calibration.calibrated_at
            self._tasks.append(
                asyncio.create_task(
                    self._recorder.calibrated(since, calibration.calibrated_at),
                    name="qhpc-device-calibrated",
                )
            )
        if not down:
            self._down_since = None
        self._dispatcher.wake()
        self._device_changed()

    # -- sessions -------------------------------------------------------------------------

    @property
    def qpu_slots_used(self) -> int:
        """QPU slots the open sessions hold."""
        return sum(self._queue.slots.values())

    async def open_session(
        self,
        user_id: str,
        slurm_job_id: str | None,
        qpu_slots: int,
        slurm_account: str | None = None,
    ) -> SessionRow:
        """Open a session, or return the open one of the same Slurm job (a prolog's retry);
        409 when that one holds other slots, or when the slots asked for are not free."""
        if qpu_slots < 1:
            raise SchedulerError(422, "qpu_slots must be at least 1", "qpu_slots")
        async with self._opening:
            await self.expire_sessions()  # slots of expired sessions are free for this one
            again = next(
                (
                    s
                    for s in self._sessions.values()
                    if slurm_job_id is not None
                    and (s.user_id, s.slurm_job_id) == (user_id, slurm_job_id)
                ),
                None,
            )
            if again is not None and again.qpu_slots != qpu_slots:
                raise SchedulerError(
                    409,
                    f"Slurm job {slurm_job_id} already has a session holding {again.qpu_slots} "
                    f"QPU slots, not {qpu_slots}",
                    "qpu_slots",
                )
            total = self.config.qpu_slots_total
            if again is None and total and self.qpu_slots_used + qpu_slots > total:
                raise SchedulerError(
                    409,
                    f"not enough QPU slots: {qpu_slots} asked for, "
                    f"{max(total - self.qpu_slots_used, 0)} of {total} free",
                    "qpu_slots_total",
                )
            now = self.clock()
            session = await self.db(
                self.store.create_session,
                user_id,
                slurm_job_id,
                qpu_slots,
                now,
                *self._deadlines(now),
                slurm_account,
            )
            self._sessions[session.id] = session
            self._queue.set_slots(session.id, session.qpu_slots)
        return session

    def _deadlines(self, now: float) -> tuple[float | None, float | None]:
        """A session's idle and lifetime deadlines from ``now`` (None: that one is off)."""
        idle, lifetime = self.config.session_idle_timeout_s, self.config.session_max_lifetime_s
        return (now + idle if idle else None), (now + lifetime if lifetime else None)

    async def _session_used(self, session: SessionRow) -> None:
        """A job was submitted in ``session``: its idle deadline starts again. Stored only
        when it moves by over 1 % of the timeout, so a sweep of submissions writes it once."""
        idle_expires_at = self._deadlines(self.clock())[0]
        if idle_expires_at is None or session.id not in self._sessions:
            return
        moved = idle_expires_at - (session.idle_expires_at or 0.0)
        if moved <= self.config.session_idle_timeout_s / 100:
            return
        await self.db(self.store.extend_idle_deadline, session.id, idle_expires_at)
        self._sessions[session.id] = dataclasses.replace(session, idle_expires_at=idle_expires_at)

    async def expire_sessions(self) -> int:
        """Revoke the open sessions past a deadline, as Warden's reaper does: past its
        lifetime always (reason ``max_lifetime_expired``), past its idle deadline only once
        none of its jobs is active (``idle_timeout``). Returns how many were revoked."""
        now, expired = self.clock(), 0
        for session in list(self._sessions.values()):
            if session.expires_at is not None and session.expires_at <= now:
                reason = "max_lifetime_expired"
            elif (
                session.idle_expires_at is not None
                and session.idle_expires_at <= now
                and not self._queued_jobs[f"session:{session.id}"]
            ):
                reason = "idle_timeout"
            else:
                continue
            log.info("session %s revoked: %s", session.id, reason)
            await self.revoke_session(session.id, reason)
            expired += 1
        return expired

    async def _reap_sessions_forever(self) -> None:
        """Look for expired sessions every ``session_reaper_interval_s``; a store outage
        only delays the next look."""
        while True:
            try:
                if self.leading:  # one replica reaps
                    async with self._opening:  # not while a session is being opened
                        await self.expire_sessions()
            except SchedulerError as err:
                log.warning("session expiry check failed: %s", err)
            await asyncio.sleep(self.config.session_reaper_interval_s)

    async def get_session(self, session_id: str) -> SessionRow | None:
        if session_id in self._sessions:
            return self._sessions[session_id]
        return await self.db(self.store.get_session, session_id)

    async def revoke_session(self, session_id: str, reason: str) -> SessionRow:
        if await self.get_session(session_id) is None:
            raise SchedulerError(404, f"session {session_id} not found")
        session, canceled = await self.db(
            self.store.revoke_session, session_id, reason, self.clock()
        )
        self._sessions.pop(session_id, None)
        self._queue.drop_slots(session_id)
        for job_id in canceled:
            self._dequeue(job_id)
            self.metrics.job_finished("CANCELED")
            job = await self.db(self.store.get_job, job_id)
            if job is not None:
                self._publish_job(job)
        return session

    async def check_session(
        self, session_id: str | None, user_id: str, admin: bool
    ) -> SessionRow | None:
        if session_id is None:
            if self.config.sessions_required:
                raise SchedulerError(
                    403,
                    "an X-Warden-Session header is required (the Slurm job's session): "
                    "submit from inside a Slurm job holding a QPU share (sbatch -L qpu:1, or a "
                    "JupyterLab started in one), whose QRMI variables carry it",
                    "session",
                )
            return None
        session = await self.get_session(session_id)
        if session is None:
            raise SchedulerError(403, f"session {session_id} does not exist", "session")
        if session.user_id != user_id and not admin:
            raise SchedulerError(403, f"session {session_id} belongs to another user", "session")
        if not session.active:
            raise SchedulerError(
                403, f"session {session_id} was revoked ({session.revoke_reason})", "session"
            )
        return session

    # -- jobs -----------------------------------------------------------------------------

    async def submit(
        self,
        user_id: str,
        admin: bool,
        session_id: str | None,
        program: Program,
        job_class: str | None = None,
        max_calibration_age_s: float | None = None,
        idempotency_key: str | None = None,
        trace_context: Context | None = None,
        single_calibration: bool = False,
        loop: str | None = None,
        think_time_s: float | None = None,
    ) -> JobRow:
        """Accept a job; a retried submission with the same ``idempotency_key`` returns the
        first job instead of queueing a second one (the store's unique key decides).
        ``trace_context``: the caller's trace (``traceparent``), which the job's spans join.
        ``single_calibration``: all its shots under one calibration (docs/policy.md);
        ``loop``, ``think_time_s``: the hybrid loop it belongs to (docs/policy.md rule 9)."""
        if not self.accessible:
            self.metrics.rejected()
            raise SchedulerError(
                503,
                f"the QPU is not accepting jobs: {self.message or 'maintenance'}",
                "accessible",
                retry_after=MAINTENANCE_RETRY_AFTER_S,
            )
        profile = self.driver.profile
        if refusal := format_refusal(program.format, profile.formats, profile.spec.name):
            self.metrics.rejected()
            raise SchedulerError(422, refusal, "format")
        job_class = job_class or self.policy.default_job_class
        if job_class not in policy.JOB_CLASSES:
            self.metrics.rejected()
            raise SchedulerError(
                422,
                f"unknown job_class {job_class!r}; use one of {', '.join(policy.JOB_CLASSES)}",
                "job_class",
            )
        if single_calibration:
            refusal = policy.single_calibration_refusal(
                program.shots, max_calibration_age_s, self.device_view(), self.policy
            )
            if refusal is not None:
                self.metrics.rejected()
                raise SchedulerError(422, refusal, "single_calibration")
        with self.traces.submission(trace_context, user_id, program, job_class) as traced:
            session = await self.check_session(session_id, user_id, admin)
            owner = session.user_id if session else user_id
            if not admin:
                account = session.slurm_account if session else None
                self._check_class(job_class, owner, account, program.shots)
                self._check_limits(owner, session.id if session else None, program.shots)
            try:
                with traced.validating():
                    await validate_async(program, self.driver.profile.spec)
            except ProgramError as err:
                self.metrics.rejected()
                raise SchedulerError(422, str(err), err.rule) from None
            try:
                row = await self.db(
                    self.store.add_job,
                    QuotaAdmission(
                        session.slurm_account if session else None, profile.time_per_shot_s
                    ),
                    session_id=session.id if session else None,
                    user_id=owner,
                    slurm_job_id=session.slurm_job_id if session else None,
                    job_class=job_class,
                    name=program.name,
                    format=program.format,
                    body=program.body,
                    variables=program.variables,
                    shots=program.shots,
                    max_calibration_age_s=max_calibration_age_s,
                    single_calibration=single_calibration,
                    loop=loop,
                    think_time_s=think_time_s,
                    idempotency_key=idempotency_key,
                    created_at=self.clock(),
                )
            except DuplicateJob as duplicate:  # a retry: the first submission's job, not a second
                return duplicate.job
            except QuotaExceeded as exceeded:
                refused = exceeded.refusal
                self.metrics.quota_refused(refused.quota.kind, refused.quota.unit)
                fields = {**refused.fields(), "resets_at": iso_time(refused.resets_at)}
                raise SchedulerError(403, refused.message, "quota", fields=fields) from None
            traced.accepted(row)
        if session is not None:
            await self._session_used(session)
        log.info(
            "job %s accepted: %s, %d shots, class %s",
            row.id,
            row.format,
            row.shots,
            row.job_class,
            extra=job_fields(row),
        )
        self.metrics.submitted(job_class)
        self._enqueue(row, program)
        self._publish_job(row)
        return row

    def _check_class(self, job_class: str, user_id: str, account: str | None, shots: int) -> None:
        """The site's bounds on the class (``class_limits``): who may use it (403), the shots
        of one job (422) and the jobs of the class one user may have queued (429)."""
        limit = self.config.class_limits.get(job_class)
        if limit is None:
            return
        rule = f"class_limits.{job_class}"
        if not limit.allows(user_id, account):
            self.metrics.rejected()
            who = f"user {user_id}" + (f" (Slurm account {account})" if account else "")
            raise SchedulerError(
                403,
                f"{who} may not submit {job_class} jobs: this site keeps the class for "
                f"{_named(limit.users, limit.accounts)}; choose another class",
                f"{rule}.users",
            )
        if limit.max_shots and shots > limit.max_shots:
            self.metrics.rejected()
            raise SchedulerError(
                422,
                f"a {job_class} job may ask for at most {limit.max_shots} shots on this site, "
                f"not {shots}: fewer shots, or another class",
                f"{rule}.max_shots",
            )
        held = self._queued_jobs[f"class:{job_class}:{user_id}"]
        if limit.max_queued_per_user and held + 1 > limit.max_queued_per_user:
            self.metrics.rejected()
            raise SchedulerError(
                429,
                f"user {user_id} has {held} {job_class} jobs queued; this site allows "
                f"{limit.max_queued_per_user} (wait for one to finish, or use another class)",
                f"{rule}.max_queued_per_user",
            )

    def _check_limits(self, user_id: str, session_id: str | None, shots: int) -> None:
        """The operator's caps on what one user or one session may have queued (429)."""
        checks = [
            (
                "user",
                user_id,
                self.config.max_queued_jobs_per_user,
                self.config.max_queued_shots_per_user,
            ),
        ]
        if session_id is not None:
            checks.append(
                (
                    "session",
                    session_id,
                    self.config.max_queued_jobs_per_session,
                    self.config.max_queued_shots_per_session,
                )
            )
        for scope, key, max_jobs, max_shots in checks:
            held_jobs = self._queued_jobs[f"{scope}:{key}"]
            held_shots = self._queued_shots[f"{scope}:{key}"]
            if max_jobs and held_jobs + 1 > max_jobs:
                self.metrics.rejected()
                raise SchedulerError(
                    429,
                    f"{scope} {key} has {held_jobs} jobs queued; the limit is {max_jobs} "
                    "(wait for some to finish)",
                    f"max_queued_jobs_per_{scope}",
                )
            if max_shots and held_shots + shots > max_shots:
                self.metrics.rejected()
                raise SchedulerError(
                    429,
                    f"{scope} {key} has {held_shots} shots queued and asks for {shots} more; "
                    f"the limit is {max_shots}",
                    f"max_queued_shots_per_{scope}",
                )

    async def get_job(self, job_id: int, user_id: str, admin: bool) -> JobRow:
        job = await self.db(self.store.get_job, job_id)
        if job is None or (job.user_id != user_id and not admin):
            raise SchedulerError(404, f"job {job_id} not found")
        return job

    async def list_jobs(
        self,
        user_id: str,
        admin: bool,
        status: str | None,
        limit: int | None = None,
        after_id: int | None = None,
    ) -> list[JobRow]:
        return await self.db(
            self.store.list_jobs, None if admin else user_id, status, limit, after_id
        )

    async def cancel(
        self, job_id: int, user_id: str, admin: bool, reason: str = "canceled by user"
    ) -> JobRow:
        job = await self.get_job(job_id, user_id, admin)
        finished = await self.db(self.store.finish, job_id, "CANCELED", reason, self.clock())
        if finished is None:
            return job
        self._dispatcher.cancel_chunk(job_id)  # the emulation stops now, not at the chunk's end
        self._dequeue(job_id)
        self.metrics.job_finished("CANCELED")
        self._publish_job(finished)
        return finished

    def position(
        self, job_id: int, estimates: dict[int, tuple[int, float]] | None = None
    ) -> tuple[int | None, float | None]:
        """Queue position (1 = next, 0 = running) and ETA in seconds for an active job.

        The ranked queue answers for one job without walking the queue; ``estimates`` (the
        whole queue's, from :meth:`RankedQueue.estimates`) serves when many jobs are shown.
        """
        queued = self._queue.get(job_id)
        if queued is None:
            return None, None
        if job_id == self._running:
            return 0, round(queued.remaining * self.driver.profile.time_per_shot_s, 3)
        if estimates is None:  # one job: ask the ranked queue (a snapshot passes the whole queue's)
            view, now = self.device_view(), self.clock()

            def estimate(job: int) -> tuple[int, float] | None:
                return self._queue.position(job, view, now)
        else:
            estimate = estimates.get

        position, eta = estimate(job_id) or (None, None)
        running = estimate(self._running) if self._running is not None else None
        if position is not None and running is not None and running[0] < position:
            position -= 1  # the running job left its place in the order for 0: close the gap
        return position, None if eta is None else round(eta, 3)

    def estimate(
        self,
        user_id: str | None,
        shots: int,
        job_class: str | None = None,
        max_calibration_age_s: float | None = None,
    ) -> tuple[int, float]:
        """Where a job of ``shots`` submitted now would stand: its queue position (1 = next)
        and seconds until it ends, the queue ahead and its own run (calibrations included).
        Read-only: the job is ranked for the answer and taken out again at once (no await
        between, so the dispatcher never sees it). For clients choosing among several QPUs."""
        job_class = job_class or self.policy.default_job_class
        if job_class not in policy.JOB_CLASSES:
            raise SchedulerError(
                422,
                f"unknown job_class {job_class!r}; use one of {', '.join(policy.JOB_CLASSES)}",
                "job_class",
            )
        probe = policy.QueuedJob(
            id=_ESTIMATE_ID,
            user_id=user_id or "",
            session_id=None,
            job_class=job_class,
            shots=shots,
            shots_done=0,
            created_at=self.clock(),
            max_calibration_age_s=max_calibration_age_s,
        )
        self._queue.add(probe)
        try:
            position, eta = self.position(_ESTIMATE_ID)
        finally:
            self._queue.remove(_ESTIMATE_ID)
        assert position is not None and eta is not None
        return position, eta

    def estimates(self, jobs: list[JobRow]) -> dict[int, tuple[int, float]] | None:
        """The whole queue's positions and ETAs, for showing ``jobs`` when that is cheaper
        than one lookup each (past a few active ones; finished jobs need neither)."""
        active = sum(job.id in self._queue for job in jobs)
        if active <= JOB_LOOKUPS_PER_LISTING:
            return None
        return self._queue.estimates(self.device_view(), self.clock())

    def queue_snapshot(self) -> QueueSnapshot:
        """Positions and ETAs of every active job, and the aggregates anyone may see."""
        depth = self.queue_depth()
        running = self._queue.get(self._running) if self._running is not None else None
        if running is not None:
            depth[running.job_class] -= 1
        positions: dict[str, dict[int, tuple[int, float | None]]] = {}
        held: dict[int, str] = {}
        estimates = self._queue.estimates(self.device_view(), self.clock())
        for job in self._queue.jobs():
            position, eta = self.position(job.id, estimates)
            hold = held_by(self, job.started, position)
            if hold is not None:
                held[job.id], eta = hold, None
            if position is not None:
                positions.setdefault(job.user_id, {})[job.id] = (position, eta)
        return QueueSnapshot(
            depth=depth,
            running_job=running.id if running else None,
            running_class=running.job_class if running else None,
            running_user=running.user_id if running else None,
            positions=positions,
            held=held,
        )

    async def set_policy(self, changes: dict[str, Any]) -> policy.PolicyConfig:
        """Change policy settings at run time; they are kept across restarts."""
        try:
            changed = self.policy.changed(**changes).checked()
        except policy.InvalidSetting as err:
            raise SchedulerError(422, str(err), err.setting) from None
        await self.db(self.store.set_fact, "policy", policy_view(changed))
        self._apply_policy(changed)
        self._queue_changed()
        return changed

    def _apply_policy(self, settings: policy.PolicyConfig) -> None:
        self.policy = settings
        self._queue.set_config(settings)

    def request_calibration(self) -> None:
        self._dispatcher.request_calibration()

    # -- queue bookkeeping ------------------------------------------------------------------

    def _enqueue(self, row: JobRow, program: Program | None = None) -> None:
        session = self._sessions.get(row.session_id) if row.session_id else None
        job = policy.QueuedJob(
            id=row.id,
            user_id=row.user_id,
            session_id=row.session_id,
            job_class=row.job_class,
            shots=row.shots,
            shots_done=row.shots_done,
            created_at=row.created_at,
            max_calibration_age_s=row.max_calibration_age_s,
            single_calibration=row.single_calibration,
            slurm_job_id=row.slurm_job_id,
            slurm_account=session.slurm_account if session else None,
            loop=row.loop,
            think_time_s=row.think_time_s,
        )
        self._queue.add(job)
        self._programs[row.id] = program or Program(
            row.format, row.body, row.shots, row.name, row.variables
        )
        self._hold(job, +1)
        self._queue_changed()

    def _dequeue(self, job_id: int) -> None:
        self._marked_running.discard(job_id)
        job = self._queue.remove(job_id)
        if job is None:
            return
        self._hold(job, -1)
        self._ended.append(job_id)
        self._programs.pop(job_id, None)
        self.driver.forget(str(job_id))
        self._queue_changed()

    def _hold(self, job: policy.QueuedJob, sign: int) -> None:
        """Count a job in (or out of) its user's and session's queued totals, for the limits."""
        for key in (
            f"user:{job.user_id}",
            f"session:{job.session_id}",
            f"class:{job.job_class}:{job.user_id}",
        ):
            self._queued_jobs[key] += sign
            self._queued_shots[key] += sign * job.shots

    def _queue_changed(self) -> None:
        self._dispatcher.wake()
        self._queue_dirty.set()

    def _publish_job(self, job: JobRow) -> None:
        """Every change of a job passes here: its event, its trace and, once final, its log line.
        Replicas publish the event when the journal brings it back (to every replica)."""
        if self.journal is None:
            self.bus.publish("job", job_view(self, job), user_id=job.user_id)
        self.traces.changed(job)
        if job.status in FINAL_STATUSES:
            reason = f": {job.error}" if job.error else ""
            log.info(
                "job %s %s, %d/%d shots%s",
                job.id,
                job.status,
                job.shots_done,
                job.shots,
                reason,
                extra=job_fields(job),
            )

    async def _publish_queue_forever(self) -> None:
        """Coalesced ``queue`` events: at most one per interval, and only for listeners."""
        while True:
            await self._queue_dirty.wait()
            self._queue_dirty.clear()
            if not self.bus.listening:
                self.bus.forget_queue()
                continue
            started = time.perf_counter()
            self.bus.publish_queue(self.queue_snapshot())
            cost = time.perf_counter() - started
            await asyncio.sleep(max(QUEUE_EVENT_INTERVAL_S, 10 * cost))


def _named(users: tuple[str, ...], accounts: tuple[str, ...]) -> str:
    """Who a class limit lets in, as a refusal says it."""
    parts = [f"uids {', '.join(users)}"] if users else []
    parts += [f"Slurm accounts {', '.join(accounts)}"] if accounts else []
    return " and ".join(parts)


class _DaemonRecorder(Recorder):
    """The daemon's side of the dispatcher loop: the store (retried through outages), metrics,
    events and timelines, in the order the loop reports chunks and calibrations."""

    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler

    async def chunk_starting(self, job: policy.QueuedJob, shots: int) -> bool:
        sched = self.scheduler
        sched.metrics.chunk_started(job.id, job.job_class, sched._queue)
        sched._queue_changed()
        started = None
        if job.id not in sched._marked_running:  # a write only for a job's first chunk
            started = await sched._store_retrying(sched.store.mark_running, job.id, sched.clock())
            sched._marked_running.add(job.id)
        if job.id not in sched._queue:  # canceled while the store was slow
            return False
        if started is not None:  # its first chunk, or its first since a restart
            if not job.started:
                sched.metrics.job_started(job.job_class, started.started_at - job.created_at)
            sched._publish_job(started)
        return True

    async def chunk_failed(self, job: policy.QueuedJob, error: Exception) -> None:
        sched = self.scheduler
        log.warning("job %s failed: %s", job.id, error)
        failed = await sched._store_retrying(
            sched.store.finish, job.id, "ERROR", f"execution failed: {error}", sched.clock()
        )
        if sched._in_flight:
            await sched._store_retrying(sched.store.delete_fact, IN_FLIGHT)
            sched._in_flight = False
        sched._dequeue(job.id)
        if failed is not None:
            sched.metrics.job_finished("ERROR", _error_reason(error))
            sched._publish_job(failed)

    async def chunk_ran(self, job: policy.QueuedJob, shots: int, outcome: ChunkOutcome) -> None:
        """Merge a finished chunk into its job, exactly once, however long the store is down."""
        sched = self.scheduler
        device_seconds = outcome.device_seconds
        sched.metrics.chunk_ran(job.job_class, device_seconds, shots)
        chunk = (
            outcome.finished_at - device_seconds,
            outcome.finished_at,
            shots,
            outcome.calibration_age_s,
        )
        sched.timelines.chunk(job.id, job.job_class, *chunk)
        sched.traces.chunk(job.id, *chunk)
        row = await sched._store_retrying(
            sched.store.record_chunk,
            job.id,
            outcome.counts,
            shots,
            device_seconds,
            outcome.calibration_age_s,
            job.shots_done,
            outcome.emulator_seconds,
            sched.clock(),
            outcome.calibration,
            IN_FLIGHT if sched._in_flight else None,
        )
        sched._in_flight = False
        if row is None or row.status != "RUNNING":
            sched._dequeue(job.id)
            if row is not None:
                sched.metrics.job_finished(row.status)
                sched._publish_job(row)
            return
        sched._queue.update(dataclasses.replace(job, shots_done=row.shots_done))
        sched._queue_changed()
        sched._publish_job(row)

    def calibrating(self) -> None:
        self.scheduler._device_changed()

    def holding(self, pause: policy.LoopPause, until: float) -> None:
        log.info("QPU held for loop %s of user %s until %.3f", pause.loop, pause.user_id, until)
        self.scheduler.loop_hold = (pause, until)
        self._publish_device()

    def hold_ended(self, pause: policy.LoopPause, started_at: float, finished_at: float) -> None:
        log.info("QPU released by loop %s after %.3f s held", pause.loop, finished_at - started_at)
        self.scheduler.loop_hold = None
        self._publish_device()

    def _publish_device(self) -> None:
        """The device event for a hold's start or end; without waking the dispatcher, which
        is the one holding (a wake-up would end the hold at once)."""
        self.scheduler.bus.publish("device", self.scheduler.device_info())

    async def calibrated(self, started_at: float, finished_at: float) -> None:
        sched = self.scheduler
        calibration = sched.driver.calibration
        sched._calibration_id = calibration.id
        await sched._store_retrying(
            sched.store.set_facts,
            {"calibrated_at": calibration.calibrated_at, "calibration_id": calibration.id},
        )
        sched.metrics.calibrated()
        sched.timelines.calibration(started_at, finished_at)
        for job in list(sched._queue.jobs()):
            if job.single_calibration and job.started:
                await self._restart(job, calibration.id)
        sched._device_changed()

    async def _restart(self, job: policy.QueuedJob, calibration_id: int) -> None:
        """A single-calibration job that a calibration interrupted runs again from its first
        shot, under the new calibration (docs/policy.md, rule 7)."""
        sched = self.scheduler
        row = await sched._store_retrying(sched.store.restart_shots, job.id, job.shots_done)
        if row is None:
            return
        log.warning(
            "job %s restarts under calibration #%d: its %d shots so far ran under another",
            job.id,
            calibration_id,
            job.shots_done,
            extra=job_fields(row),
        )
        sched.driver.forget(str(job.id))
        sched._queue.update(dataclasses.replace(job, shots_done=0))
        sched._publish_job(row)

    def step_failed(self, error: Exception) -> None:
        if isinstance(error, LostLeadership):  # not stalled: deposed (the lease loop stops it)
            return
        self.scheduler._stalled("dispatcher_error", f"{type(error).__name__}: {error}")

    def step_succeeded(self) -> None:
        health = self.scheduler.health
        if not health.ok and health.reason == "dispatcher_error":
            self.scheduler._recovered()


class _QPULedger:
    """The daemon's :class:`~qhpc_lab.qpu.Ledger`: the QPU job a chunk waits on, in the store."""

    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler

    async def sending(self, flight: InFlight) -> None:
        await self._record(flight)

    async def submitted(self, flight: InFlight) -> None:
        await self._record(flight)

    async def _record(self, flight: InFlight) -> None:
        sched = self.scheduler
        job = sched._queue.get(int(flight.key))
        record = {**flight.to_dict(), "shots_done_before": job.shots_done if job else None}
        await sched._store_retrying(sched.store.set_dispatching_fact, IN_FLIGHT, record)
        sched._in_flight = True

    async def ran_canceled(self, flight: InFlight, outcome: ChunkOutcome) -> None:
        sched = self.scheduler
        log.warning(
            "job %s was canceled while QPU job %s could no longer be stopped: %.3f s charged",
            flight.key,
            flight.uid,
            outcome.device_seconds,
        )
        await sched._store_retrying(
            sched.store.charge, int(flight.key), outcome.device_seconds, IN_FLIGHT
        )
        sched._in_flight = False


def _error_reason(err: Exception) -> str:
    """The metrics' name for why a chunk ended its job."""
    if isinstance(err, ChunkBudgetExceeded):
        return {"emulation_time": "wall_time_budget", "emulation_memory": "memory_budget"}.get(
            err.rule, "other"
        )
    if isinstance(err, WorkerDied):
        return "worker_died"
    return "execution_failed"


def _first_line(err: BaseException | None) -> str:
    """A database error's first line: SQLAlchemy appends the statement and a help URL."""
    text = str(getattr(err, "orig", None) or err)
    return text.strip().splitlines()[0] if text.strip() else type(err).__name__
