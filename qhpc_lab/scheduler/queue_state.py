"""The queue as the daemon holds it: the ranked queue of active jobs, their programs, which
of them have started, the totals the queue limits read, and where each job stands.

A job's place follows its status, so that two reads a chunk apart agree: a started job
(status RUNNING, between its chunks too, and while a job that overtook it runs) is at
position 0; a waiting one (PENDING) is numbered in the policy's order among the active jobs but
the one holding the device (a started job that another overtook counts ahead of it), 1 being
the next to get the device. The ETA counts every job ahead, started ones included.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from qhpc_lab.programs import Program
from qhpc_lab.scheduler import policy
from qhpc_lab.scheduler.events import EventBus, QueueSnapshot
from qhpc_lab.scheduler.gateway import StoreGateway
from qhpc_lab.scheduler.ranking import RankedQueue
from qhpc_lab.scheduler.refusal import SchedulerError
from qhpc_lab.scheduler.store import JobRow
from qhpc_lab.scheduler.sweeps import SweepPlan, stored_plan
from qhpc_lab.scheduler.views import NOWHERE, Holds, Place, held_by, policy_view
from qhpc_lab.vocabulary import JobStatus

ESTIMATE_ID = -1
"""The id a would-be job is ranked under for ``GET /estimate``: no stored job has it."""
JOB_LOOKUPS_PER_LISTING = 32
"""Active jobs a listing looks up one by one (~20 µs each) before it walks the whole queue once."""
QUEUE_EVENT_INTERVAL_S = 0.05
"""Queue events are coalesced to at most one per this interval (more while the queue is so long
that building one costs over a tenth of it: publishing never takes more than ~10 % of a core)."""
ENDED_KEPT = 10_000
"""HA: ids of jobs this replica saw end, kept so that a journal entry read just before a job
ended does not put it back in the queue."""

Estimates = dict[int, tuple[int, float]]
"""Job id → (rank in the policy's order, 1 = first; seconds until it ends)."""


class QueueState:
    """The active jobs in the policy's order, and their places."""

    def __init__(
        self,
        config: policy.PolicyConfig,
        gateway: StoreGateway,
        device_view: Callable[[], policy.DeviceView],
        holds: Callable[[], Holds],
        on_device: Callable[[], int | None],
        wake: Callable[[], None],
        forget: Callable[[str], None],
        clock: Callable[[], float],
    ) -> None:
        self.ranked = RankedQueue(config)
        """The policy's order; the dispatcher decides over it."""
        self._configured = config
        """The policy as configured, which a stored change applies to."""
        self._gateway = gateway
        self._device_view = device_view
        self._holds = holds
        self._on_device = on_device
        """The job whose chunk is on the device now (the dispatcher's word), if any."""
        self._wake = wake
        self._forget = forget
        """Drop what the driver keeps for a job (a QPU API driver's open QPU job)."""
        self._clock = clock
        self._programs: dict[int, Program] = {}
        self._sweeps: dict[int, SweepPlan | None] = {}
        """Sweeps' sets (None until read back from the store: a job queued at a restart)."""
        self._sets_run: dict[int, int] = {}
        """The set each sweep's last chunk ran: the driver forgets the set's program after it."""
        self._queued_jobs: Counter[str] = Counter()
        self._queued_shots: Counter[str] = Counter()
        self._started: set[int] = set()
        """Jobs whose status is RUNNING in the store: the dispatcher's next chunks of them need
        no ``mark_running`` write (only recovery's requeue makes a job PENDING again)."""
        self._ended: collections.deque[int] = collections.deque(maxlen=ENDED_KEPT)
        self.dirty = asyncio.Event()
        """Set on every change: the coalesced ``queue`` event is due."""

    # -- what is queued ------------------------------------------------------------------------

    @property
    def policy(self) -> policy.PolicyConfig:
        return self.ranked.config

    def get(self, job_id: int) -> policy.QueuedJob | None:
        return self.ranked.get(job_id)

    def __contains__(self, job_id: object) -> bool:
        return job_id in self.ranked

    def jobs(self) -> list[policy.QueuedJob]:
        return list(self.ranked.jobs())

    async def work(self, job: policy.QueuedJob, shots: int) -> tuple[Program, int, int]:
        """The dispatcher's chunk of ``shots`` of ``job``: its program, or for a sweep the
        program of the set it is at, the chunk cut at the set's end (:mod:`..sweeps`)."""
        program = self._programs[job.id]
        if job.id not in self._sweeps:
            return program, shots, job.remaining
        plan = self._sweeps[job.id]
        if plan is None:
            rows = await self._gateway.retrying(self._gateway.store.sweep_sets, job.id)
            plan = self._sweeps[job.id] = stored_plan(rows)
        index = plan.set_at(job.shots_done)
        if self._sets_run.get(job.id, index) != index:
            self._forget(str(job.id))  # the driver's state of the set before (its samples)
        self._sets_run[job.id] = index
        return plan.chunk(program, job.shots_done, shots)

    def depth(self) -> dict[str, int]:
        """Active jobs (waiting or started) per class."""
        return self.ranked.depth()

    def waiting_depth(self) -> dict[str, int]:
        """Active jobs per class but the one holding the device (:meth:`_holder`): a started
        job that another overtook waits again."""
        depth = self.ranked.depth()
        holder = self.ranked.get(self._holder()) if self._holder() is not None else None
        if holder is not None:
            depth[holder.job_class] -= 1
        return depth

    def queued(self, key: str) -> tuple[int, int]:
        """Jobs and shots queued under ``key`` (``user:U``, ``session:S``, ``class:C:U``)."""
        return self._queued_jobs[key], self._queued_shots[key]

    def ended_recently(self, job_id: int) -> bool:
        return job_id in self._ended

    # -- changes ---------------------------------------------------------------------------

    def enqueue(
        self,
        row: JobRow,
        program: Program | None = None,
        slurm_account: str | None = None,
        sweep: SweepPlan | None = None,
    ) -> None:
        """Queue ``row``; a sweep's ``sweep`` plan, else it is read back before its next chunk."""
        job = policy.QueuedJob(
            id=row.id,
            user_id=row.user_id,
            session_id=row.session_id,
            job_class=row.job_class,
            shots=row.shots,
            shots_done=row.shots_done,
            created_at=row.created_at,
            max_calibration_age_s=row.max_calibration_age_s,
            single_calibration=row.single_calibration,
            slurm_job_id=row.slurm_job_id,
            slurm_account=slurm_account,
            loop=row.loop,
            think_time_s=row.think_time_s,
        )
        self.ranked.add(job)
        self._programs[row.id] = program or Program(
            row.format, row.body, row.shots, row.name, row.variables
        )
        if row.sets is not None:
            self._sweeps[row.id] = sweep
        if row.status == JobStatus.RUNNING:
            self._started.add(row.id)
        self._count(job, +1)
        self.changed()

    def dequeue(self, job_id: int) -> None:
        self._started.discard(job_id)
        job = self.ranked.remove(job_id)
        if job is None:
            return
        self._count(job, -1)
        self._ended.append(job_id)
        self._programs.pop(job_id, None)
        self._sweeps.pop(job_id, None)
        self._sets_run.pop(job_id, None)
        self._forget(str(job_id))
        self.changed()

    def progressed(self, job: policy.QueuedJob, shots_done: int) -> None:
        """``job`` has ``shots_done`` shots now (a chunk merged, a restart, a replica's news)."""
        self.ranked.update(dataclasses.replace(job, shots_done=shots_done))

    def follow(self, row: JobRow) -> None:
        """A replica's view of a job another replica dispatches: its shots and its status."""
        queued = self.ranked.get(row.id)
        if queued is not None:
            self.progressed(queued, row.shots_done)
        if row.status == JobStatus.RUNNING:
            self._started.add(row.id)
        else:
            self._started.discard(row.id)

    def has_started(self, job_id: int) -> bool:
        """Whether the store says RUNNING for ``job_id`` (as this daemon last saw it)."""
        return job_id in self._started

    def mark_started(self, job_id: int) -> None:
        self._started.add(job_id)

    def requeued(self) -> None:
        """Recovery made every started job PENDING again."""
        self._started.clear()

    def changed(self) -> None:
        """Decide again, and publish the queue event."""
        self._wake()
        self.dirty.set()

    def _count(self, job: policy.QueuedJob, sign: int) -> None:
        """Count a job in (or out of) its user's and session's queued totals, for the limits."""
        for key in (
            f"user:{job.user_id}",
            f"session:{job.session_id}",
            f"class:{job.job_class}:{job.user_id}",
        ):
            self._queued_jobs[key] += sign
            self._queued_shots[key] += sign * job.shots

    async def set_policy(self, changes: dict[str, Any]) -> policy.PolicyConfig:
        """Change policy settings at run time; they are kept across restarts."""
        try:
            changed = self.policy.changed(**changes).checked()
        except policy.InvalidSetting as err:
            raise SchedulerError(422, str(err), err.setting) from None
        await self._gateway.db(
            self._gateway.store.set_shared_facts, {"policy": policy_view(changed)}
        )
        self.ranked.set_config(changed)
        self.changed()
        return changed

    def learn_policy(self, saved: dict[str, Any] | None) -> None:
        """The policy as stored (changed here, or on another replica): held from now on."""
        if saved is None or saved == policy_view(self.policy):
            return
        self.ranked.set_config(self._configured.changed(**saved))
        self.changed()

    # -- places ----------------------------------------------------------------------------

    def _in_progress(self) -> set[int]:
        on_device = self._on_device()
        return self._started if on_device is None else {*self._started, on_device}

    def _holder(self) -> int | None:
        """The job holding the device: the one running a chunk, else, between chunks, the
        started job ranked first (the one whose next chunk runs unless another overtakes it)."""
        on_device = self._on_device()
        if on_device is not None or not self._started:
            return on_device
        if len(self._started) == 1:
            return next(iter(self._started))
        view, now = self._device_view(), self._clock()
        ranks = {job: self.ranked.position(job, view, now) for job in self._started}
        ranked = [(rank[0], job) for job, rank in ranks.items() if rank is not None]
        return min(ranked)[1] if ranked else None

    def place(
        self, job_id: int, estimates: Estimates | None = None, holds: Holds | None = None
    ) -> Place:
        """Where an active job stands (module docstring); :data:`NOWHERE` for another.

        The ranked queue answers for one job without walking the queue; ``estimates`` (the
        whole queue's, from :meth:`RankedQueue.estimates`) serves when many jobs are shown.
        """
        queued = self.ranked.get(job_id)
        if queued is None:
            return NOWHERE
        holds = holds or self._holds()
        in_progress = self._in_progress()
        if job_id == self._on_device():
            position, eta = 0, queued.remaining * self._device_view().shot_share_s
        else:
            if estimates is None:
                view, now = self._device_view(), self._clock()

                def rank(job: int) -> tuple[int, float] | None:
                    return self.ranked.position(job, view, now)
            else:
                rank = estimates.get
            ranked, eta = rank(job_id) or (None, None)
            position = ranked
            if job_id in in_progress:
                position = 0
            elif ranked is not None:  # the job holding the device has no place in the line
                holder = self._holder()
                ahead = rank(holder) if holder is not None else None
                position = ranked - (1 if ahead is not None and ahead[0] < ranked else 0)
        hold = held_by(holds, job_id in in_progress, position)
        if hold == "loop_hold" and eta is not None and holds.loop_until is not None:
            # a loop hold has a known end: the job's ETA moves by what is left of it
            return Place(position, round(eta + max(0.0, holds.loop_until - self._clock()), 3), hold)
        return Place(position, None if hold or eta is None else round(eta, 3), hold)

    def places(self, job_ids: Iterable[int]) -> dict[int, Place]:
        """Many jobs' places: past a few active ones, one pass over the queue instead of one
        lookup each (finished jobs need neither)."""
        ids = list(job_ids)
        active = sum(job_id in self.ranked for job_id in ids)
        estimates = None
        if active > JOB_LOOKUPS_PER_LISTING:
            estimates = self.ranked.estimates(self._device_view(), self._clock())
        holds = self._holds()
        return {job_id: self.place(job_id, estimates, holds) for job_id in ids}

    def estimate(
        self,
        user_id: str | None,
        shots: int,
        job_class: str,
        max_calibration_age_s: float | None = None,
    ) -> Place:
        """Where a job of ``shots`` submitted now would stand. Read-only: the job is ranked
        for the answer and taken out again at once (no await between, so the dispatcher
        never sees it)."""
        probe = policy.QueuedJob(
            id=ESTIMATE_ID,
            user_id=user_id or "",
            session_id=None,
            job_class=job_class,
            shots=shots,
            shots_done=0,
            created_at=self._clock(),
            max_calibration_age_s=max_calibration_age_s,
        )
        self.ranked.add(probe)
        try:
            place = self.place(ESTIMATE_ID)
        finally:
            self.ranked.remove(ESTIMATE_ID)
        assert place.position is not None
        if place.held_by == "loop_hold":  # short and bounded, already in the ETA: not a refusal
            return dataclasses.replace(place, held_by=None)
        return place

    def snapshot(self) -> QueueSnapshot:
        """Places of every active job, and the aggregates anyone may see."""
        on_device = self._on_device()
        running = self.ranked.get(on_device) if on_device is not None else None
        positions: dict[str, dict[int, tuple[int, float | None]]] = {}
        held: dict[int, str] = {}
        estimates = self.ranked.estimates(self._device_view(), self._clock())
        holds = self._holds()
        for job in self.ranked.jobs():
            place = self.place(job.id, estimates, holds)
            if place.held_by is not None:
                held[job.id] = place.held_by
            if place.position is not None:
                positions.setdefault(job.user_id, {})[job.id] = (place.position, place.eta_s)
        return QueueSnapshot(
            depth=self.waiting_depth(),
            running_job=running.id if running else None,
            running_class=running.job_class if running else None,
            running_user=running.user_id if running else None,
            positions=positions,
            held=held,
        )

    async def publish_forever(self, bus: EventBus) -> None:
        """Coalesced ``queue`` events: at most one per interval, and only for listeners."""
        while True:
            await self.dirty.wait()
            self.dirty.clear()
            if not bus.listening:
                bus.forget_queue()
                continue
            started = time.perf_counter()
            bus.publish_queue(self.snapshot())
            cost = time.perf_counter() - started
            await asyncio.sleep(max(QUEUE_EVENT_INTERVAL_S, 10 * cost))
