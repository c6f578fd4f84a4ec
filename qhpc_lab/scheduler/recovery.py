"""Taking over the dispatch: the queue as stored, and what the previous dispatcher (this
daemon before a crash, or a replica that lost the lease) left running."""

from __future__ import annotations

import logging
from collections.abc import Callable

from qhpc_lab.qpu import InFlight, QPUDriver
from qhpc_lab.scheduler.device_state import DeviceStatus
from qhpc_lab.scheduler.gateway import StoreGateway
from qhpc_lab.scheduler.queue_state import QueueState
from qhpc_lab.scheduler.recorder import IN_FLIGHT
from qhpc_lab.scheduler.sessions import Sessions
from qhpc_lab.vocabulary import JobStatus

log = logging.getLogger("qhpc.scheduler")


class Recovery:
    """Loads the queue from the store, and recovers what a dispatcher left behind."""

    def __init__(
        self,
        gateway: StoreGateway,
        queue: QueueState,
        sessions: Sessions,
        device: DeviceStatus,
        driver: QPUDriver,
        clock: Callable[[], float],
    ) -> None:
        self._gateway = gateway
        self._store = gateway.store
        self._queue = queue
        self._sessions = sessions
        self._device = device
        self._driver = driver
        self._clock = clock

    async def chunk_left_on_device(self) -> bool:
        """Whether the previous dispatcher left a QPU job in flight (a restart adopts it)."""
        return bool(await self._gateway.retrying(self._store.get_fact, IN_FLIGHT))

    async def recover(self) -> None:
        """Jobs left running go back to PENDING, keeping their committed chunks; a chunk
        that ran but was never committed runs again, unless the device still has it (a QPU
        API job: adopted, recorded once)."""
        await self._adopt()
        requeued = await self._gateway.retrying(self._store.requeue_running)
        self._queue.requeued()
        if requeued:
            log.warning(
                "requeued %d jobs that were running when the scheduler stopped", len(requeued)
            )
        await self.load(leading=True)

    async def _adopt(self) -> None:
        """Record the chunk the previous dispatcher left on the device, once it ends there."""
        record = await self._gateway.retrying(self._store.get_fact, IN_FLIGHT)
        if not record:
            return
        flight = InFlight.from_dict(record)
        log.warning(
            "adopting QPU job %s: a chunk of %d shots of job %s left in flight",
            flight.uid,
            flight.shots,
            flight.key,
        )
        outcome = await self._driver.adopt(flight)
        job = await self._gateway.retrying(self._store.get_job, int(flight.key))
        before = record.get("shots_done_before")
        # Merged already (a restart after the commit), or the job moved on: nothing to merge.
        settled = before is None or job is None or job.shots_done != before
        if (
            outcome is not None
            and job is not None
            and job.status == JobStatus.CANCELED
            and not settled
        ):
            # canceled meanwhile, its shots ran all the same: charged, as a 3003 cancel is
            await self._gateway.retrying(
                self._store.charge,
                job.id,
                outcome.counts,
                flight.shots,
                outcome.device_seconds,
                before,
                outcome.emulator_seconds,
                IN_FLIGHT,
                outcome.calibration,
                outcome.calibration_age_s,
            )
            return
        if outcome is None or settled:
            await self._gateway.retrying(self._store.delete_fact, IN_FLIGHT)
            return
        await self._gateway.retrying(
            self._store.record_chunk,
            int(flight.key),
            outcome.counts,
            flight.shots,
            outcome.device_seconds,
            outcome.calibration_age_s,
            before,
            outcome.emulator_seconds,
            self._clock(),
            outcome.calibration,
            IN_FLIGHT,
        )

    async def load(self, leading: bool) -> None:
        """The open sessions and the active jobs from the store into the queue (kept jobs
        are brought up to date, ended ones dropped). ``leading``: also restart what the last
        calibration interrupted (a write only the dispatcher makes)."""
        await self._sessions.load()
        await self._device.load_reservations()
        calibration_id = self._driver.calibration.id
        rows = await self._gateway.retrying(self._store.active_jobs)
        active = {row.id for row in rows}
        for job in self._queue.jobs():
            if job.id not in active:
                self._queue.dequeue(job.id)
        for row in rows:
            stale = bool(row.calibrations) and row.calibrations[-1]["id"] != calibration_id
            if leading and row.single_calibration and stale:  # stopped before restarting it
                restart = self._store.restart_shots
                row = await self._gateway.retrying(restart, row.id, row.shots_done) or row
            if row.id in self._queue:
                self._queue.follow(row)
            else:
                self._queue.enqueue(row, slurm_account=self._sessions.slurm_account(row.session_id))
