"""The dispatcher's queue, kept in :func:`policy.order` between decisions.

:func:`policy.decide` and :func:`policy.estimates` sort the whole queue on every call. Their
order has a structure that makes that unnecessary: a job's rank is (effective class priority,
configured priority, its account's fair-share key, arrival, id), and the first two are the same
for every job of a class, the third for every job of an account. So :class:`RankedQueue` keeps,
per class, one arrival-ordered queue per fair-share account with prefix sums of remaining
shots, and the accounts sorted by their key. Only the tiers of classes (a handful) are sorted at
decision time, because aging moves them with the clock. Accounts change keys only when a chunk
is recorded or slots change, and are re-sorted then (per chunk, not per decision).

The policy stays the definition: every answer here equals ``policy.decide`` /
``policy.estimates`` / ``policy.order`` over the same jobs (``tests/test_ranking.py`` checks it
on random event sequences). docs/policy.md#the-incremental-queue gives costs and the one
approximation (floating-point rounding of ETAs).
"""

from __future__ import annotations

import heapq
import itertools
from bisect import bisect_left, insort
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from sortedcontainers import SortedList

from qhpc_lab.qpu import DeviceState
from qhpc_lab.scheduler import policy
from qhpc_lab.scheduler import reservations as reserving
from qhpc_lab.scheduler.policy import (
    NO_USAGE,
    Calibrate,
    Decision,
    DeviceView,
    Idle,
    LoopPause,
    PolicyConfig,
    QueuedJob,
    RunChunk,
    Usage,
)
from qhpc_lab.scheduler.reservations import Reservation

_Arrival = tuple[float, int]
"""A job's place within its account: (created_at, id)."""

_Unit = tuple[str, bool]
"""A fair-share unit: (account, sessionless). A session named like a user's pseudo-session
shares that user's account but not its one-slot share, so the two are kept apart."""


def _arrival(job: QueuedJob) -> _Arrival:
    return (job.created_at, job.id)


def _unit(job: QueuedJob) -> _Unit:
    return (job.account, job.session_id is None)


class _Fifo:
    """One unit's jobs of one class by arrival, with prefix sums of their remaining shots.

    A list of sorted blocks (at most ``2 × _LOAD`` long) with per-block sums: inserting and
    removing cost a bisection and a short list move, a prefix sum one slice sum per block.
    """

    _LOAD = 256

    def __init__(self) -> None:
        self._blocks: list[list[_Arrival]] = []
        self._shots: list[list[int]] = []
        self._sums: list[int] = []
        self._maxes: list[_Arrival] = []
        self.count = 0
        self.total = 0
        self.unbounded: SortedList = SortedList()
        """The arrivals of jobs without a calibration-age bound."""
        self.bounded: dict[float, SortedList] = {}
        """The arrivals of jobs with a calibration-age bound, by bound (a sweep shares one)."""

    def add(self, arrival: _Arrival, shots: int, bound: float | None) -> None:
        if not self._blocks:
            self._blocks.append([arrival])
            self._shots.append([shots])
            self._sums.append(shots)
            self._maxes.append(arrival)
        else:
            b = min(bisect_left(self._maxes, arrival), len(self._maxes) - 1)
            block = self._blocks[b]
            i = bisect_left(block, arrival)
            block.insert(i, arrival)
            self._shots[b].insert(i, shots)
            self._sums[b] += shots
            self._maxes[b] = block[-1]
            if len(block) > 2 * self._LOAD:
                half = self._LOAD
                left, right = self._shots[b][:half], self._shots[b][half:]
                self._blocks[b : b + 1] = [block[:half], block[half:]]
                self._shots[b : b + 1] = [left, right]
                self._sums[b : b + 1] = [sum(left), sum(right)]
                self._maxes[b : b + 1] = [block[half - 1], block[-1]]
        self.count += 1
        self.total += shots
        if bound is None:
            self.unbounded.add(arrival)
        else:
            self.bounded.setdefault(bound, SortedList()).add(arrival)

    def remove(self, arrival: _Arrival, bound: float | None) -> int:
        """Remove a job; its remaining shots as added."""
        b = bisect_left(self._maxes, arrival)
        block = self._blocks[b]
        i = bisect_left(block, arrival)
        del block[i]
        shots = self._shots[b].pop(i)
        self._sums[b] -= shots
        if block:
            self._maxes[b] = block[-1]
        else:
            del self._blocks[b], self._shots[b], self._sums[b], self._maxes[b]
        self.count -= 1
        self.total -= shots
        if bound is None:
            self.unbounded.remove(arrival)
        else:
            self.bounded[bound].remove(arrival)
            if not self.bounded[bound]:
                del self.bounded[bound]
        return shots

    def first_runnable(
        self, calibration_age_s: float, config: PolicyConfig, setup_s: float = 0.0
    ) -> _Arrival | None:
        """The first job that may start a shot at this calibration age (:func:`policy.age_bound`),
        in O(distinct bounds): jobs past their bound are skipped without being visited."""
        first = self.unbounded[0] if self.unbounded else None
        for bound, arrivals in self.bounded.items():
            within = max(bound, config.min_calibration_age_s, setup_s) >= calibration_age_s
            if within and (first is None or arrivals[0] < first):
                first = arrivals[0]
        return first

    def bounded_arrivals(self) -> Iterator[_Arrival]:
        return itertools.chain.from_iterable(self.bounded.values())

    def ahead(self, arrival: _Arrival) -> tuple[int, int]:
        """Jobs, and their remaining shots, that arrived before ``arrival``."""
        b = bisect_left(self._maxes, arrival)
        if b == len(self._maxes):
            return self.count, self.total
        i = bisect_left(self._blocks[b], arrival)
        count = sum(map(len, self._blocks[:b])) + i
        return count, sum(self._sums[:b]) + sum(self._shots[b][:i])

    def __iter__(self) -> Iterator[_Arrival]:
        return itertools.chain.from_iterable(self._blocks)


@dataclass
class _Class:
    """One job class of an index: its units' queues and the units by fair-share key."""

    units: dict[_Unit, _Fifo] = field(default_factory=dict)
    order: list[tuple[float, _Unit]] = field(default_factory=list)
    arrivals: SortedList = field(default_factory=SortedList)
    count: int = 0
    total: int = 0


@dataclass
class _Tier:
    """Classes of equal effective and configured priority: their jobs interleave."""

    priority: float
    classes: list[_Class]
    count: int
    total: int

    def units(self) -> Iterator[tuple[float, _Fifo]]:
        """The tier's units by fair-share key (ties adjacent)."""
        if len(self.classes) == 1:
            (cls,) = self.classes
            return ((key, cls.units[unit]) for key, unit in cls.order)
        merged = heapq.merge(
            *([(key, unit, i) for key, unit in cls.order] for i, cls in enumerate(self.classes))
        )
        return ((key, self.classes[i].units[unit]) for key, unit, i in merged)

    def arrivals(self) -> Iterator[_Arrival]:
        """The tier's jobs in the policy's order: units by key, tied units merged by arrival."""
        for _, group in itertools.groupby(self.units(), key=lambda pair: pair[0]):
            fifos = [fifo for _, fifo in group]
            yield from fifos[0] if len(fifos) == 1 else heapq.merge(*fifos)


class _Index:
    """A set of jobs kept in the policy's order (all jobs, or the started ones)."""

    def __init__(self) -> None:
        self.classes: dict[str, _Class] = {}
        self.count = 0
        self.bounded = 0

    def add(self, job: QueuedJob, key: float) -> None:
        cls = self.classes.get(job.job_class)
        if cls is None:
            cls = self.classes[job.job_class] = _Class()
        unit = _unit(job)
        fifo = cls.units.get(unit)
        if fifo is None:
            fifo = cls.units[unit] = _Fifo()
            insort(cls.order, (key, unit))
        fifo.add(_arrival(job), job.remaining, job.max_calibration_age_s)
        cls.arrivals.add(_arrival(job))
        cls.count += 1
        cls.total += job.remaining
        self.count += 1
        self.bounded += job.max_calibration_age_s is not None

    def remove(self, job: QueuedJob, key: float) -> None:
        cls = self.classes[job.job_class]
        unit = _unit(job)
        fifo = cls.units[unit]
        cls.total -= fifo.remove(_arrival(job), job.max_calibration_age_s)
        cls.arrivals.remove(_arrival(job))
        cls.count -= 1
        self.count -= 1
        self.bounded -= job.max_calibration_age_s is not None
        if not fifo.count:
            del cls.units[unit]
            del cls.order[bisect_left(cls.order, (key, unit))]
        if not cls.count:
            del self.classes[job.job_class]

    def rekey(self, keys: Mapping[_Unit, float]) -> None:
        for cls in self.classes.values():
            cls.order = sorted((keys[unit], unit) for unit in cls.units)

    def tiers(
        self, device: DeviceView, now: float, config: PolicyConfig, usage: Usage
    ) -> list[_Tier]:
        """The classes grouped and sorted as :func:`policy.order` ranks them now."""
        ranked = sorted(
            (
                (
                    -policy.effective_priority(
                        name, cls.arrivals[0][0], device, now, config, usage
                    ),
                    -config.class_priority.get(name, 0),
                    cls,
                )
                for name, cls in self.classes.items()
            ),
            key=lambda rank: rank[:2],
        )
        tiers: list[_Tier] = []
        for (priority, _), group in itertools.groupby(ranked, key=lambda rank: rank[:2]):
            classes = [cls for _, _, cls in group]
            tiers.append(
                _Tier(
                    -priority,
                    classes,
                    sum(cls.count for cls in classes),
                    sum(cls.total for cls in classes),
                )
            )
        return tiers


class RankedQueue:
    """The queue of accepted, unfinished jobs, kept in the policy's order between decisions.

    It owns what ``policy.decide`` is called with besides the device and the clock: the jobs,
    the sessions' slots, the :class:`~qhpc_lab.scheduler.policy.Usage` and the
    :class:`~qhpc_lab.scheduler.policy.PolicyConfig`; change them only through its methods.
    """

    def __init__(self, config: PolicyConfig, usage: Usage = NO_USAGE) -> None:
        self._config = config
        self._usage = usage
        self._slots: dict[str, int] = {}
        self._jobs: dict[int, QueuedJob] = {}
        self._keys: dict[_Unit, float] = {}
        self._all = _Index()
        self._started = _Index()
        """Started jobs with shots left: the candidates while draining."""
        self._exhausted = 0
        """Jobs without shots left (the dispatcher never keeps one): never candidates."""
        self._single_calibration = 0
        """Single-calibration jobs (rare): while one is queued, decisions are the linear
        policy's, whose rule 7 looks past the first runnable job of each unit."""
        self._reservations: tuple[Reservation, ...] = ()
        self._loops: dict[tuple[str, str], SortedList] = {}
        """Each hybrid loop's queued jobs by arrival, per (user, loop id) (rule 9)."""
        self._pause: LoopPause | None = None

    # -- the jobs ---------------------------------------------------------------------------

    def add(self, job: QueuedJob) -> None:
        """Queue ``job``, replacing the queued job with its id if there is one."""
        self.remove(job.id)
        self._jobs[job.id] = job
        key = self._key(job)
        self._all.add(job, key)
        if job.remaining > 0 and job.started:
            self._started.add(job, key)
        self._exhausted += job.remaining <= 0
        self._single_calibration += job.single_calibration
        if job.loop is not None:
            self._loops.setdefault((job.user_id, job.loop), SortedList()).add(_arrival(job))

    def update(self, job: QueuedJob) -> None:
        """Replace a queued job (say, after a chunk changed its ``shots_done``)."""
        if job.id not in self._jobs:
            raise KeyError(job.id)
        self.add(job)

    def remove(self, job_id: int) -> QueuedJob | None:
        """Take a job out of the queue; it, or None if it was not queued."""
        job = self._jobs.pop(job_id, None)
        if job is None:
            return None
        key = self._key(job)
        self._all.remove(job, key)
        if job.remaining > 0 and job.started:
            self._started.remove(job, key)
        self._exhausted -= job.remaining <= 0
        self._single_calibration -= job.single_calibration
        if job.loop is not None:
            loop = (job.user_id, job.loop)
            self._loops[loop].remove(_arrival(job))
            if not self._loops[loop]:
                del self._loops[loop]
        return job

    def get(self, job_id: int) -> QueuedJob | None:
        return self._jobs.get(job_id)

    def __len__(self) -> int:
        return len(self._jobs)

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._jobs

    def jobs(self) -> Iterable[QueuedJob]:
        """The queued jobs, in no particular order (:meth:`ranked` gives the policy's)."""
        return self._jobs.values()

    def depth(self) -> dict[str, int]:
        """Queued jobs per class, every known class included."""
        depth = dict.fromkeys(policy.JOB_CLASSES, 0)
        depth.update((name, cls.count) for name, cls in self._all.classes.items())
        return depth

    # -- what the order depends on ------------------------------------------------------------

    @property
    def config(self) -> PolicyConfig:
        return self._config

    def set_config(self, config: PolicyConfig) -> None:
        """A policy change at run time: priorities and aging apply at the next decision."""
        self._config = config

    @property
    def usage(self) -> Usage:
        return self._usage

    @property
    def slots(self) -> Mapping[str, int]:
        return self._slots

    @property
    def reservations(self) -> tuple[Reservation, ...]:
        return self._reservations

    def set_reservations(self, reservations: Iterable[Reservation]) -> None:
        """The operator's reservations (rule 8), replacing those held; ended ones may stay."""
        self._reservations = tuple(reservations)

    def record_chunk(self, job: QueuedJob, started_at: float, finished_at: float) -> None:
        """Account a chunk of ``job`` (:func:`policy.record_chunk`); call before :meth:`update`."""
        self._usage = policy.record_chunk(self._usage, job, started_at, finished_at, self._config)
        self._rekey()

    # -- hybrid loops (rule 9) -----------------------------------------------------------------

    @property
    def pause(self) -> LoopPause | None:
        """The hybrid loop the QPU may be held for now, if any."""
        return self._pause

    def loop_ended_job(self, job: QueuedJob, ended_at: float) -> None:
        """``job`` (out of the queue now) ended at ``ended_at``: when it was its loop's last
        queued job, the loop pauses (:func:`policy.loop_pause`)."""
        if job.loop is not None and (job.user_id, job.loop) not in self._loops:
            self._pause = policy.loop_pause(job, ended_at, self._config, self._reservations)

    def end_pause(self) -> None:
        """Something else runs on the QPU: no loop is held for any more."""
        self._pause = None

    def record_hold(self, started_at: float, finished_at: float) -> None:
        """Charge a hold to the paused loop's account (:func:`policy.record_hold`)."""
        if self._pause is not None:
            self._usage = policy.record_hold(
                self._usage, self._pause, started_at, finished_at, self._config
            )
            self._rekey()

    def set_slots(self, session_id: str, slots: int) -> None:
        """A session's QPU share (its Slurm ``qpu:N``)."""
        self._slots[session_id] = slots
        self._rekey()

    def drop_slots(self, session_id: str) -> None:
        """Forget an ended session's share: its jobs count one slot."""
        if self._slots.pop(session_id, None) is not None:
            self._rekey()

    def _key(self, job: QueuedJob) -> float:
        unit = _unit(job)
        key = self._keys.get(unit)
        if key is None:
            key = self._keys[unit] = policy.fair_share(
                job.account, job.session_id, self._slots, self._usage
            )
        return key

    def _rekey(self) -> None:
        """Recompute every unit's fair-share key and re-sort the units (O(units log units))."""
        units = {_unit(job): job for job in self._units_representatives()}
        self._keys = {
            unit: policy.fair_share(job.account, job.session_id, self._slots, self._usage)
            for unit, job in units.items()
        }
        self._all.rekey(self._keys)
        self._started.rekey(self._keys)

    def _units_representatives(self) -> Iterator[QueuedJob]:
        """One job of every unit with queued jobs."""
        for cls in self._all.classes.values():
            for fifo in cls.units.values():
                yield self._jobs[next(iter(fifo))[1]]

    # -- the policy's answers ---------------------------------------------------------------

    def ranked(self, device: DeviceView, now: float, limit: int | None = None) -> list[QueuedJob]:
        """The first ``limit`` queued jobs (all: None) in :func:`policy.order`."""
        tiers = self._all.tiers(device, now, self._config, self._usage)
        arrivals = itertools.chain.from_iterable(tier.arrivals() for tier in tiers)
        return [self._jobs[job_id] for _, job_id in itertools.islice(arrivals, limit)]

    def decide(self, device: DeviceView, now: float) -> Decision:
        """``policy.decide`` over the queued jobs, slots, usage, reservations and loop pause."""
        reserved = reserving.pending(self._reservations, now)
        pause = policy.pause_clear_of(self._pause, reserved, device, now)
        # The linear policy keeps these exact; a reservation is near when it holds now, could
        # shorten a chunk, or moves the next calibration.
        if self._exhausted or self._single_calibration or self._near(reserved, device, now):
            queue = list(self._jobs.values())
            return policy.decide(
                queue, self._slots, device, now, self._config, self._usage, reserved, pause
            )
        decision = self._decide(device, now, reserved)
        if pause is None or now >= pause.until or not isinstance(decision, RunChunk):
            return decision
        index = self._all if device.accepting else self._started
        others: set[str] = set()
        yielded = False
        for cls in index.classes.values():
            for unit, fifo in cls.units.items():
                # the unit's oldest job outside the loop waited longest of them: yields asks it
                other = next((self._jobs[i] for _, i in fifo if self._is_other(i, pause)), None)
                if other is not None:
                    others.add(unit[0])
                    yielded = yielded or policy.yields(pause, other, now, device, self._config)
        pause = policy.bounded_pause(pause, self._usage, yielded, now, self._config)
        if pause is None:
            return decision
        mine = self._loops.get((pause.user_id, pause.loop), ())
        loop_job = next(
            (
                self._jobs[job_id]
                for _, job_id in mine
                if self._jobs[job_id].remaining > 0
                and (device.accepting or self._jobs[job_id].started)
            ),
            None,
        )
        return policy.hold_or(decision, pause, loop_job, len(others), device, now, self._config)

    def _is_other(self, job_id: int, pause: LoopPause) -> bool:
        """A job with shots left outside the paused loop: its account waits during a hold."""
        job = self._jobs[job_id]
        return not pause.owns(job) and job.remaining > 0

    def _decide(self, device: DeviceView, now: float, reserved: list[Reservation]) -> Decision:
        """Rules 1–7 on the incremental index, with no reservation near."""
        if device.state in (DeviceState.MAINTENANCE, DeviceState.OFFLINE):
            return Idle(None)
        if device.state is DeviceState.CALIBRATING:
            return Idle(now + device.calibration_duration_s)
        if now >= device.next_calibration_at:
            return Calibrate()
        index = self._all if device.accepting else self._started
        if not index.count:
            return Idle(min(device.next_calibration_at, reserving.next_boundary(reserved, now)))
        before_window = device.shots_before(device.next_calibration_at - now)
        if before_window == 0:
            return Calibrate()
        tiers = index.tiers(device, now, self._config, self._usage)
        age = now - device.calibrated_at + device.setup_s  # the first shot's, after the setup
        # Below the top priority only when no calibration can come for it (rule 6).
        same = (lambda t: t.priority == tiers[0].priority) if device.calibrates else bool
        for tier in itertools.takewhile(same, tiers):
            for _, group in itertools.groupby(tier.units(), key=lambda pair: pair[0]):
                firsts = [
                    fifo.first_runnable(age, self._config, device.setup_s) for _, fifo in group
                ]
                first = min((arrival for arrival in firsts if arrival is not None), default=None)
                if first is not None:
                    job = self._jobs[first[1]]
                    within_age = policy.shots_within_age(
                        job, age, device.time_per_shot_s, self._config, device.setup_s
                    )
                    shots = min(job.remaining, device.chunk_shots, before_window, within_age)
                    return RunChunk(job.id, shots)
        return Calibrate() if device.calibrates else Idle(None)

    @staticmethod
    def _near(reserved: list[Reservation], device: DeviceView, now: float) -> bool:
        if not reserved:
            return False
        room = device.shots_before(reserved[0].starts_at - now)
        moved = policy.calibration_due_at(device, now, reserved) != device.next_calibration_at
        return room <= device.chunk_shots or moved

    def position(self, job_id: int, device: DeviceView, now: float) -> tuple[int, float] | None:
        """``policy.estimates(...)[job_id]``: queue position (1 = next) and seconds to its end.

        Without calibration-age bounds ahead of the job, the ETA is closed-form in the shots
        ahead; each bounded job ahead is replayed (:func:`policy.run_through`). While a
        reservation is pending, every job ahead is (:meth:`estimates`).
        """
        job = self._jobs.get(job_id)
        if job is None:
            return None
        if reserving.pending(self._reservations, now):
            return self.estimates(device, now)[job_id]
        tiers = self._all.tiers(device, now, self._config, self._usage)
        own_class = self._all.classes[job.job_class]
        tier_index = next(
            i for i, tier in enumerate(tiers) if any(cls is own_class for cls in tier.classes)
        )
        rank = (tier_index, self._key(job), _arrival(job))
        count, shots = self._ahead(tiers, rank)
        t, calibrated_at = now, device.calibrated_at
        done = 0
        for bounded_id, bounded_shots in self._bounded_ahead(tiers, rank):
            t, calibrated_at = _advance(t, calibrated_at, bounded_shots - done, device)
            bounded = self._jobs[bounded_id]
            t, calibrated_at = policy.run_through(bounded, t, calibrated_at, device, self._config)
            done = bounded_shots + bounded.remaining
        if job.max_calibration_age_s is None:
            t, calibrated_at = _advance(t, calibrated_at, shots + job.remaining - done, device)
        return count + 1, max(0.0, t - now)

    def estimates(self, device: DeviceView, now: float) -> dict[int, tuple[int, float]]:
        """``policy.estimates`` for every queued job, in one pass over the kept order (O(n), no
        sort): for listing many jobs at once, where :meth:`position` would replay the bounded
        jobs ahead of each."""
        result: dict[int, tuple[int, float]] = {}
        t, calibrated_at = now, device.calibrated_at
        reserved = reserving.pending(self._reservations, now)
        for position, job in enumerate(self.ranked(device, now), start=1):
            t, calibrated_at = policy.run_through(
                job, t, calibrated_at, device, self._config, reserved
            )
            result[job.id] = (position, max(0.0, t - now))
        return result

    @staticmethod
    def _ahead(tiers: list[_Tier], rank: tuple[int, float, _Arrival]) -> tuple[int, int]:
        """Jobs, and their remaining shots, ranked before ``rank`` = (tier, key, arrival)."""
        tier_index, key, arrival = rank
        count = sum(tier.count for tier in tiers[:tier_index])
        shots = sum(tier.total for tier in tiers[:tier_index])
        for unit_key, fifo in tiers[tier_index].units():
            if unit_key < key:
                count += fifo.count
                shots += fifo.total
            elif unit_key == key:
                ahead = fifo.ahead(arrival)
                count += ahead[0]
                shots += ahead[1]
            else:
                break
        return count, shots

    def _bounded_ahead(
        self, tiers: list[_Tier], rank: tuple[int, float, _Arrival]
    ) -> list[tuple[int, int]]:
        """The bounded jobs ranked before ``rank`` (and its own job if bounded), in order, each
        with the remaining shots ranked before it: one pass over the units, then per bounded
        job a prefix sum in each unit tied with its own."""
        if not self._all.bounded:
            return []
        found: list[tuple[int, int]] = []
        shots = 0
        for tier_index, tier in enumerate(tiers[: rank[0] + 1]):
            for key, group in itertools.groupby(tier.units(), key=lambda pair: pair[0]):
                if (tier_index, key) > rank[:2]:
                    return found
                fifos = [fifo for _, fifo in group]
                for arrival in sorted(itertools.chain(*(f.bounded_arrivals() for f in fifos))):
                    if (tier_index, key, arrival) > rank:
                        return found
                    found.append((arrival[1], shots + sum(f.ahead(arrival)[1] for f in fifos)))
                shots += sum(fifo.total for fifo in fifos)
        return found


def _advance(t: float, calibrated_at: float, shots: int, device: DeviceView) -> tuple[float, float]:
    """:func:`policy.run_through` for ``shots`` shots of jobs without an age bound, in closed
    form: the current window's shots, then full windows, each after a calibration."""
    if shots <= 0:
        return t, calibrated_at
    per_shot = device.shot_share_s
    fits = policy.shots_within(calibrated_at + device.calibration_interval_s - t, per_shot)
    if shots <= fits:
        return t + shots * per_shot, calibrated_at
    shots -= fits
    t += fits * per_shot
    window = policy.shots_within(device.calibration_interval_s, per_shot)
    if window == 0:
        raise ValueError("the calibration interval is shorter than a shot")
    calibrations = -(-shots // window)
    calibrated_at = (
        t
        + (calibrations - 1) * (device.calibration_duration_s + window * per_shot)
        + device.calibration_duration_s
    )
    return calibrated_at + (shots - (calibrations - 1) * window) * per_shot, calibrated_at
