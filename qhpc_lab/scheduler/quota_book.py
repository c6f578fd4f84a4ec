"""Quotas as the operator sets them and users read them: each with its use in the current
period (the store sums it; :mod:`qhpc_lab.scheduler.quotas` holds the rules)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from qhpc_lab.qpu import DeviceProfile
from qhpc_lab.scheduler.gateway import StoreGateway
from qhpc_lab.scheduler.quotas import InvalidQuota, Quota
from qhpc_lab.scheduler.refusal import SchedulerError

log = logging.getLogger("qhpc.scheduler")


class QuotaBook:
    """The quotas, their changes said in the log."""

    def __init__(
        self,
        gateway: StoreGateway,
        profile: Callable[[], DeviceProfile],
        clock: Callable[[], float],
    ) -> None:
        self._gateway = gateway
        self._store = gateway.store
        self._profile = profile
        self._clock = clock

    async def uses(self, user_id: str | None = None) -> tuple[list[tuple[Quota, float]], float]:
        """Quotas (all, or those that apply to ``user_id``'s jobs: theirs and those of the
        accounts of their open sessions) with their use now, and now."""
        now, time_per_shot_s = self._clock(), self._profile().shot_share_s
        db = self._gateway.db
        accounts = () if user_id is None else await db(self._store.accounts_of, user_id)
        uses = await db(self._store.quota_uses, now, time_per_shot_s, user_id, accounts)
        return uses, now

    async def set(self, fields: dict[str, Any]) -> Quota:
        """Set a quota (replacing the subject's one in the same unit); 422 naming the field
        out of its domain."""
        try:
            quota = Quota(**fields).checked()
        except InvalidQuota as err:
            raise SchedulerError(422, str(err), err.setting) from None
        await self._gateway.db(self._store.set_quota, quota)
        log.info(
            "quota set: %s %s, %g %s per %s",
            quota.kind,
            quota.subject,
            quota.budget,
            quota.unit,
            quota.period,
        )
        return quota

    async def delete(self, kind: str, subject: str, unit: str) -> None:
        """Drop a quota; 404 when there is none."""
        if not await self._gateway.db(self._store.delete_quota, kind, subject, unit):
            raise SchedulerError(404, f"no {unit} quota for {kind} {subject}")
        log.info("quota dropped: %s %s, %s", kind, subject, unit)
