"""Group commit: submissions that arrive while a job is being written are written together.

SQLite lets one writer in at a time, and a submission's transaction is short (its checks,
one insert, the commit): under load the store threads spent most of their time waiting for
the writer lock, one submission after another (docs/benchmarks.md, "group commit"). Here a
submission waits for the write in flight, then goes with every other submission that came
meanwhile in the next transaction (:meth:`Store.add_jobs`): each checked in turn as alone
(session, caps, quotas, idempotency), each answered its own row or refusal, the commit paid
once. A submission that finds no write in flight is written at once from its own request,
with no hand-off to the writer's task (two turns of the event loop on the idle QPU's submit →
RUNNING path), and those that arrive meanwhile go together after it.
"""

from __future__ import annotations

import asyncio

from qhpc_lab.scheduler.gateway import StoreGateway
from qhpc_lab.scheduler.metrics import Metrics
from qhpc_lab.scheduler.store import JobRow, NewJob

MAX_GROUP = 128
"""Submissions in one transaction at most: the writer lock is held for their checks and
inserts (tens of microseconds each), so the dispatcher's writes wait a few ms at most."""


class JobWriter:
    """Adds jobs through the store in groups, one group in flight at a time."""

    def __init__(self, gateway: StoreGateway, metrics: Metrics, max_group: int = MAX_GROUP) -> None:
        self._gateway = gateway
        self._metrics = metrics
        self._max_group = max_group
        self._waiting: list[tuple[NewJob, asyncio.Future[JobRow | Exception]]] = []
        self._writing = False
        """A write is in flight: a lone submission's, or the writer task's groups."""
        self._groups: asyncio.Task[None] | None = None

    async def add_job(self, new: NewJob) -> JobRow:
        """The job added, or its refusal raised (the store's: DuplicateJob, AdmissionRefused,
        QuotaExceeded; the gateway's 503 when the store is down)."""
        if not self._writing:
            return await self._write_alone(new)
        answer: asyncio.Future[JobRow | Exception] = asyncio.get_running_loop().create_future()
        self._waiting.append((new, answer))
        result = await asyncio.shield(answer)
        if isinstance(result, Exception):
            raise result
        return result

    async def _write_alone(self, new: NewJob) -> JobRow:
        """Nothing in flight: this submission's transaction, then the writer's task for those
        that came meanwhile. The store thread finishes the write even if the request is
        canceled, as the writer's task would."""
        self._writing = True
        try:
            (result,) = await self._gateway.db(self._gateway.store.add_jobs, [new])
            self._metrics.submissions_written(1)
        finally:
            self._writing = bool(self._waiting)
            if self._writing:
                self._groups = asyncio.create_task(self._write_groups())
        if isinstance(result, Exception):
            raise result
        return result

    async def _write_groups(self) -> None:
        """Write what is waiting, a group at a time, until nothing is."""
        group: list[tuple[NewJob, asyncio.Future[JobRow | Exception]]] = []
        try:
            while self._waiting:
                group = self._waiting[: self._max_group]
                del self._waiting[: self._max_group]
                try:
                    answers = await self._gateway.db(
                        self._gateway.store.add_jobs, [new for new, _ in group]
                    )
                except Exception as failed:  # the store is down: every submission is told
                    answers = [failed] * len(group)
                else:
                    self._metrics.submissions_written(len(group))
                for (_, answer), result in zip(group, answers, strict=True):
                    answer.set_result(result)
        finally:
            self._writing = False
            for _, answer in group + self._waiting:  # only when this task was canceled
                if not answer.done():
                    answer.cancel()
            self._waiting.clear()
