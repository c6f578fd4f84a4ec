"""The device as the daemon knows it: the driver's state and timing, the operator's
maintenance and drain, the loop the QPU is held for, and the reservations (docs/policy.md
rules 8 and 9). What the operator sets is kept in the store across restarts."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from qhpc_lab.qpu import DeviceProfile, DeviceState, QPUDriver
from qhpc_lab.scheduler import policy
from qhpc_lab.scheduler.gateway import StoreGateway
from qhpc_lab.scheduler.queue_state import QueueState
from qhpc_lab.scheduler.refusal import SchedulerError
from qhpc_lab.scheduler.reservations import Reservation, next_reservation
from qhpc_lab.scheduler.store import ReservationOverlap, ReservationRow
from qhpc_lab.scheduler.timeline import Timelines
from qhpc_lab.scheduler.views import DeviceSnapshot, DispatcherHealth, Holds
from qhpc_lab.wire.times import iso_time

log = logging.getLogger("qhpc.scheduler")


class DeviceStatus:
    """The device, maintenance, drains, loop holds and reservations."""

    def __init__(
        self,
        driver: QPUDriver,
        gateway: StoreGateway,
        queue: QueueState,
        timelines: Timelines,
        clock: Callable[[], float],
        on_change: Callable[[], None],
    ) -> None:
        self._driver = driver
        self._gateway = gateway
        self._store = gateway.store
        self._queue = queue
        self._timelines = timelines
        self._clock = clock
        self._on_change = on_change
        """Called on every change: the device event, and the dispatcher decides again."""
        accessible = self._store.get_fact("accessible")
        self.accessible: bool = True if accessible is None else bool(accessible)
        self.message: str = self._store.get_fact("message") or ""
        self.draining: bool = bool(self._store.get_fact("draining"))
        self.loop_hold: tuple[policy.LoopPause, float] | None = None
        """The hybrid loop the QPU is held for, and until when (docs/policy.md rule 9)."""
        self._reservations: dict[int, ReservationRow] = {}
        """Reservations not ended when last loaded (ended ones are dropped at the next change)."""
        self._calibration_id = driver.calibration.id
        """The calibration recorded last (a device calibrating by itself makes a new one)."""
        self._down_since: float | None = None

    # -- the device ---------------------------------------------------------------------------

    @property
    def profile(self) -> DeviceProfile:
        """The device's profile: its specs, formats and timing."""
        return self._driver.profile

    @property
    def state(self) -> DeviceState:
        if not self.accessible:
            return DeviceState.MAINTENANCE
        return self._driver.state

    @property
    def shown_message(self) -> str:
        """The operator's message, else what the device says of itself."""
        return self.message or self._driver.notice

    def view(self) -> policy.DeviceView:
        """The device as the policy sees it now."""
        profile = self._driver.profile
        return policy.DeviceView(
            state=self.state,
            calibrated_at=self._driver.calibrated_at,
            calibration_interval_s=profile.calibration_interval_s,
            calibration_duration_s=profile.calibration_duration_s,
            time_per_shot_s=profile.time_per_shot_s,
            chunk_shots=profile.chunk_shots,
            accepting=not self.draining,
            calibrates=profile.calibrates,
            setup_s=profile.job_setup_s,
        )

    def holds(self) -> Holds:
        return Holds(
            down=self._driver.state is DeviceState.OFFLINE,
            maintenance=not self.accessible,
            draining=self.draining,
            loop_until=self.loop_hold[1] if self.loop_hold is not None else None,
        )

    def snapshot(
        self,
        running: policy.QueuedJob | None,
        queue_depth: dict[str, int],
        health: DispatcherHealth,
        cell_job_class: str | None,
    ) -> DeviceSnapshot:
        now, view, profile = self._clock(), self.view(), self._driver.profile
        upcoming = next_reservation(self._queue.ranked.reservations, now)
        return DeviceSnapshot(
            now=now,
            name=profile.spec.name,
            profile=profile.name,
            formats=tuple(profile.formats),
            state=view.state.value,
            accessible=self.accessible,
            draining=self.draining,
            message=self.shown_message,
            calibrated_at=view.calibrated_at,
            calibration_id=self._driver.calibration.id,
            calibrates=profile.calibrates,
            next_calibration_at=policy.calibration_due_at(
                view, now, self._queue.ranked.reservations
            ),
            calibration_duration_s=view.calibration_duration_s,
            time_per_shot_s=view.shot_share_s,
            chunk_shots=view.chunk_shots,
            cell_job_class=cell_job_class,
            queue_depth=queue_depth,
            running=running,
            health=health,
            next_reservation=None if upcoming is None else self._reservations[upcoming.id],
            loop_hold=self.loop_hold,
        )

    def driver_changed(self) -> float | None:
        """The device changed by itself (DOWN, UP, new specs, new timing, a calibration it
        made); returns since when it calibrated when that calibration is not recorded yet."""
        now = self._clock()
        down = self._driver.state is not DeviceState.ONLINE
        if down and self._down_since is None:
            self._down_since = now
        self._timelines.hold("down", down, now)
        calibration = self._driver.calibration
        since = None
        if calibration.id != self._calibration_id:
            since = self._down_since or calibration.calibrated_at
        if not down:
            self._down_since = None
        return since

    def calibration_recorded(self, calibration_id: int) -> None:
        self._calibration_id = calibration_id

    async def set_accessible(self, accessible: bool, message: str | None = None) -> None:
        """Open or close submissions; reopening without a message clears the closing one."""
        if message is None and accessible:
            message = ""
        changes: dict[str, Any] = {"accessible": accessible}
        if message is not None:
            changes["message"] = message
        await self._gateway.db(self._store.set_shared_facts, changes)
        self.learn(changes)

    async def set_draining(self, draining: bool) -> None:
        """Drain: started jobs finish, queued ones wait until resumed."""
        await self._gateway.db(self._store.set_shared_facts, {"draining": draining})
        self.learn({"draining": draining})

    def learn(self, facts: dict[str, Any]) -> None:
        """Maintenance, its message and drain as stored (set here, or on another replica):
        what changed is held from now on, and the dispatcher decides again."""
        accessible = facts.get("accessible", self.accessible)
        accessible = True if accessible is None else bool(accessible)
        message = facts.get("message", self.message) or ""
        draining = bool(facts.get("draining", self.draining))
        if (accessible, message, draining) == (self.accessible, self.message, self.draining):
            return
        now = self._clock()
        if accessible != self.accessible:
            self._timelines.hold("maintenance", not accessible, now)
        if draining != self.draining:
            self._timelines.hold("draining", draining, now)
        self.accessible, self.message, self.draining = accessible, message, draining
        self._on_change()

    # -- reservations ---------------------------------------------------------------------

    async def add_reservation(
        self, owner_kind: str, owner: str, starts_at: float, ends_at: float, created_by: str
    ) -> ReservationRow:
        """Reserve the QPU for ``owner`` over ``[starts_at, ends_at)`` (a start in the past is
        now): 422 unless it ends after it starts and in the future, 409 on an overlap."""
        now = self._clock()
        starts_at = max(starts_at, now)
        if ends_at <= starts_at:
            raise SchedulerError(
                422, "a reservation must end after it starts, and in the future", "ends_at"
            )
        if ends_at - starts_at > policy.MAX_SECONDS:
            raise SchedulerError(422, "a reservation may last ten years at most", "ends_at")
        try:
            row = await self._gateway.db(
                self._store.add_reservation, owner_kind, owner, starts_at, ends_at, created_by
            )
        except ReservationOverlap as err:
            raise SchedulerError(
                409,
                f"the QPU is already reserved for {err.existing.owner_kind} "
                f"{err.existing.owner} from {iso_time(err.existing.starts_at)} to "
                f"{iso_time(err.existing.ends_at)} (reservation {err.existing.id})",
                "reservation_overlap",
            ) from None
        log.info(
            "reservation %d: the QPU for %s %s from %s to %s",
            row.id,
            owner_kind,
            owner,
            iso_time(starts_at),
            iso_time(ends_at),
        )
        self.set_reservations([*self._reservations.values(), row])
        return row

    async def cancel_reservation(self, reservation_id: int) -> ReservationRow:
        """Cancel a reservation; 404 when there is none with this id."""
        row = await self._gateway.db(self._store.cancel_reservation, reservation_id)
        if row is None:
            raise SchedulerError(404, f"reservation {reservation_id} not found")
        log.info("reservation %d canceled", row.id)
        self.set_reservations(r for r in self._reservations.values() if r.id != row.id)
        return row

    async def find_reservations(self, ended: bool) -> list[ReservationRow]:
        """Reservations by start: those not ended yet, or with ``ended`` every one kept."""
        return await self._gateway.db(
            self._store.list_reservations, None if ended else self._clock()
        )

    async def load_reservations(self) -> None:
        """The reservations not ended, from the store (retried through outages)."""
        self.set_reservations(
            await self._gateway.retrying(self._store.list_reservations, self._clock())
        )

    async def learn_reservations(self) -> None:
        """Reservations made or canceled on another replica (rows are only added or
        deleted, so their ids say what changed): the leader plans with them within a poll."""
        reserved = await self._gateway.db(self._store.list_reservations, self._clock())
        if {row.id for row in reserved} != set(self._reservations):
            self.set_reservations(reserved)

    def set_reservations(self, rows: Iterable[ReservationRow]) -> None:
        """Hold these reservations (those not ended) and let the dispatcher plan with them."""
        now = self._clock()
        self._reservations = {row.id: row for row in rows if row.ends_at > now}
        self._queue.ranked.set_reservations(
            Reservation(row.id, row.starts_at, row.ends_at, row.owner_kind, row.owner)
            for row in self._reservations.values()
        )
        self._on_change()
