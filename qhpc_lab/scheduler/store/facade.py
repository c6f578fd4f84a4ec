"""The store: every repository over one database, brought to this release's schema."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

from qhpc_lab.scheduler.store import engine, migrate
from qhpc_lab.scheduler.store.repositories.accounting import AccountingRepository
from qhpc_lab.scheduler.store.repositories.credentials import CredentialRepository
from qhpc_lab.scheduler.store.repositories.facts import FactRepository
from qhpc_lab.scheduler.store.repositories.jobs import JobRepository
from qhpc_lab.scheduler.store.repositories.quotas import QuotaRepository
from qhpc_lab.scheduler.store.repositories.reservations import ReservationRepository
from qhpc_lab.scheduler.store.repositories.sessions import SessionRepository
from qhpc_lab.scheduler.store.repositories.sweeps import SweepRepository


class Store(
    SessionRepository,
    ReservationRepository,
    JobRepository,
    AccountingRepository,
    QuotaRepository,
    FactRepository,
    CredentialRepository,
    SweepRepository,
):
    """Durable state of the scheduler: sessions, jobs and device facts, in SQLite (WAL) or
    PostgreSQL. Every method is one short transaction, called from a worker thread (the
    scheduler keeps them off its event loop).

    Opening it migrates the database to this release's schema (:func:`migrate.upgrade`):
    a new one, or one an older release made.
    """

    def __init__(self, url: str, clock: Callable[[], float] = time.time) -> None:
        created, self.pool_size = engine.create_engine(url)
        super().__init__(created, clock)
        try:
            migrate.upgrade(self.engine)
        except BaseException:
            self.engine.dispose()
            raise

    def schema_lock(self) -> contextlib.AbstractContextManager[None]:
        """Held while tables are created or altered (:func:`engine.schema_lock`)."""
        return engine.schema_lock(self.engine)

    def close(self) -> None:
        self.engine.dispose()
