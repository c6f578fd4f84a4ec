"""Jobs once accepted: looking them up for their owner, listing, canceling, and the one place
every change of a job passes (its event, its trace and, once final, its log line)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from qhpc_lab.scheduler.events import EventBus
from qhpc_lab.scheduler.gateway import StoreGateway
from qhpc_lab.scheduler.logs import job_fields
from qhpc_lab.scheduler.metrics import Metrics
from qhpc_lab.scheduler.queue_state import QueueState
from qhpc_lab.scheduler.refusal import SchedulerError
from qhpc_lab.scheduler.store import JobRow, SweepSetRow
from qhpc_lab.scheduler.traces import JobTraces
from qhpc_lab.scheduler.views import job_view
from qhpc_lab.vocabulary import FINAL_STATUSES, JobStatus

log = logging.getLogger("qhpc.scheduler")


class JobBook:
    """The accepted jobs, as their owners and the event stream see them."""

    def __init__(
        self,
        gateway: StoreGateway,
        queue: QueueState,
        bus: EventBus,
        traces: JobTraces,
        metrics: Metrics,
        cancel_chunk: Callable[[int], None],
        clock: Callable[[], float],
        journaled: bool,
    ) -> None:
        self._gateway = gateway
        self._store = gateway.store
        self._queue = queue
        self._bus = bus
        self._traces = traces
        self._metrics = metrics
        self._cancel_chunk = cancel_chunk
        """Stop a job's chunk on the device now (the dispatcher's)."""
        self._clock = clock
        self._journaled = journaled
        """HA replicas publish a job's event when the journal brings it back (to every one)."""

    def view(self, job: JobRow) -> dict[str, Any]:
        """A job's document, with its place in the queue now."""
        return job_view(job, self._queue.place(job.id))

    def views(self, jobs: list[JobRow]) -> list[dict[str, Any]]:
        """Many jobs' documents at one instant."""
        places = self._queue.places(job.id for job in jobs)
        return [job_view(job, places[job.id]) for job in jobs]

    async def get(self, job_id: int, user_id: str, admin: bool) -> JobRow:
        """A job its owner (or an administrator) may see; 404 for anyone else."""
        job = await self._gateway.db(self._store.get_job, job_id)
        if job is None or (job.user_id != user_id and not admin):
            raise SchedulerError(404, f"job {job_id} not found")
        return job

    async def get_any(self, job_id: int) -> JobRow | None:
        """A job, whoever owns it (the operator's ``/status``)."""
        return await self._gateway.db(self._store.get_job, job_id)

    async def sweep_sets(self, job: JobRow, after_index: int, limit: int) -> list[SweepSetRow]:
        """A page of a sweep's sets with their outcomes so far, those after ``after_index``
        (none for a plain job)."""
        if job.sets is None:
            return []
        return await self._gateway.db(self._store.sweep_sets, job.id, after_index, limit)

    async def find(
        self,
        user_id: str,
        admin: bool,
        status: str | None,
        limit: int | None = None,
        after_id: int | None = None,
    ) -> list[JobRow]:
        return await self._gateway.db(
            self._store.list_jobs, None if admin else user_id, status, limit, after_id
        )

    async def cancel(self, job_id: int, user_id: str, admin: bool, reason: str) -> JobRow:
        job = await self.get(job_id, user_id, admin)
        finished = await self._gateway.db(
            self._store.finish, job_id, JobStatus.CANCELED, reason, self._clock()
        )
        if finished is None:
            return job
        self._cancel_chunk(job_id)  # the emulation stops now, not at the chunk's end
        self._queue.dequeue(job_id)
        self._metrics.job_finished(JobStatus.CANCELED)
        self.changed(finished)
        return finished

    async def canceled(self, job_ids: list[int]) -> None:
        """The store canceled these jobs (their session was revoked)."""
        for job_id in job_ids:
            self._queue.dequeue(job_id)
            self._metrics.job_finished(JobStatus.CANCELED)
            job = await self._gateway.db(self._store.get_job, job_id)
            if job is not None:
                self.changed(job)

    async def counts_by_status(self) -> dict[str, int]:
        """How many jobs the store holds in each status (``/metrics``)."""
        return await self._gateway.db(self._store.count_by_status)

    def changed(self, job: JobRow) -> None:
        """Every change of a job passes here: its event, its trace and, once final, its log line."""
        if not self._journaled:
            self._bus.publish("job", self.view(job), user_id=job.user_id)
        self._traces.changed(job)
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
