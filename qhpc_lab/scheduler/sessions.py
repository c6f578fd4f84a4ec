"""Sessions: one per Slurm job, opened by its prolog and revoked by its epilog or by their
deadlines (idle and lifetime, as Warden's reaper does). The open ones are held in memory, so
a submission naming one asks for no database read, and their QPU slots weigh in the queue."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable

from qhpc_lab.scheduler.config import SchedulerConfig
from qhpc_lab.scheduler.gateway import StoreGateway
from qhpc_lab.scheduler.job_book import JobBook
from qhpc_lab.scheduler.limits import AdmissionRefused
from qhpc_lab.scheduler.queue_state import QueueState
from qhpc_lab.scheduler.refusal import SchedulerError
from qhpc_lab.scheduler.store import SessionRow
from qhpc_lab.scheduler.views import SlotUse

log = logging.getLogger("qhpc.scheduler")


class Sessions:
    """The open sessions, their QPU slots and their deadlines."""

    def __init__(
        self,
        config: SchedulerConfig,
        gateway: StoreGateway,
        queue: QueueState,
        jobs: JobBook,
        clock: Callable[[], float],
    ) -> None:
        self._config = config
        self._gateway = gateway
        self._store = gateway.store
        self._queue = queue
        self._jobs = jobs
        self._clock = clock
        self._open: dict[str, SessionRow] = {}
        """Open sessions: every submission names one on HPC, and asks for no database read."""
        self._opening = asyncio.Lock()
        """Held while a session is checked against the free QPU slots and stored, and while
        expired sessions are revoked."""

    @property
    def open_count(self) -> int:
        return len(self._queue.ranked.slots)

    @property
    def slots_used(self) -> int:
        """QPU slots the open sessions hold."""
        return sum(self._queue.ranked.slots.values())

    def slot_use(self) -> SlotUse:
        return SlotUse(self._config.qpu_slots_total, self.slots_used)

    def held(self, session: SessionRow) -> None:
        """``session`` is open (loaded at start, or opened on another replica)."""
        self._open[session.id] = session
        self._queue.ranked.set_slots(session.id, session.qpu_slots)

    def slurm_account(self, session_id: str | None) -> str | None:
        """The Slurm account of an open session (who a reservation can be for)."""
        session = self._open.get(session_id) if session_id else None
        return session.slurm_account if session else None

    async def load(self) -> None:
        """The open sessions from the store."""
        for session in await self._gateway.retrying(self._store.list_sessions, True):
            self.held(session)

    async def learn(self, session_ids: set[str]) -> None:
        """Sessions opened on another replica: their QPU slots weigh in this one's queue."""
        for session_id in session_ids - set(self._queue.ranked.slots):
            session = await self._gateway.db(self._store.get_session, session_id)
            if session is not None and session.active:
                self.held(session)

    async def open(
        self,
        user_id: str,
        slurm_job_id: str | None,
        qpu_slots: int,
        slurm_account: str | None = None,
    ) -> SessionRow:
        """Open a session, or return the open one of the same Slurm job (a prolog's retry);
        409 when that one holds other slots, or when the slots asked for are not free."""
        if qpu_slots < 1:
            raise SchedulerError(422, "qpu_slots must be at least 1", "qpu_slots")
        async with self._opening:
            await self.expire()  # slots of expired sessions are free for this one
            now = self._clock()
            try:
                session = await self._gateway.db(
                    self._store.create_session,
                    user_id,
                    slurm_job_id,
                    qpu_slots,
                    now,
                    *self._deadlines(now),
                    slurm_account,
                    self._config.qpu_slots_total,
                )
            except AdmissionRefused as refused:  # the slots, counted in the store
                raise SchedulerError(refused.status, str(refused), refused.rule) from None
            self.held(session)
        return session

    def _deadlines(self, now: float) -> tuple[float | None, float | None]:
        """A session's idle and lifetime deadlines from ``now`` (None: that one is off)."""
        idle, lifetime = self._config.session_idle_timeout_s, self._config.session_max_lifetime_s
        return (now + idle if idle else None), (now + lifetime if lifetime else None)

    async def used(self, session: SessionRow) -> None:
        """A job was submitted in ``session``: its idle deadline starts again. Stored only
        when it moves by over 1 % of the timeout, so a sweep of submissions writes it once."""
        idle_expires_at = self._deadlines(self._clock())[0]
        if idle_expires_at is None or session.id not in self._open:
            return
        moved = idle_expires_at - (session.idle_expires_at or 0.0)
        if moved <= self._config.session_idle_timeout_s / 100:
            return
        await self._gateway.db(self._store.extend_idle_deadline, session.id, idle_expires_at)
        self._open[session.id] = dataclasses.replace(session, idle_expires_at=idle_expires_at)

    async def sync(self) -> None:
        """HA replicas: the open sessions as stored (opened, revoked or used on any replica),
        and only they, hold QPU slots in this one's queue."""
        stored = await self._gateway.db(self._store.list_sessions, True)
        for session_id in set(self._open) - {session.id for session in stored}:
            self._open.pop(session_id, None)
            self._queue.ranked.drop_slots(session_id)
        for session in stored:
            self.held(session)

    async def learn_stored(self) -> None:
        """:meth:`sync`, not while a session is being opened here (it would be read before
        its commit, and dropped until the next look)."""
        async with self._opening:
            await self.sync()

    async def expire(self) -> int:
        """Revoke the open sessions past a deadline, as Warden's reaper does: past its
        lifetime always (reason ``max_lifetime_expired``), past its idle deadline only once
        none of its jobs is active (``idle_timeout``). Returns how many were revoked. HA
        replicas decide on the sessions as stored (another replica may have used one)."""
        if self._config.ha:
            await self.sync()
        now, expired = self._clock(), 0
        for session in list(self._open.values()):
            if session.expires_at is not None and session.expires_at <= now:
                reason = "max_lifetime_expired"
            elif (
                session.idle_expires_at is not None
                and session.idle_expires_at <= now
                and not self._queue.queued(f"session:{session.id}")[0]
            ):
                reason = "idle_timeout"
            else:
                continue
            log.info("session %s revoked: %s", session.id, reason)
            await self.revoke(session.id, reason)
            expired += 1
        return expired

    async def reap_forever(self, leading: Callable[[], bool]) -> None:
        """Look for expired sessions every ``session_reaper_interval_s`` while ``leading``
        (one replica reaps); a store outage only delays the next look."""
        while True:
            try:
                if leading():
                    async with self._opening:  # not while a session is being opened
                        await self.expire()
            except SchedulerError as err:
                log.warning("session expiry check failed: %s", err)
            await asyncio.sleep(self._config.session_reaper_interval_s)

    async def get(self, session_id: str) -> SessionRow | None:
        """A session; HA replicas read the store (revoked on another replica is revoked)."""
        if session_id in self._open and not self._config.ha:
            return self._open[session_id]
        return await self._gateway.db(self._store.get_session, session_id)

    async def find(
        self, active: bool | None, user_id: str | None = None, slurm_job_id: str | None = None
    ) -> list[SessionRow]:
        """Sessions, oldest first, filtered as Warden filters them."""
        return await self._gateway.db(self._store.list_sessions, active, user_id, slurm_job_id)

    async def revoke(self, session_id: str, reason: str) -> SessionRow:
        """Revoke a session; its queued jobs are canceled with ``reason``."""
        if await self.get(session_id) is None:
            raise SchedulerError(404, f"session {session_id} not found")
        session, canceled = await self._gateway.db(
            self._store.revoke_session, session_id, reason, self._clock()
        )
        self._open.pop(session_id, None)
        self._queue.ranked.drop_slots(session_id)
        await self._jobs.canceled(canceled)
        return session

    async def check(self, session_id: str | None, user_id: str, admin: bool) -> SessionRow | None:
        """The session a submission names, when its caller may submit in it (403 else)."""
        if session_id is None:
            if self._config.sessions_required:
                raise SchedulerError(
                    403,
                    "an X-Warden-Session header is required (the Slurm job's session): "
                    "submit from inside a Slurm job holding a QPU share (sbatch -L qpu:1, or a "
                    "JupyterLab started in one), whose QRMI variables carry it",
                    "session",
                )
            return None
        session = await self.get(session_id)
        if session is None:
            raise SchedulerError(403, f"session {session_id} does not exist", "session")
        if session.user_id != user_id and not admin:
            raise SchedulerError(403, f"session {session_id} belongs to another user", "session")
        if not session.active:
            raise SchedulerError(
                403, f"session {session_id} was revoked ({session.revoke_reason})", "session"
            )
        return session
