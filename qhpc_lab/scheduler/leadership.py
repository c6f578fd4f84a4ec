"""Which replica of a QPU's scheduler dispatches: a lease row in PostgreSQL, with fencing.

Every replica serves the API; the one holding the ``dispatcher`` lease runs the dispatcher
(docs/operations.md, "High availability"). The lease row says who holds it, until when (the
database's clock, so replicas on hosts with skewed clocks agree) and under which ``epoch``:
each takeover adds one. The holder renews it every ``lease_renew_s``; once it lapses
(``lease_ttl_s`` without a renewal: the holder was killed, paused or cut off) another replica
takes it with the next epoch.

Fencing: every dispatching write (a chunk's start, a chunk's counts, the requeue of a
takeover) first reads the lease row ``FOR SHARE`` in its own transaction and goes on only if
the epoch is still this replica's. A takeover's UPDATE of that row waits for such a
transaction to commit, and one that starts after the takeover sees the new epoch and is
refused (:class:`LostLeadership`): a paused old leader can neither start nor commit a chunk
once a new one took over, and the new one's recovery sees every chunk the old one committed.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert

from qhpc_lab.scheduler.store import Store, leases

log = logging.getLogger("qhpc.scheduler")

LEASE = "dispatcher"

_DB_NOW = sa.cast(sa.func.extract("epoch", sa.func.clock_timestamp()), sa.Float)
"""The database server's clock (Unix seconds): the one clock every replica reads."""


class LostLeadership(RuntimeError):
    """A dispatching write of a replica whose lease another replica took (or that lapsed)."""


def replica_name() -> str:
    """This process, as the lease row and ``/health`` name it: host and pid."""
    return f"{socket.gethostname()}:{os.getpid()}"


class Lease:
    """The ``dispatcher`` lease row: taken, renewed, given up, and checked inside writes."""

    def __init__(self, engine: sa.Engine, holder: str, ttl_s: float) -> None:
        if engine.dialect.name != "postgresql":
            raise ValueError("HA replicas share a PostgreSQL database (--db postgresql://...)")
        self.engine = engine
        self.holder = holder
        self.ttl_s = ttl_s
        self.epoch: int | None = None
        """The epoch this replica holds the lease under; None while it does not."""
        insert = pg_insert(leases).values(name=LEASE, holder=None, epoch=0, expires_at=0.0)
        with engine.begin() as conn:
            conn.execute(insert.on_conflict_do_nothing())

    def acquire(self) -> int | None:
        """Take the lease if it lapsed (or is ours): the new epoch, else None."""
        with self.engine.begin() as conn:
            epoch = conn.execute(
                leases.update()
                .where(leases.c.name == LEASE, leases.c.expires_at < _DB_NOW)
                .values(
                    holder=self.holder,
                    epoch=leases.c.epoch + 1,
                    expires_at=_DB_NOW + self.ttl_s,
                    renewed_at=_DB_NOW,
                )
                .returning(leases.c.epoch)
            ).scalar()
        self.epoch = epoch
        return epoch

    def renew(self) -> bool:
        """Extend the lease held under our epoch; False (and no epoch) when it was taken."""
        if self.epoch is None:
            return False
        with self.engine.begin() as conn:
            renewed = conn.execute(
                leases.update()
                .where(leases.c.name == LEASE, leases.c.epoch == self.epoch)
                .values(expires_at=_DB_NOW + self.ttl_s, renewed_at=_DB_NOW)
            ).rowcount
        if not renewed:
            self.epoch = None
        return bool(renewed)

    def release(self) -> None:
        """Give the lease up now (a clean stop): the next replica need not wait for it to lapse."""
        epoch, self.epoch = self.epoch, None
        if epoch is None:
            return
        with self.engine.begin() as conn:
            conn.execute(
                leases.update()
                .where(leases.c.name == LEASE, leases.c.epoch == epoch)
                .values(expires_at=0.0)
            )

    def check(self, conn: sa.Connection) -> None:
        """The fence (:attr:`Store.fence`): within ``conn``'s transaction, the lease row is
        still at our epoch, and stays so until it commits."""
        held = conn.execute(
            sa.select(leases.c.epoch).where(leases.c.name == LEASE).with_for_update(read=True)
        ).scalar()
        if self.epoch is None or held != self.epoch:
            raise LostLeadership(
                f"the dispatch lease is at epoch {held}, not ours ({self.epoch}): "
                "another replica dispatches"
            )

    def state(self) -> dict[str, Any]:
        """The lease row as it is now (tests and ``/health``'s callers)."""
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(leases, _DB_NOW.label("now")).where(leases.c.name == LEASE)
            ).one()
        return dict(row._mapping)


def lease_engine(store_engine: sa.Engine, ttl_s: float) -> sa.Engine:
    """The lease's own connection to the store's database: API load that takes every pooled
    connection of the store cannot delay a renewal, and a statement that hangs past the
    lease's time fails (the replica then deposes itself rather than wait)."""
    timeout_ms = max(int(ttl_s * 1000), 100)
    engine = sa.create_engine(
        store_engine.url,
        pool_size=1,
        max_overflow=0,
        pool_pre_ping=True,
        connect_args={"connect_timeout": max(int(ttl_s), 1)},
    )

    @sa.event.listens_for(engine, "connect")
    def _statement_timeout(dbapi_connection: Any, _record: Any) -> None:
        with dbapi_connection.cursor() as cursor:
            cursor.execute(f"SET statement_timeout = {timeout_ms}")
        dbapi_connection.commit()

    return engine


class Leadership:
    """The election loop of one replica: take the lease when it lapses, renew it while held,
    and say when this replica starts and stops leading.

    The loop is a thread of its own with its own database connection (:func:`lease_engine`),
    so that no load on the API — a starved event loop, busy store threads, every pooled
    connection taken — delays a renewal. ``elected`` and ``deposed`` are the scheduler's, run
    on its event loop: start the dispatcher (after recovering the chunks the old leader left
    running), and stop it. A replica that cannot renew for ``ttl_s`` (the database
    unreachable) deposes itself: another may hold the lease by then. A lost lease clears this
    replica's epoch at once, so the fence refuses its dispatching writes before its event
    loop hears of it.
    """

    def __init__(
        self, store: Store, renew_s: float, ttl_s: float, holder: str | None = None
    ) -> None:
        self.lease = Lease(lease_engine(store.engine, ttl_s), holder or replica_name(), ttl_s)
        store.fence = self.lease.check
        self.renew_s = renew_s
        self.ttl_s = ttl_s
        self.leading = False
        self.since: float | None = None
        """When this replica last started leading (Unix time)."""
        self._renewed = 0.0
        self._lock = threading.Lock()
        """Held by a lease step and by :meth:`release`: one of them at a time changes it."""

    @property
    def epoch(self) -> int | None:
        return self.lease.epoch

    async def run_forever(
        self, elected: Callable[[int], None], deposed: Callable[[str], Awaitable[None]]
    ) -> None:
        """Run the lease thread until cancelled."""
        loop = asyncio.get_running_loop()
        stopping = threading.Event()
        thread = threading.Thread(
            target=self._renew_forever,
            args=(loop, elected, deposed, stopping),
            name="qhpc-lease",
            daemon=True,
        )
        thread.start()
        try:
            await loop.create_future()  # until cancelled
        finally:
            stopping.set()
            await asyncio.to_thread(thread.join, self.ttl_s + self.renew_s)

    def _renew_forever(
        self,
        loop: asyncio.AbstractEventLoop,
        elected: Callable[[int], None],
        deposed: Callable[[str], Awaitable[None]],
        stopping: threading.Event,
    ) -> None:
        while not stopping.is_set():
            started = time.monotonic()
            try:
                with self._lock:
                    epoch, why = self._step()
            except Exception as err:  # the database away: held only while it had time left
                log.debug("lease step failed: %s", err)
                epoch, why = None, None
                with self._lock:
                    if self.leading and time.monotonic() - self._renewed > self.ttl_s:
                        why = f"lease not renewed for {self.ttl_s:g} s: {err}"
                        self._give_up(why)
            if epoch is not None:
                loop.call_soon_threadsafe(elected, epoch)
            elif why is not None:
                self._wait(asyncio.run_coroutine_threadsafe(deposed(why), loop), stopping)
            stopping.wait(max(self.renew_s - (time.monotonic() - started), 0.0))

    def _step(self) -> tuple[int | None, str | None]:
        """Renew the lease held, or take a lapsed one: (the epoch taken, None), or (None, why
        this replica stops leading), or (None, None) when nothing changed."""
        if self.leading:
            if self.lease.renew():
                self._renewed = time.monotonic()
                return None, None
            why = "another replica took the lease"
            self._give_up(why)
            return None, why
        epoch = self.lease.acquire()
        if epoch is None:
            return None, None
        self._renewed = time.monotonic()
        self.leading, self.since = True, time.time()
        log.warning("this replica (%s) dispatches now, epoch %d", self.lease.holder, epoch)
        return epoch, None

    def _give_up(self, why: str) -> None:
        log.warning("this replica (%s) stops dispatching: %s", self.lease.holder, why)
        self.leading, self.lease.epoch = False, None

    @staticmethod
    def _wait(future: concurrent.futures.Future[None], stopping: threading.Event) -> None:
        """Until the event loop has stopped the dispatcher (no election meanwhile: the next
        one's dispatcher must not be the one stopped), or the daemon stops."""
        while not stopping.is_set():
            try:
                future.result(timeout=0.5)
                return
            except concurrent.futures.TimeoutError:
                continue
            except Exception as err:
                log.warning("stopping the dispatcher failed: %s", err)
                return

    def _release(self) -> None:
        with self._lock:
            self.leading = False
            self.lease.release()

    async def release(self) -> None:
        """Give the lease up (the daemon stops, or its dispatching failed); a database already
        gone is not waited for (the lease then lapses)."""
        self.leading = False
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.to_thread(self._release), 2.0)

    def close(self) -> None:
        """The lease's own connection closed (after :meth:`release`)."""
        self.lease.engine.dispose()
