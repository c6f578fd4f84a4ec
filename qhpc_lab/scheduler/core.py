"""The scheduler: a façade over framework-free services, one module each.

- :mod:`~qhpc_lab.scheduler.gateway`: the store off the event loop, its outages, the
  dispatcher's health;
- :mod:`~qhpc_lab.scheduler.queue_state`: the ranked queue, places (positions and ETAs), the
  queue snapshot;
- :mod:`~qhpc_lab.scheduler.sessions`, :mod:`~qhpc_lab.scheduler.admission` (submission checks
  and queue limits), :mod:`~qhpc_lab.scheduler.job_book` (jobs once accepted);
- :mod:`~qhpc_lab.scheduler.device_state`: device, maintenance, drains, reservations;
- :mod:`~qhpc_lab.scheduler.recorder` and :mod:`~qhpc_lab.scheduler.recovery`: the daemon's
  side of the dispatcher loop (:mod:`~qhpc_lab.scheduler.dispatcher`), and taking it over;
- :mod:`~qhpc_lab.scheduler.replication`: HA replicas' lease and journal;
- :mod:`~qhpc_lab.scheduler.quota_book`, :mod:`~qhpc_lab.scheduler.reports`: the operator's.

This module wires them and runs their tasks; the HTTP routes call it and build their
documents with :mod:`~qhpc_lab.scheduler.views`, and tests drive it in-process. Dispatch is
event-driven: a submission, a cancellation or a state change wakes the dispatcher at once, so
an idle QPU starts a job within milliseconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from opentelemetry.context import Context

from qhpc_lab.programs import Program, await_validation_worker
from qhpc_lab.qpu import DeviceProfile, DeviceState, QPUDriver
from qhpc_lab.scheduler import policy
from qhpc_lab.scheduler.admission import Admission
from qhpc_lab.scheduler.config import SchedulerConfig
from qhpc_lab.scheduler.device_state import DeviceStatus
from qhpc_lab.scheduler.dispatcher import Dispatcher, WallClock
from qhpc_lab.scheduler.events import EventBus, QueueSnapshot, Replayed
from qhpc_lab.scheduler.gateway import DISPATCHER_ERROR, StoreGateway
from qhpc_lab.scheduler.job_book import JobBook
from qhpc_lab.scheduler.journal import Journal
from qhpc_lab.scheduler.leadership import Leadership
from qhpc_lab.scheduler.metrics import Metrics, Snapshot
from qhpc_lab.scheduler.queue_state import QueueState
from qhpc_lab.scheduler.quota_book import QuotaBook
from qhpc_lab.scheduler.recorder import DaemonRecorder, QPULedger
from qhpc_lab.scheduler.recovery import Recovery
from qhpc_lab.scheduler.replication import Replication
from qhpc_lab.scheduler.reports import Reports
from qhpc_lab.scheduler.sessions import Sessions
from qhpc_lab.scheduler.shared_state import SharedState
from qhpc_lab.scheduler.store import JobRow, ReservationRow, SessionRow, Store, SweepSetRow
from qhpc_lab.scheduler.sweeps import SweepPlan
from qhpc_lab.scheduler.timeline import Timelines
from qhpc_lab.scheduler.traces import JobTraces
from qhpc_lab.scheduler.views import (
    DeviceSnapshot,
    DispatcherHealth,
    EstimateSnapshot,
    Holds,
    ReplicaSnapshot,
    SlotUse,
    device_info_view,
)

__all__ = ["JobRow", "ReservationRow", "Scheduler", "SessionRow"]
"""The façade and the rows its calls answer (the routes import no store)."""

log = logging.getLogger("qhpc.scheduler")


class Scheduler:
    """The daemon's domain: what the routes and tests call, delegated to the services."""

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

        def now() -> float:  # late-bound: a test that moves the scheduler's clock moves all
            return self.clock()

        self.metrics = Metrics()
        self.timelines = Timelines(clock=clock)
        self.traces = JobTraces(clock)
        self._gateway = StoreGateway(store, self.metrics, now, self._device_changed)
        self.journal: Journal | None = None
        """HA replicas: the shared job-event journal (docs/operations.md); None alone."""
        self.leadership: Leadership | None = None
        """HA replicas: who dispatches; None for the single daemon, which always does."""
        if config.ha:
            self.journal = Journal(store)
            self.leadership = Leadership(store, config.lease_renew_s, config.lease_ttl_s)
        self.bus = EventBus(self.queue_snapshot, replay=self._replay if config.ha else None)
        self._queue = QueueState(
            config.policy,
            self._gateway,
            self.device_view,
            self._holds,
            self._on_device,
            self._wake,
            driver.forget,
            now,
        )
        saved = store.get_fact("policy")
        if saved:
            self._queue.ranked.set_config(config.policy.changed(**saved))
        self._jobs = JobBook(
            self._gateway,
            self._queue,
            self.bus,
            self.traces,
            self.metrics,
            self._cancel_chunk,
            now,
            journaled=self.journal is not None,
        )
        self._sessions = Sessions(config, self._gateway, self._queue, self._jobs, now)
        self._device = DeviceStatus(
            driver, self._gateway, self._queue, self.timelines, now, self._device_changed
        )
        self._admission = Admission(
            config,
            self._gateway,
            self._device,
            self._queue,
            self._sessions,
            self._jobs,
            self.metrics,
            self.traces,
            now,
        )
        self._recorder = DaemonRecorder(
            self._gateway,
            self._queue,
            self._jobs,
            self._device,
            driver,
            self.metrics,
            self.timelines,
            self.traces,
            now,
            self._device_changed,
            self._publish_device,
        )
        driver.ledger = QPULedger(self._gateway, self._queue, self._recorder)
        driver.on_change = self._driver_changed
        self._dispatcher = Dispatcher(
            self._queue.ranked,
            driver,
            WallClock(clock),
            self.device_view,
            self._recorder,
            work=self._queue.work,
        )
        self._recovery = Recovery(
            self._gateway, self._queue, self._sessions, self._device, driver, now
        )
        self._replication: Replication | None = None
        self._shared: SharedState | None = None
        """HA replicas: the state they agree on, read from the store (shared_state.py)."""
        if self.journal is not None and self.leadership is not None:
            self._shared = SharedState(
                self._gateway,
                self._sessions,
                self._device,
                self._queue,
                lambda: self.leading,
                self._dispatcher.request_calibration,
            )
            self._replication = Replication(
                self._gateway,
                self.journal,
                self.leadership,
                self._queue,
                self._sessions,
                self._device,
                self._jobs,
                self.bus,
                self.metrics,
                self._cancel_chunk,
                self._lead,
                self._device_changed,
                self._shared,
            )
        self.quotas = QuotaBook(self._gateway, lambda: driver.profile, now)
        """Quotas and their use (``/quotas``, ``/admin/quotas``)."""
        self.reports = Reports(self._gateway)
        """Accounting reports (``/accounting``, ``/admin/accounting``)."""
        self._tasks: list[asyncio.Task[None]] = []

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        self.driver.start()
        # Ready means ready: the first submission must not wait for the SDK imports.
        await asyncio.to_thread(await_validation_worker)
        if self._replication is None:
            if await self._recovery.chunk_left_on_device():
                # The API answers from the queue as stored while recovery runs: adopting a
                # chunk left on the device waits for it to end there (longer while DOWN).
                await self._recovery.load(leading=False)
                dispatching = self._lead()
            else:  # ready means recovered: nothing on the device to wait for
                await self._recovery.recover()
                dispatching = self._dispatch()
            task = asyncio.create_task(dispatching, name="qhpc-dispatcher")
            task.add_done_callback(self.metrics.dispatcher_ended)
            task.add_done_callback(self._alone_ended)
            self._tasks = [task]
        else:  # a replica: the queue as it is, followed through the journal; leading later
            await self._recovery.load(leading=False)
            self._tasks = self._replication.start()
        self._tasks.append(
            asyncio.create_task(self._queue.publish_forever(self.bus), name="qhpc-queue-events")
        )
        if self.config.session_idle_timeout_s or self.config.session_max_lifetime_s:
            reaping = self._sessions.reap_forever(lambda: self.leading)
            self._tasks.append(asyncio.create_task(reaping, name="qhpc-session-reaper"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self._replication is not None:
            self._replication.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self._replication is not None:
            await self._replication.stop()
        self.bus.close()
        await self.driver.close()
        self._gateway.close()

    def _alone_ended(self, task: asyncio.Task[None]) -> None:
        """The single daemon's dispatching ended by itself (its recovery failed): said in the
        log and by ``/health``, which stays 503 until a restart."""
        if task.cancelled() or task.exception() is None:
            return
        error = task.exception()
        log.error("dispatching ended: %s: %s", type(error).__name__, error)
        self._gateway.stalled(DISPATCHER_ERROR, f"{type(error).__name__}: {error}")

    async def _lead(self) -> None:
        await self._recovery.recover()
        await self._dispatch()

    async def _dispatch(self) -> None:
        self.metrics.dispatcher_running()
        self._device_changed()
        await self._dispatcher.run_forever()

    async def _replay(self, last_event_id: int) -> list[Replayed]:
        assert self._replication is not None
        return await self._replication.replay(last_event_id)

    # -- wiring between the services ----------------------------------------------------------

    def _holds(self) -> Holds:
        return self._device.holds()

    def _on_device(self) -> int | None:
        """The job whose chunk is running, as the dispatcher says."""
        return self._dispatcher.running

    def _wake(self) -> None:
        self._dispatcher.wake()

    def _cancel_chunk(self, job_id: int) -> None:
        self._dispatcher.cancel_chunk(job_id)

    def _publish_device(self) -> None:
        self.bus.publish("device", self.device_info())

    def _device_changed(self) -> None:
        self._publish_device()
        self._queue.changed()

    def _driver_changed(self) -> None:
        """The device changed by itself: decide again; a calibration it made is recorded as
        one the dispatcher made."""
        since = self._device.driver_changed()
        if since is not None and self.leading:
            calibrated = self._recorder.calibrated(since, self.driver.calibration.calibrated_at)
            self._tasks.append(asyncio.create_task(calibrated, name="qhpc-device-calibrated"))
        self._device_changed()

    # -- replicas (HA) ----------------------------------------------------------------------

    @property
    def leading(self) -> bool:
        """Whether this daemon dispatches: always alone, while it holds the lease as a replica."""
        return self._replication is None or self._replication.leading

    def replica(self) -> ReplicaSnapshot | None:
        """This replica, for ``/health``; None for the single daemon."""
        return None if self._replication is None else self._replication.snapshot()

    @property
    def health(self) -> DispatcherHealth:
        """Whether the dispatcher makes progress (:mod:`~qhpc_lab.scheduler.gateway`)."""
        return self._gateway.health

    # -- device ---------------------------------------------------------------------------

    @property
    def profile(self) -> DeviceProfile:
        """The device's profile: specs, formats, timing."""
        return self._device.profile

    @property
    def device_state(self) -> DeviceState:
        return self._device.state

    @property
    def device_message(self) -> str:
        """The operator's message, else what the device says of itself."""
        return self._device.shown_message

    @property
    def accessible(self) -> bool:
        return self._device.accessible

    @property
    def message(self) -> str:
        return self._device.message

    @property
    def draining(self) -> bool:
        return self._device.draining

    def device_view(self) -> policy.DeviceView:
        return self._device.view()

    def device_snapshot(self) -> DeviceSnapshot:
        on_device = self._dispatcher.running
        return self._device.snapshot(
            self._queue.get(on_device) if on_device is not None else None,
            self.queue_depth(),
            self.health,
            self.policy.cell_job_class,
        )

    def device_info(self, user_id: str | None = None, admin: bool = False) -> dict[str, Any]:
        """The device as ``/device`` shows it; the running job's id only to its owner or admins."""
        return device_info_view(self.device_snapshot(), user_id, admin)

    async def metrics_snapshot(self) -> Snapshot:
        """What ``/metrics`` renders beside the counters."""
        device = self.device_snapshot()
        upcoming = device.next_reservation
        return Snapshot(
            queue_depth=dict(device.queue_depth),
            jobs_by_status=await self._jobs.counts_by_status(),
            device_state=device.state,
            calibration_age_s=round(device.now - device.calibrated_at, 3),
            calibration_duration_s=self.profile.calibration_duration_s,
            calibration_interval_s=self.profile.calibration_interval_s,
            accessible=device.accessible,
            draining=device.draining,
            sessions_open=self.sessions_open,
            emulator_worker_up=getattr(self.driver, "worker_alive", None),
            reservation=None if upcoming is None else (upcoming.starts_at, upcoming.ends_at),
        )

    async def set_accessible(self, accessible: bool, message: str | None = None) -> None:
        await self._device.set_accessible(accessible, message)

    async def set_draining(self, draining: bool) -> None:
        await self._device.set_draining(draining)

    async def request_calibration(self) -> None:
        """Calibrate before the next chunk; an HA replica stores the request for the leader."""
        if self._shared is None:
            self._dispatcher.request_calibration()
        else:
            await self._shared.request_calibration()

    async def add_reservation(
        self, owner_kind: str, owner: str, starts_at: float, ends_at: float, created_by: str
    ) -> ReservationRow:
        return await self._device.add_reservation(owner_kind, owner, starts_at, ends_at, created_by)

    async def cancel_reservation(self, reservation_id: int) -> ReservationRow:
        return await self._device.cancel_reservation(reservation_id)

    async def reservations(self, ended: bool = False) -> list[ReservationRow]:
        return await self._device.find_reservations(ended)

    # -- sessions -------------------------------------------------------------------------

    @property
    def sessions_open(self) -> int:
        return self._sessions.open_count

    def slot_use(self) -> SlotUse:
        return self._sessions.slot_use()

    async def open_session(
        self,
        user_id: str,
        slurm_job_id: str | None,
        qpu_slots: int,
        slurm_account: str | None = None,
    ) -> SessionRow:
        return await self._sessions.open(user_id, slurm_job_id, qpu_slots, slurm_account)

    async def expire_sessions(self) -> int:
        return await self._sessions.expire()

    async def get_session(self, session_id: str) -> SessionRow | None:
        return await self._sessions.get(session_id)

    async def sessions(
        self, active: bool | None, user_id: str | None = None, slurm_job_id: str | None = None
    ) -> list[SessionRow]:
        return await self._sessions.find(active, user_id, slurm_job_id)

    async def revoke_session(self, session_id: str, reason: str) -> SessionRow:
        return await self._sessions.revoke(session_id, reason)

    # -- jobs -----------------------------------------------------------------------------

    async def program(
        self,
        sequence: str | dict[str, Any],
        fmt: str,
        shots: int,
        name: str | None,
        variables: dict[str, Any],
    ) -> Program:
        return await self._admission.program(sequence, fmt, shots, name, variables)

    async def sweep(
        self, program: Program, sets: list[tuple[int, dict[str, Any]]]
    ) -> tuple[Program, SweepPlan]:
        return await self._admission.sweep(program, sets)

    async def sweep_sets(
        self, job: JobRow, after_index: int, limit: int | None
    ) -> list[SweepSetRow]:
        """A page of the sweep's sets: at most ``limit``, never more than the site's page."""
        page = min(limit or self.config.sweep_sets_per_page, self.config.sweep_sets_per_page)
        return await self._jobs.sweep_sets(job, after_index, page)

    async def check_session(self, session_id: str | None, user_id: str, admin: bool) -> None:
        """403 unless the caller may submit in ``session_id`` (or without one): a submission's
        identity and session are checked before its program, as Warden does."""
        await self._sessions.check(session_id, user_id, admin)

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
        sweep: SweepPlan | None = None,
    ) -> JobRow:
        return await self._admission.submit(
            user_id,
            admin,
            session_id,
            program,
            job_class,
            max_calibration_age_s,
            idempotency_key,
            trace_context,
            single_calibration,
            loop,
            think_time_s,
            sweep,
        )

    async def get_job(self, job_id: int, user_id: str, admin: bool) -> JobRow:
        return await self._jobs.get(job_id, user_id, admin)

    async def list_jobs(
        self,
        user_id: str,
        admin: bool,
        status: str | None,
        limit: int | None = None,
        after_id: int | None = None,
    ) -> list[JobRow]:
        return await self._jobs.find(user_id, admin, status, limit, after_id)

    async def running_job(self) -> JobRow | None:
        """The job whose chunk is on the device now (the operator's ``/status``)."""
        running = self._dispatcher.running
        return None if running is None else await self._jobs.get_any(running)

    async def cancel(
        self, job_id: int, user_id: str, admin: bool, reason: str = "canceled by user"
    ) -> JobRow:
        return await self._jobs.cancel(job_id, user_id, admin, reason)

    def job_view(self, job: JobRow) -> dict[str, Any]:
        return self._jobs.view(job)

    def job_views(self, jobs: list[JobRow]) -> list[dict[str, Any]]:
        return self._jobs.views(jobs)

    # -- the queue ------------------------------------------------------------------------

    @property
    def policy(self) -> policy.PolicyConfig:
        return self._queue.policy

    async def set_policy(self, changes: dict[str, Any]) -> policy.PolicyConfig:
        return await self._queue.set_policy(changes)

    def queue_depth(self) -> dict[str, int]:
        """Active jobs (waiting or started) per class."""
        return self._queue.depth()

    def waiting(self) -> int:
        """Active jobs not started (status PENDING)."""
        return sum(self._queue.waiting_depth().values())

    def position(self, job_id: int) -> tuple[int | None, float | None]:
        """An active job's queue position (0 = started, 1 = next to start) and ETA in seconds
        (None while held); (None, None) for another."""
        place = self._queue.place(job_id)
        return place.position, place.eta_s

    def estimate(
        self,
        user_id: str | None,
        shots: int,
        job_class: str | None = None,
        max_calibration_age_s: float | None = None,
    ) -> EstimateSnapshot:
        return self._admission.estimate(user_id, shots, job_class, max_calibration_age_s)

    def queue_snapshot(self) -> QueueSnapshot:
        return self._queue.snapshot()
