"""The store, off the event loop, and the dispatcher's health through store outages.

Store calls run in a small thread pool, never on the event loop, so a locked or restarting
database slows only what needs it. An API call that needs the store during an outage is
refused 503 with ``Retry-After`` (:meth:`StoreGateway.db`); a call the dispatcher cannot do
without is retried with back-off until the store is back (:meth:`StoreGateway.retrying`), and
meanwhile :attr:`StoreGateway.health` says why dispatch is stalled, which ``/health``,
``/device``, the metrics and the log all report.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

import sqlalchemy.exc
from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential

from qhpc_lab.scheduler.metrics import Metrics
from qhpc_lab.scheduler.refusal import SchedulerError
from qhpc_lab.scheduler.store import Store
from qhpc_lab.scheduler.views import DispatcherHealth

log = logging.getLogger("qhpc.scheduler")

P = ParamSpec("P")
T = TypeVar("T")

STORE_DOWN = (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError)
"""Errors that mean the database is unreachable, locked or full: worth waiting out, unlike a
programming error or a constraint violation."""
STORE_RETRY_AFTER_S = 5
"""What a 503 during a store outage tells clients to wait before trying again."""
STORE_UNAVAILABLE = "store_unavailable"
DISPATCHER_ERROR = "dispatcher_error"
"""The two reasons a dispatcher is stalled (``DispatcherHealth.reason``)."""
HEALTHY = DispatcherHealth()


class StoreGateway:
    """Every store call of the daemon passes here; it keeps the dispatcher's health."""

    def __init__(
        self,
        store: Store,
        metrics: Metrics,
        clock: Callable[[], float],
        on_health_change: Callable[[], None],
    ) -> None:
        self.store = store
        self._metrics = metrics
        self._clock = clock
        self._on_health_change = on_health_change
        """Called when the health changes (the device event shows it)."""
        self.health = HEALTHY
        self._executor = ThreadPoolExecutor(store.pool_size, thread_name_prefix="qhpc-store")

    async def db(self, call: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """A store call in the store's thread pool; an outage becomes a 503 for the API."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, lambda: call(*args, **kwargs))
        except STORE_DOWN as err:
            self._metrics.store_error()
            raise SchedulerError(
                503,
                f"the scheduler's database is unavailable ({first_line(err)}); try again",
                "store",
                retry_after=STORE_RETRY_AFTER_S,
            ) from None

    async def retrying(self, call: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """A store call the dispatcher cannot do without: retried until the store is back.

        While it fails the dispatcher is marked stalled (health, metric, one log line per
        outage); the first success marks it healthy again.
        """
        loop = asyncio.get_running_loop()
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(STORE_DOWN),
            wait=wait_exponential(multiplier=0.05, max=2.0),
            before_sleep=lambda state: self.stalled(
                STORE_UNAVAILABLE, first_line(state.outcome and state.outcome.exception())
            ),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                result = await loop.run_in_executor(self._executor, lambda: call(*args, **kwargs))
        self.recovered(STORE_UNAVAILABLE)
        return result

    def stalled(self, reason: str, detail: str) -> None:
        """The dispatcher cannot progress: said once per outage (log, metric, device event)."""
        if reason == STORE_UNAVAILABLE:
            self._metrics.store_error()
        if self.health.ok or self.health.reason != reason:
            log.error("dispatcher stalled (%s): %s", reason, detail)
            self.health = DispatcherHealth(False, reason, detail, self._clock())
            self._metrics.dispatcher_stalled(reason)
            self._on_health_change()
        else:
            self.health = dataclasses.replace(self.health, detail=detail)

    def recovered(self, reason: str | None = None) -> None:
        """The dispatcher progresses again; with ``reason``, only if that was why it stalled."""
        if self.health.ok or (reason is not None and self.health.reason != reason):
            return
        stalled = self._clock() - (self.health.since or self._clock())
        log.warning("dispatcher resumed after %.1f s (%s)", stalled, self.health.reason)
        self.health = HEALTHY
        self._metrics.dispatcher_running()
        self._on_health_change()

    def forget_stall(self) -> None:
        """A deposed replica's health is its API's: nothing of it is stalled."""
        self.health = HEALTHY

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def first_line(err: BaseException | None) -> str:
    """A database error's first line: SQLAlchemy appends the statement and a help URL."""
    text = str(getattr(err, "orig", None) or err)
    return text.strip().splitlines()[0] if text.strip() else type(err).__name__
