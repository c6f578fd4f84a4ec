"""HA replicas (docs/operations.md): the lease that says which one dispatches, and the shared
journal of job changes that every replica follows, publishes to its own subscribers and
replays to a client reconnecting with ``Last-Event-ID``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from qhpc_lab.scheduler.device_state import DeviceStatus
from qhpc_lab.scheduler.events import EventBus, Replayed
from qhpc_lab.scheduler.gateway import StoreGateway
from qhpc_lab.scheduler.job_book import JobBook
from qhpc_lab.scheduler.journal import Journal, Listener
from qhpc_lab.scheduler.leadership import Leadership, LostLeadership
from qhpc_lab.scheduler.metrics import Metrics
from qhpc_lab.scheduler.queue_state import QueueState
from qhpc_lab.scheduler.refusal import SchedulerError
from qhpc_lab.scheduler.sessions import Sessions
from qhpc_lab.scheduler.shared_state import SharedState
from qhpc_lab.scheduler.store import JobRow
from qhpc_lab.scheduler.views import ReplicaSnapshot
from qhpc_lab.vocabulary import FINAL_STATUSES

log = logging.getLogger("qhpc.scheduler")

JOURNAL_POLL_S = 1.0
"""HA: how often a replica reads the journal when no NOTIFY said it changed (a lost one)."""
JOURNAL_BATCH = 1000
"""HA: journal events read at once, and replayed to a reconnecting client before a reset."""
JOURNAL_KEPT = 100_000
"""HA: journal events kept (the leader prunes older ones now and then)."""


class Replication:
    """One replica: leading while it holds the lease, following the journal always."""

    def __init__(
        self,
        gateway: StoreGateway,
        journal: Journal,
        leadership: Leadership,
        queue: QueueState,
        sessions: Sessions,
        device: DeviceStatus,
        jobs: JobBook,
        bus: EventBus,
        metrics: Metrics,
        cancel_chunk: Callable[[int], None],
        lead: Callable[[], Coroutine[Any, Any, None]],
        deposed: Callable[[], None],
        shared: SharedState,
    ) -> None:
        self._gateway = gateway
        self._journal = journal
        self.leadership = leadership
        self._queue = queue
        self._sessions = sessions
        self._device = device
        self._jobs = jobs
        self._bus = bus
        self._metrics = metrics
        self._cancel_chunk = cancel_chunk
        self._lead = lead
        """Recovery then the dispatcher: what this replica runs while it holds the lease."""
        self._on_deposed = deposed
        self._shared = shared
        """Sessions, maintenance, drain, policy, calibration requests: read on every wake-up."""
        self._leading: asyncio.Task[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._listener: Listener | None = None
        self._news = asyncio.Event()

    @property
    def leading(self) -> bool:
        return self.leadership.leading

    def snapshot(self) -> ReplicaSnapshot:
        return ReplicaSnapshot(
            name=self.leadership.lease.holder,
            leading=self.leadership.leading,
            epoch=self.leadership.epoch,
            since=self.leadership.since,
        )

    def start(self) -> list[asyncio.Task[None]]:
        """The journal follower and the lease loop, as tasks."""
        return [
            asyncio.create_task(self.follow_forever(), name="qhpc-journal"),
            asyncio.create_task(
                self.leadership.run_forever(self.elected, self.deposed), name="qhpc-lease"
            ),
        ]

    def _own_tasks(self) -> list[asyncio.Task[None]]:
        return [*self._tasks, *([self._leading] if self._leading else [])]

    def cancel(self) -> None:
        """Stop leading (with the façade's tasks, so that no lease is taken meanwhile)."""
        for task in self._own_tasks():
            task.cancel()

    async def stop(self) -> None:
        """After :meth:`cancel`: the lease given up at once, for the next replica."""
        for task in self._own_tasks():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        await self.leadership.release()  # the next replica takes over at once
        self.leadership.close()
        if self._listener is not None:
            await asyncio.to_thread(self._listener.stop)

    # -- the lease ------------------------------------------------------------------------------

    def elected(self, epoch: int) -> None:
        self._leading = asyncio.create_task(self._lead(), name="qhpc-dispatcher")
        self._leading.add_done_callback(self._lead_ended)

    def _lead_ended(self, task: asyncio.Task[None]) -> None:
        """Leading ended by itself (its recovery failed: deposed meanwhile, or a bug): the
        lease is given up, so this replica or another takes it again and recovers anew."""
        if task.cancelled() or self._leading is not task:
            return
        log.warning("dispatching ended: %s", task.exception())
        if not isinstance(task.exception(), LostLeadership):
            self._metrics.dispatcher_stalled("crashed")
        self._leading = None
        self._tasks.append(
            asyncio.create_task(self.leadership.release(), name="qhpc-lease-release")
        )

    async def deposed(self, why: str) -> None:
        task, self._leading = self._leading, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._gateway.forget_stall()
        self._on_deposed()

    # -- the journal ----------------------------------------------------------------------------

    async def follow_forever(self) -> None:
        """Read what the journal says changed, as announced (or every JOURNAL_POLL_S):
        publish it to this replica's subscribers and bring the queue up to date (a job
        submitted or canceled on another replica); and the shared state, when it changed."""
        journal, db = self._journal, self._gateway.db
        last = await self._gateway.retrying(journal.last_id)
        loop = asyncio.get_running_loop()
        self._listener = Listener(
            self._gateway.store, lambda: loop.call_soon_threadsafe(self._news.set)
        )
        self._listener.start()
        pruned_at = time.monotonic()
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(JOURNAL_POLL_S):
                    await self._news.wait()
            self._news.clear()
            try:
                entries, more = await db(journal.after, last, JOURNAL_BATCH)
                await self._sessions.learn({r.session_id for _, r in entries if r.session_id})
                await self._shared.learn()
                await self._device.learn_reservations()
                if self.leading and time.monotonic() - pruned_at > 60:
                    pruned_at = time.monotonic()
                    await db(journal.prune, JOURNAL_KEPT)
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
                self._news.set()

    def _journaled(self, event_id: int, row: JobRow) -> None:
        queued = self._queue.get(row.id)
        if row.status in FINAL_STATUSES:
            if queued is not None:  # canceled on another replica: its chunk stops here too
                self._cancel_chunk(row.id)
                self._queue.dequeue(row.id)
        elif queued is None:
            if not self._queue.ended_recently(row.id):  # (read just before it ended here)
                self._queue.enqueue(row, slurm_account=self._sessions.slurm_account(row.session_id))
        elif not self.leading:  # the leader's own queue is ahead of what it reads back
            self._queue.follow(row)
        self._bus.publish("job", self._jobs.view(row), user_id=row.user_id, event_id=event_id)

    async def replay(self, last_event_id: int) -> list[Replayed]:
        """What a client that saw event ``last_event_id`` (on any replica) missed: each job
        changed since, as it is now; a ``reset`` when more changed than a batch holds."""
        db = self._gateway.db
        entries, more = await db(self._journal.after, last_event_id, JOURNAL_BATCH)
        if more:
            return [Replayed(await db(self._journal.last_id), "reset", {}, None)]
        return [Replayed(i, "job", self._jobs.view(row), row.user_id) for i, row in entries]
