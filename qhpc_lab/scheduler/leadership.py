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
import contextlib
import logging
import os
import socket
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


class Leadership:
    """The election loop of one replica: take the lease when it lapses, renew it while held,
    and say when this replica starts and stops leading.

    ``elected`` and ``deposed`` are the scheduler's: start the dispatcher (after recovering
    the chunks the old leader left running), and stop it. A replica that cannot renew for
    ``ttl_s`` (the database unreachable) deposes itself: another may hold the lease by then.
    """

    def __init__(
        self,
        store: Store,
        run: Callable[[Callable[[], Any]], Awaitable[Any]],
        renew_s: float,
        ttl_s: float,
        holder: str | None = None,
    ) -> None:
        self.lease = Lease(store.engine, holder or replica_name(), ttl_s)
        store.fence = self.lease.check
        self._run = run
        """Runs a blocking store call off the event loop (the scheduler's store threads)."""
        self.renew_s = renew_s
        self.ttl_s = ttl_s
        self.leading = False
        self.since: float | None = None
        """When this replica last started leading (Unix time)."""
        self._renewed = 0.0

    @property
    def epoch(self) -> int | None:
        return self.lease.epoch

    async def run_forever(
        self, elected: Callable[[int], None], deposed: Callable[[str], Awaitable[None]]
    ) -> None:
        while True:
            try:
                await self._step(elected, deposed)
            except asyncio.CancelledError:
                raise
            except Exception as err:  # the database away: held only while it had time left
                if self.leading and time.monotonic() - self._renewed > self.ttl_s:
                    await self._depose(deposed, f"lease not renewed for {self.ttl_s:g} s: {err}")
                log.debug("lease step failed: %s", err)
            await asyncio.sleep(self.renew_s)

    async def _step(
        self, elected: Callable[[int], None], deposed: Callable[[str], Awaitable[None]]
    ) -> None:
        if self.leading:
            if await self._run(self.lease.renew):
                self._renewed = time.monotonic()
            else:
                await self._depose(deposed, "another replica took the lease")
            return
        epoch = await self._run(self.lease.acquire)
        if epoch is not None:
            self._renewed = time.monotonic()
            self.leading, self.since = True, time.time()
            log.warning("this replica (%s) dispatches now, epoch %d", self.lease.holder, epoch)
            elected(epoch)

    async def _depose(self, deposed: Callable[[str], Awaitable[None]], why: str) -> None:
        log.warning("this replica (%s) stops dispatching: %s", self.lease.holder, why)
        self.leading, self.lease.epoch = False, None
        await deposed(why)

    async def release(self) -> None:
        """Give the lease up (the daemon stops, or its dispatching failed); a database already
        gone is not waited for (the lease then lapses)."""
        self.leading = False
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._run(self.lease.release), 2.0)
