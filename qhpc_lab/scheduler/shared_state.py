"""What HA replicas agree on: sessions and their QPU slots, maintenance, drain, policy and
calibration requests (docs/operations.md, "High availability").

All of it lives in the shared store, written by whichever replica the operator or a batch
hook reached, with a new ``shared_state`` fact in the same transaction (and a NOTIFY at its
commit). Each replica's journal follower reads that fact on every wake-up: when it changed,
:meth:`SharedState.learn` reloads the state, so every replica answers the same and the
dispatching one acts on it. Decisions that must not race (a session's slots against the
device's, a submission in a session being revoked) are taken inside the store's transaction.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable

from qhpc_lab.scheduler.device_state import DeviceStatus
from qhpc_lab.scheduler.gateway import StoreGateway
from qhpc_lab.scheduler.queue_state import QueueState
from qhpc_lab.scheduler.sessions import Sessions
from qhpc_lab.scheduler.store import SHARED_STATE

log = logging.getLogger("qhpc.scheduler")

CALIBRATION_REQUEST = "calibration_requested"
"""The fact an operator's calibration request writes (a new token each time)."""
SHARED_FACTS = [SHARED_STATE, "accessible", "message", "draining", "policy", CALIBRATION_REQUEST]


class SharedState:
    """One replica's copy of the shared state, and the requests only the leader acts on."""

    def __init__(
        self,
        gateway: StoreGateway,
        sessions: Sessions,
        device: DeviceStatus,
        queue: QueueState,
        leading: Callable[[], bool],
        calibrate: Callable[[], None],
    ) -> None:
        self._gateway = gateway
        self._sessions = sessions
        self._device = device
        self._queue = queue
        self._leading = leading
        self._calibrate = calibrate
        """Asks the dispatcher for a calibration before its next chunk."""
        self._seen: str | None = None
        """The ``shared_state`` value last learned: None before the first look."""
        self._calibration_seen: str | None = None

    async def learn(self) -> None:
        """Reload the shared state when another write changed it since the last look (the
        first look only notes the calibration request already stored: it was acted on)."""
        facts = await self._gateway.db(self._gateway.store.get_facts, SHARED_FACTS)
        first, seen = self._seen is None, facts.get(SHARED_STATE, "")
        if seen == self._seen:
            return
        self._seen = seen
        await self._sessions.learn_stored()
        self._device.learn(facts)
        self._queue.learn_policy(facts.get("policy"))
        requested = facts.get(CALIBRATION_REQUEST)
        if requested != self._calibration_seen:
            self._calibration_seen = requested
            if not first and self._leading():
                log.info("calibration requested through another replica")
                self._calibrate()

    async def request_calibration(self) -> None:
        """An operator's request, stored for the dispatching replica (this one, or another)."""
        token = uuid.uuid4().hex
        self._calibration_seen = token
        await self._gateway.db(self._gateway.store.set_shared_facts, {CALIBRATION_REQUEST: token})
        if self._leading():
            self._calibrate()
