"""The job-event journal HA replicas share: one row per job change, in PostgreSQL.

Every write that changes a job appends to ``job_events`` in its own transaction (the store's
:attr:`~qhpc_lab.scheduler.store.Store.journal` hook) and sends a ``NOTIFY``, which PostgreSQL
delivers once that transaction commits. Each replica LISTENs (:class:`Listener`, a thread with
its own connection), reads what is new and publishes it to its event-stream subscribers. The
journal's ids are the event stream's ids on every replica, so a client that reconnects to
another replica with ``Last-Event-ID`` is replayed what it missed from the journal.

Journal writers take a transaction-level advisory lock before they append: ids are then
handed out in commit order, and "everything after id N" never skips a later-committing
smaller id.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from types import SimpleNamespace

import psycopg
import sqlalchemy as sa

from qhpc_lab.scheduler.store import JobChange, JobRow, Store, job_events, jobs

log = logging.getLogger("qhpc.scheduler")

CHANNEL = "qhpc_job_events"
_APPEND_LOCK = 0x71687063
"""The advisory lock key journal writers serialize on ("qhpc")."""
LISTEN_POLL_S = 0.5
"""How often the listener thread looks up from waiting (to stop, or to reconnect)."""


class Journal:
    """``job_events`` on the store's database: appended to by its writes, read by replicas."""

    def __init__(self, store: Store) -> None:
        self.engine = store.engine
        store.journal = self.record
        store.announce = self.announce

    def record(self, conn: sa.Connection, changes: list[JobChange]) -> None:
        """Append ``changes`` within ``conn``'s transaction and announce them at its commit."""
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_APPEND_LOCK)))
        now = time.time()
        conn.execute(
            job_events.insert(),
            [dict(job_id=c.id, status=c.status, shots_done=c.shots_done, at=now) for c in changes],
        )
        conn.execute(sa.select(sa.func.pg_notify(CHANNEL, "")))

    @staticmethod
    def announce(conn: sa.Connection) -> None:
        """Wake every replica's follower at ``conn``'s commit: the shared state changed."""
        conn.execute(sa.select(sa.func.pg_notify(CHANNEL, "")))

    def last_id(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(
                sa.select(sa.func.coalesce(sa.func.max(job_events.c.id), 0))
            ).scalar_one()

    def after(self, last_id: int, limit: int) -> tuple[list[tuple[int, JobRow]], bool]:
        """The jobs changed after event ``last_id``, each once as it is now, under its latest
        event's id, in id order, from at most ``limit`` events; and whether more followed."""
        query = (
            sa.select(job_events.c.id.label("event_id"), *jobs.c)
            .join(jobs, jobs.c.id == job_events.c.job_id)
            .where(job_events.c.id > last_id)
            .order_by(job_events.c.id)
            .limit(limit + 1)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        latest: dict[int, tuple[int, JobRow]] = {}
        for row in rows:
            data = dict(row._mapping)
            event_id = data.pop("event_id")
            latest.pop(data["id"], None)  # re-inserted: dict order becomes the latest event's
            latest[data["id"]] = (event_id, JobRow.from_row(SimpleNamespace(_mapping=data)))
        return list(latest.values()), len(rows) > limit

    def history(self, job_id: int) -> list[JobChange]:
        """Every change journaled for one job, oldest first (the failover test audits it)."""
        query = sa.select(job_events).where(job_events.c.job_id == job_id).order_by(job_events.c.id)
        with self.engine.connect() as conn:
            return [JobChange(r.job_id, r.status, r.shots_done) for r in conn.execute(query)]

    def prune(self, keep: int) -> int:
        """Drop all but the last ``keep`` events (a reconnecting client further behind resets)."""
        with self.engine.begin() as conn:
            newest = conn.execute(sa.select(sa.func.max(job_events.c.id))).scalar()
            if newest is None:
                return 0
            return conn.execute(
                job_events.delete().where(job_events.c.id <= newest - keep)
            ).rowcount


class Listener:
    """A thread LISTENing on the journal's channel with its own connection; ``notified`` is
    called (from the thread) on each announcement and after each reconnection (what was
    announced while the connection was down is then read too)."""

    def __init__(self, store: Store, notified: Callable[[], None]) -> None:
        url = store.engine.url.set(drivername="postgresql")
        self._conninfo = url.render_as_string(hide_password=False)
        self._notified = notified
        self._stopping = threading.Event()
        self._thread = threading.Thread(
            target=self._listen_forever, name="qhpc-listen", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(LISTEN_POLL_S * 4)

    def _listen_forever(self) -> None:
        while not self._stopping.is_set():
            try:
                with psycopg.connect(self._conninfo, autocommit=True, connect_timeout=2) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self._notified()
                    while not self._stopping.is_set():
                        for _ in conn.notifies(timeout=LISTEN_POLL_S, stop_after=1):
                            self._notified()
            except psycopg.Error as err:
                log.debug("journal listener reconnects: %s", err)
                self._stopping.wait(LISTEN_POLL_S)
