"""The operator's reports: Warden's accounting (per user, session and job, for what ended in a
window) and usage per submission (``/admin/accounting``), as the store sums them."""

from __future__ import annotations

from typing import Any

from qhpc_lab.scheduler.gateway import StoreGateway
from qhpc_lab.scheduler.store import AccountingQuery

__all__ = ["AccountingQuery", "Reports"]


class Reports:
    """Read-only queries over what ended, each one store call."""

    def __init__(self, gateway: StoreGateway) -> None:
        self._gateway = gateway
        self._store = gateway.store

    async def users(
        self, query: AccountingQuery
    ) -> tuple[int, list[dict[str, Any]], list[dict[str, Any]]]:
        """How many users match, their sessions' summaries and their jobs per status."""
        return await self._gateway.db(self._store.accounting_users, query)

    async def sessions(self, query: AccountingQuery) -> tuple[int, list[dict[str, Any]]]:
        return await self._gateway.db(self._store.accounting_sessions, query)

    async def jobs(self, query: AccountingQuery) -> tuple[int, list[dict[str, Any]]]:
        return await self._gateway.db(self._store.accounting_jobs, query)

    async def usage(
        self, since: float | None, until: float | None, by: str
    ) -> list[dict[str, Any]]:
        """Shots, QPU-seconds and waits per user or Slurm job, for jobs submitted in
        [since, until)."""
        return await self._gateway.db(self._store.accounting, since, until, by)
