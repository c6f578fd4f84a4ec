"""The daemon's side of the dispatcher loop: what each chunk and calibration leaves in the
store (retried through outages), the metrics, events and timelines, in the order the loop
reports them; and the QPU job a chunk waits on (a QPU API driver's), kept in the store so
that a restart adopts it."""

from __future__ import annotations

import logging
from collections.abc import Callable

from qhpc_lab.programs.worker import WorkerDied
from qhpc_lab.qpu import ChunkBudgetExceeded, ChunkCanceled, ChunkOutcome, InFlight, QPUDriver
from qhpc_lab.scheduler import policy
from qhpc_lab.scheduler.device_state import DeviceStatus
from qhpc_lab.scheduler.dispatcher import Recorder
from qhpc_lab.scheduler.gateway import DISPATCHER_ERROR, StoreGateway
from qhpc_lab.scheduler.job_book import JobBook
from qhpc_lab.scheduler.leadership import LostLeadership
from qhpc_lab.scheduler.logs import job_fields
from qhpc_lab.scheduler.metrics import Metrics
from qhpc_lab.scheduler.queue_state import QueueState
from qhpc_lab.scheduler.timeline import Timelines
from qhpc_lab.scheduler.traces import JobTraces
from qhpc_lab.vocabulary import JobStatus

log = logging.getLogger("qhpc.scheduler")

IN_FLIGHT = "qpu_in_flight"
"""The store fact naming the QPU job a chunk waits on (a QPU API driver's): written before the
wait, deleted in the transaction that records the chunk; a restart adopts what it names."""


class DaemonRecorder(Recorder):
    """What the dispatcher loop reports, recorded through the services' public calls."""

    def __init__(
        self,
        gateway: StoreGateway,
        queue: QueueState,
        jobs: JobBook,
        device: DeviceStatus,
        driver: QPUDriver,
        metrics: Metrics,
        timelines: Timelines,
        traces: JobTraces,
        clock: Callable[[], float],
        device_changed: Callable[[], None],
        publish_device: Callable[[], None],
    ) -> None:
        self._gateway = gateway
        self._store = gateway.store
        self._queue = queue
        self._jobs = jobs
        self._device = device
        self._driver = driver
        self._metrics = metrics
        self._timelines = timelines
        self._traces = traces
        self._clock = clock
        self._device_changed = device_changed
        """The device event, and the dispatcher decides again."""
        self._publish_device = publish_device
        """The device event alone: a hold's start or end must not wake the dispatcher, which
        is the one holding (a wake-up would end the hold at once)."""
        self.in_flight = False
        """Whether :data:`IN_FLIGHT` names the chunk now running (settled when it is recorded)."""

    async def chunk_starting(self, job: policy.QueuedJob, shots: int) -> bool:
        self._metrics.chunk_started(job.id, job.job_class, self._queue.ranked)
        started = None
        if not self._queue.has_started(job.id):  # a write only for a job's first chunk
            started = await self._gateway.retrying(self._store.mark_running, job.id, self._clock())
            self._queue.mark_started(job.id)
        if job.id not in self._queue:  # canceled while the store was slow
            return False
        if started is not None:  # its first chunk, or its first since a restart
            if not job.started:
                self._metrics.job_started(job.job_class, started.started_at - job.created_at)
            self._jobs.changed(started)
        # The queue event after the write and the job's RUNNING event: built during the write,
        # it competed with the store thread for the GIL and went out before RUNNING.
        self._queue.changed()
        return True

    async def chunk_failed(self, job: policy.QueuedJob, error: Exception) -> None:
        log.warning("job %s failed: %s", job.id, error)
        failed = await self._gateway.retrying(
            self._store.finish, job.id, JobStatus.ERROR, f"execution failed: {error}", self._clock()
        )
        if self.in_flight:
            await self._gateway.retrying(self._store.delete_fact, IN_FLIGHT)
            self.in_flight = False
        self._queue.dequeue(job.id)
        if failed is not None:
            self._metrics.job_finished(JobStatus.ERROR, _error_reason(error))
            self._jobs.changed(failed)

    async def chunk_ran(self, job: policy.QueuedJob, shots: int, outcome: ChunkOutcome) -> None:
        """Merge a finished chunk into its job, exactly once, however long the store is down."""
        device_seconds = outcome.device_seconds
        self._metrics.chunk_ran(job.job_class, device_seconds, shots)
        chunk = (
            outcome.finished_at - device_seconds,
            outcome.finished_at,
            shots,
            outcome.calibration_age_s,
        )
        self._timelines.chunk(job.id, job.job_class, *chunk)
        self._traces.chunk(job.id, *chunk)
        row = await self._gateway.retrying(
            self._store.record_chunk,
            job.id,
            outcome.counts,
            shots,
            device_seconds,
            outcome.calibration_age_s,
            job.shots_done,
            outcome.emulator_seconds,
            self._clock(),
            outcome.calibration,
            IN_FLIGHT if self.in_flight else None,
        )
        self.in_flight = False
        if row is None or row.status != JobStatus.RUNNING:
            self._queue.dequeue(job.id)
            if row is not None:
                self._metrics.job_finished(row.status)
                self._jobs.changed(row)
            return
        self._queue.progressed(job, row.shots_done)
        self._queue.changed()
        self._jobs.changed(row)

    async def chunk_canceled(self, job: policy.QueuedJob, canceled: ChunkCanceled) -> None:
        """Charge the job what its chunk ran once canceled (its canceller has dequeued it)."""
        outcome = canceled.outcome
        settles = IN_FLIGHT if self.in_flight else None
        self.in_flight = False
        if outcome is None:
            if settles is not None:  # the QPU job was stopped before it started
                await self._gateway.retrying(self._store.delete_fact, settles)
            return
        log.warning(
            "job %s was canceled while its chunk was on the device: %.3f s and %d shots charged",
            job.id,
            outcome.device_seconds,
            canceled.shots,
        )
        self._metrics.chunk_ran(job.job_class, outcome.device_seconds, canceled.shots)
        chunk = (
            outcome.finished_at - outcome.device_seconds,
            outcome.finished_at,
            canceled.shots,
            outcome.calibration_age_s,
        )
        self._timelines.chunk(job.id, job.job_class, *chunk)
        self._traces.chunk(job.id, *chunk)
        row = await self._gateway.retrying(
            self._store.charge,
            job.id,
            outcome.counts,
            canceled.shots,
            outcome.device_seconds,
            job.shots_done,
            outcome.emulator_seconds,
            settles,
            outcome.calibration,
            outcome.calibration_age_s,
        )
        if row is not None:
            self._jobs.changed(row)

    def calibrating(self) -> None:
        self._device_changed()

    def holding(self, pause: policy.LoopPause, until: float) -> None:
        log.info("QPU held for loop %s of user %s until %.3f", pause.loop, pause.user_id, until)
        self._device.loop_hold = (pause, until)
        self._timelines.hold("loop_hold", True, self._clock())
        self._queue.dirty.set()  # waiting jobs are held_by loop_hold: the queue event, no wake
        self._publish_device()

    def hold_ended(self, pause: policy.LoopPause, started_at: float, finished_at: float) -> None:
        log.info("QPU released by loop %s after %.3f s held", pause.loop, finished_at - started_at)
        self._device.loop_hold = None
        self._timelines.hold("loop_hold", False, finished_at)
        self._queue.dirty.set()
        self._publish_device()

    async def calibrated(self, started_at: float, finished_at: float) -> None:
        calibration = self._driver.calibration
        self._device.calibration_recorded(calibration.id)
        await self._gateway.retrying(
            self._store.set_facts,
            {"calibrated_at": calibration.calibrated_at, "calibration_id": calibration.id},
        )
        self._metrics.calibrated()
        self._timelines.calibration(started_at, finished_at)
        for job in self._queue.jobs():
            if job.single_calibration and job.started:
                await self._restart(job, calibration.id)
        self._device_changed()

    async def _restart(self, job: policy.QueuedJob, calibration_id: int) -> None:
        """A single-calibration job that a calibration interrupted runs again from its first
        shot, under the new calibration (docs/policy.md, rule 7)."""
        row = await self._gateway.retrying(self._store.restart_shots, job.id, job.shots_done)
        if row is None:
            return
        log.warning(
            "job %s restarts under calibration #%d: its %d shots so far ran under another",
            job.id,
            calibration_id,
            job.shots_done,
            extra=job_fields(row),
        )
        self._driver.forget(str(job.id))
        self._queue.progressed(job, 0)
        self._jobs.changed(row)

    def step_failed(self, error: Exception) -> None:
        if isinstance(error, LostLeadership):  # not stalled: deposed (the lease loop stops it)
            return
        self._gateway.stalled(DISPATCHER_ERROR, f"{type(error).__name__}: {error}")

    def step_succeeded(self) -> None:
        self._gateway.recovered(DISPATCHER_ERROR)


class QPULedger:
    """The daemon's :class:`~qhpc_lab.qpu.Ledger`: the QPU job a chunk waits on, in the store."""

    def __init__(self, gateway: StoreGateway, queue: QueueState, recorder: DaemonRecorder) -> None:
        self._gateway = gateway
        self._store = gateway.store
        self._queue = queue
        self._recorder = recorder

    async def sending(self, flight: InFlight) -> None:
        await self._record(flight)

    async def submitted(self, flight: InFlight) -> None:
        await self._record(flight)

    async def _record(self, flight: InFlight) -> None:
        job = self._queue.get(int(flight.key))
        record = {**flight.to_dict(), "shots_done_before": job.shots_done if job else None}
        await self._gateway.retrying(self._store.set_dispatching_fact, IN_FLIGHT, record)
        self._recorder.in_flight = True


def _error_reason(err: Exception) -> str:
    """The metrics' name for why a chunk ended its job."""
    if isinstance(err, ChunkBudgetExceeded):
        return {"emulation_time": "wall_time_budget", "emulation_memory": "memory_budget"}.get(
            err.rule, "other"
        )
    if isinstance(err, WorkerDied):
        return "worker_died"
    return "execution_failed"
