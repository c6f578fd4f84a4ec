"""Group commit: submissions that arrive while a job is being written are written together.

SQLite lets one writer in at a time, and a submission's transaction is short (its checks,
one insert, the commit): under load the store threads spent most of their time waiting for
the writer lock, one submission after another (docs/benchmarks.md, "group commit"). Here a
submission waits for the write in flight, then goes with every other submission that came
meanwhile in the next transaction (:meth:`Store.add_jobs`): each checked in turn as alone
(session, caps, quotas, idempotency), each answered its own row or refusal, the commit paid
once. A lone submission is written at once, as before.
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
        self._writing: asyncio.Task[None] | None = None

    async def add_job(self, new: NewJob) -> JobRow:
        """The job added, or its refusal raised (the store's: DuplicateJob, AdmissionRefused,
        QuotaExceeded; the gateway's 503 when the store is down)."""
        answer: asyncio.Future[JobRow | Exception] = asyncio.get_running_loop().create_future()
        self._waiting.append((new, answer))
        if self._writing is None:
            self._writing = asyncio.create_task(self._write_groups())
        result = await asyncio.shield(answer)
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
            self._writing = None
            for _, answer in group + self._waiting:  # only when this task was canceled
                if not answer.done():
                    answer.cancel()
            self._waiting.clear()
