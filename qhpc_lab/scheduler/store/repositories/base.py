"""What every repository of the store shares: the engine, the write transaction, the clock and
the HA hooks that dispatching writes call."""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from qhpc_lab.scheduler.store.engine import BUSY_TIMEOUT_S, NoLock, writer_lock
from qhpc_lab.scheduler.store.rows import JobChange
from qhpc_lab.scheduler.store.schema import facts

SHARED_STATE = "shared_state"
"""The fact that changes with every write of what HA replicas must agree on (sessions, drain,
maintenance, policy, calibration requests): a replica that reads a new value reloads them."""


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
        self.announce: Callable[[sa.Connection], None] | None = None
        """HA replicas (:mod:`qhpc_lab.scheduler.journal`): wakes every replica's follower at
        the commit of a write that changed the shared state."""
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

    def _shared_changed(self, conn: sa.Connection) -> None:
        """Within ``conn``'s transaction: the shared state changed (a new :data:`SHARED_STATE`,
        announced to the replicas at commit)."""
        put_fact(conn, SHARED_STATE, uuid.uuid4().hex)
        if self.announce is not None:
            self.announce(conn)


def put_fact(conn: sa.Connection, key: str, value: Any) -> None:
    """Write one fact, replacing its value if it has one: one upsert, so replicas writing the
    same fact at once (two starting together) neither fail nor lose a value."""
    insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    statement = insert(facts).values(key=key, value=json.dumps(value))
    conn.execute(
        statement.on_conflict_do_update(
            index_elements=[facts.c.key], set_={"value": statement.excluded.value}
        )
    )
