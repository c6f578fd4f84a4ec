"""The connection to the database: SQLite (WAL) or PostgreSQL, its pool, and its locks."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from sqlalchemy.pool import StaticPool

POOL_SIZE = 4
"""Connections, and the scheduler's store threads: reads go on while one write waits on a lock."""
BUSY_TIMEOUT_S = 5.0
"""How long a SQLite write waits for the database lock before it fails (and is retried)."""

SCHEMA_LOCK = 0x71687064
"""The PostgreSQL advisory lock key of :func:`schema_lock`."""

MEMORY_URLS = ("sqlite://", "sqlite:///:memory:")
"""URLs of one in-memory SQLite database (shared by the threads of one process)."""


def create_engine(url: str) -> tuple[sa.Engine, int]:
    """An engine for ``url`` and how many connections its pool holds (the store's threads)."""
    if url in MEMORY_URLS:
        engine = sa.create_engine(
            url, poolclass=StaticPool, connect_args={"check_same_thread": False}
        )
        return _with_pragmas(engine), 1
    if url.startswith("sqlite"):
        engine = sa.create_engine(
            url,
            pool_size=POOL_SIZE,
            max_overflow=0,
            connect_args={"check_same_thread": False},
        )
        return _with_pragmas(engine), POOL_SIZE
    return sa.create_engine(url, pool_size=POOL_SIZE, max_overflow=2, pool_pre_ping=True), POOL_SIZE


def _with_pragmas(engine: sa.Engine) -> sa.Engine:
    sa.event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    # WAL + NORMAL survives a process crash (the scheduler killed); only power loss may drop
    # the last transactions. Sites that need more set QHPC_DB to PostgreSQL.
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
    cursor.close()


class NoLock:
    """PostgreSQL takes concurrent writers itself."""

    def acquire(self, timeout: float = -1) -> bool:
        return True

    def release(self) -> None:
        pass


def writer_lock(engine: sa.Engine) -> threading.Lock | NoLock:
    """What this process's writers queue on: SQLite lets one writer in at a time."""
    return threading.Lock() if engine.dialect.name == "sqlite" else NoLock()


@contextlib.contextmanager
def schema_lock(engine: sa.Engine) -> Iterator[None]:
    """Held while tables are created or altered: on PostgreSQL a session advisory lock, so
    that replicas starting together on a new database do not race to create them."""
    if engine.dialect.name != "postgresql":
        yield
        return
    with engine.connect() as conn:
        conn.execute(sa.select(sa.func.pg_advisory_lock(SCHEMA_LOCK)))
        try:
            yield
        finally:
            conn.execute(sa.select(sa.func.pg_advisory_unlock(SCHEMA_LOCK)))
            conn.commit()
