"""What every repository of the store shares: the engine, the write transaction, the clock and
the HA hooks that dispatching writes call."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import sqlalchemy as sa

from qhpc_lab.scheduler.store.engine import BUSY_TIMEOUT_S, NoLock, writer_lock
from qhpc_lab.scheduler.store.rows import JobChange


class Repository:
    """One aggregate's queries. The store's repositories share one instance's state (the
    façade :class:`~qhpc_lab.scheduler.store.Store` is all of them), so a hook set on it is
    seen by every write."""

    def __init__(self, engine: sa.Engine, clock: Callable[[], float] = time.time) -> None:
        self.engine = engine
        self.clock = clock
        """What a write stamps when its caller passes no ``now``: the scheduler's clock."""
        self.fence: Callable[[sa.Connection], None] | None = None
        """HA replicas (:mod:`qhpc_lab.scheduler.leadership`): raises inside a dispatching
        write (a chunk's start or commit) unless this replica still holds the dispatch lease."""
        self.journal: Callable[[sa.Connection, list[JobChange]], None] | None = None
        """HA replicas (:mod:`qhpc_lab.scheduler.journal`): records job changes for every
        replica's event stream, in the transaction that makes them."""
        self._writer_lock: threading.Lock | NoLock = writer_lock(engine)

    @contextlib.contextmanager
    def _write(self) -> Iterator[sa.Connection]:
        """A write transaction. SQLite lets one writer in at a time: writers of this process
        queue on a lock here, not in SQLite's busy handler, which sleeps in steps of up to
        100 ms and made concurrent submissions slow (docs/benchmarks.md). A writer from
        another process is still waited for by the busy timeout."""
        if not self._writer_lock.acquire(timeout=BUSY_TIMEOUT_S):
            raise sa.exc.OperationalError(
                "BEGIN", None, Exception("database is locked (by another write of this daemon)")
            )
        try:
            with self.engine.begin() as conn:
                yield conn
        finally:
            self._writer_lock.release()

    def _dispatching(self, conn: sa.Connection) -> None:
        """The fence of a dispatching write: a replica that lost the lease writes nothing."""
        if self.fence is not None:
            self.fence(conn)

    def _changed(self, conn: sa.Connection, *rows: Any) -> None:
        """Journal the jobs ``rows`` (rows of ``jobs`` as written) when replicas share events."""
        if self.journal is not None and rows:
            self.journal(conn, [JobChange(r.id, r.status, r.shots_done) for r in rows])
