"""Scheduling policy: a pure function of (queue, sessions, usage, device, clock) → what to do next.

No I/O, no wall clock, no randomness: the dispatcher, the tests and the simulation benchmark
(``benchmarks/simulate.py``) call the same functions with real or virtual time, so what the
benchmark measures is what the daemon does. Ordering is decided here and nowhere else: the
dispatcher's :class:`~qhpc_lab.scheduler.ranking.RankedQueue` keeps this order incrementally,
and these functions stay its definition (``tests/test_ranking.py`` holds it to them).

The rules, in the order :func:`decide` applies them (docs/policy.md explains each one):

1. MAINTENANCE and OFFLINE run nothing, not even a calibration; CALIBRATING waits.
2. A calibration that is due runs before anything else.
3. While draining (``accepting=False``) only started jobs are candidates.
4. Candidates are ranked by :func:`order`: class priority raised by aging, then fair share
   between sessions weighted by their slots, then arrival.
5. The best candidate runs one chunk: at most ``device.chunk_shots`` shots, shrunk so that it
   ends before the next calibration window and every shot starts within the job's
   calibration-age bound, the chunk's setup (``device.setup_s``, one QPU job's) counted before
   its first shot. When not one shot fits before the window, the device calibrates early.
6. A job past its calibration-age bound waits for a calibration while the next candidate of the
   same effective priority runs; when only lower-priority work (or none) could run instead, the
   device calibrates early for it.
7. A single-calibration job starts only when all its shots fit before the window and within its
   age bound (else it waits as in rule 6); while one has started, the device calibrates early
   for no other job (that job runs instead). A calibration that happens anyway restarts it
   (the dispatcher's owner discards its shots); one that could never fit is refused at
   submission (:func:`single_calibration_refusal`).
8. Reservations (:mod:`~qhpc_lab.scheduler.reservations`): inside a window only its owner's
   work runs; other work runs only shots that end before the window starts (a
   single-calibration job starts only if all its shots do) and waits for its end. A periodic
   calibration due inside a window runs just before it when that clears the window.
9. A hybrid loop between two of its jobs (:class:`LoopPause`) keeps the QPU
   (:class:`HoldForLoop`) while holding costs the others less than it saves the loop
   (:func:`hold_or`); its next job then runs first. Held seconds are charged to the loop's
   account (:func:`record_hold`). Rule 8 comes first: no hold while a reservation holds or
   begins before the pause ends (:func:`pause_clear_of`), and none for a loop whose job ended
   in a window (:func:`loop_pause`). Holds are bounded: a user's loops are held at most
   ``loop_hold_budget_s`` per ``loop_hold_window_s`` (:func:`hold_budget_left`), and not at all
   while work outside the loop that outranks it has waited too long (:func:`yields`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

from qhpc_lab.qpu import DeviceState, time_per_shot_with_setup
from qhpc_lab.scheduler import reservations as reserving
from qhpc_lab.scheduler.reservations import Reservation
from qhpc_lab.vocabulary import JOB_CLASSES

_SLACK = 1e-9
"""Rounding slack, in shots, when counting how many shots fit in a span of time."""


@dataclass(frozen=True)
class QueuedJob:
    """What the policy needs to know of an accepted, unfinished job."""

    id: int
    user_id: str
    session_id: str | None
    job_class: str
    shots: int
    shots_done: int
    created_at: float
    max_calibration_age_s: float | None = None
    single_calibration: bool = False
    """All its shots must run under one calibration (rule 7)."""
    slurm_job_id: str | None = None
    slurm_account: str | None = None
    """The Slurm job and account the job's session belongs to: who a reservation can be for."""
    loop: str | None = None
    """The hybrid loop the job belongs to (rule 9)."""
    think_time_s: float | None = None
    """The loop's expected pause after this job, before its next one (rule 9)."""

    @property
    def remaining(self) -> int:
        return self.shots - self.shots_done

    @property
    def started(self) -> bool:
        return self.shots_done > 0

    @functools.cached_property
    def account(self) -> str:
        """Fair-share account: the session, or a per-user pseudo-session for sessionless jobs."""
        return self.session_id if self.session_id is not None else f"user:{self.user_id}"


@dataclass(frozen=True)
class DeviceView:
    """The device as the policy sees it at one instant."""

    state: DeviceState
    calibrated_at: float
    calibration_interval_s: float
    calibration_duration_s: float
    time_per_shot_s: float
    """A shot's time on the device, the setup excluded."""
    chunk_shots: int
    accepting: bool = True
    """False while an operator drains the QPU: started jobs finish, new ones wait."""
    calibrates: bool = True
    """False for a device that calibrates itself, unseen (a QPU behind the QPU API): no early
    calibration is decided for it; a job past its calibration-age bound waits for the next
    declared one while lower classes run (docs/policy.md, "A device behind the QPU API")."""
    setup_s: float = 0.0
    """Seconds every chunk (one QPU job) spends before its first shot: the profile's
    ``job_setup_s``, measured by the QPU API driver. Chunks are fitted into windows with it."""

    @property
    def next_calibration_at(self) -> float:
        return self.calibrated_at + self.calibration_interval_s

    @property
    def chunk_duration_s(self) -> float:
        """The time one full chunk takes, its setup included: the unit of aging and of
        preemption delay."""
        return self.seconds_for(self.chunk_shots)

    @property
    def shot_share_s(self) -> float:
        """A shot's share of device time with the setup spread over a full chunk: what end
        estimates and quota charges count per shot."""
        return time_per_shot_with_setup(self.time_per_shot_s, self.setup_s, self.chunk_shots)

    def seconds_for(self, shots: int) -> float:
        """How long ``shots`` shots take run back to back in chunks of ``chunk_shots``, each
        chunk paying the setup first."""
        chunks = -(-shots // self.chunk_shots) if shots > 0 else 0
        return chunks * self.setup_s + shots * self.time_per_shot_s

    def shots_before(self, seconds: float) -> int:
        """The most shots that end within ``seconds`` from now, run back to back in chunks of
        ``chunk_shots``, each chunk paying the setup first (never negative): what fits before
        a calibration window or a reservation."""
        if self.setup_s <= 0:
            return shots_within(seconds, self.time_per_shot_s)
        full = max(0, math.floor(seconds / self.chunk_duration_s + _SLACK))
        rest = seconds - full * self.chunk_duration_s
        return full * self.chunk_shots + shots_within(rest - self.setup_s, self.time_per_shot_s)


MAX_PRIORITY = 1_000_000
"""Bound on a class priority and on aging, so policy arithmetic stays in ordinary numbers."""
MAX_SECONDS = 10 * 365 * 24 * 3600
"""Bound on a duration (ten years): the policy turns durations into shot counts."""


class InvalidSetting(ValueError):
    """A policy setting out of its domain; ``setting`` names it (the API's refusal rule)."""

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(message)
        self.setting = setting


def _setting(default: Any, help: str, **domain: Any) -> Any:
    """A :class:`PolicyConfig` field: its default, what it does in one line, and its domain
    (``ge``, ``gt``, ``le`` for numbers and a mapping's values, ``choices``, a mapping's
    ``keys``), which the settings file, the variables, the CLI flags and the API all enforce
    (``config.py`` and ``schemas.py`` read them from here)."""
    metadata = {"help": help, **domain}
    if isinstance(default, Mapping):
        return field(default_factory=lambda: dict(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class PolicyConfig:
    """Operator settings. Interactive development work outranks batch production by default.

    One line here adds a setting everywhere: the ``[policy]`` table and ``QHPC_*`` variables,
    ``qhpc scheduler serve`` flags, ``qhpc admin policy --set`` and ``/admin/policy``.
    """

    class_priority: Mapping[str, int] = _setting(
        {"development": 30, "test": 20, "production": 10},
        "priority per job class, higher runs first (e.g. development=30,test=20,production=10)",
        keys=JOB_CLASSES,
        ge=-MAX_PRIORITY,
        le=MAX_PRIORITY,
    )
    aging_per_chunk: float = _setting(
        1.0,
        "priority a class gains per chunk duration it waits unserved (0: strict priorities)",
        ge=0,
        le=MAX_PRIORITY,
    )
    """With the default priorities, production outranks development once it has gone more than
    20 chunk durations without QPU time, so under a flood of development work it still gets
    one chunk in 22 (test: one in 12). Zero turns aging off (lower classes can starve)."""
    usage_half_life_s: float = _setting(
        600.0,
        "fair-share memory: QPU-seconds used this long ago count half",
        gt=0,
        le=MAX_SECONDS,
    )
    """Short, because a Slurm ``qpu:N`` share is a share of the QPU while the session works, not
    a credit earned while it was idle: with a long memory a newly active session would take the
    QPU to itself until it had caught up, and interactive users would queue behind it."""
    min_calibration_age_s: float = _setting(
        60.0,
        "the tightest max_calibration_age_s honoured; tighter bounds are loosened to it",
        ge=0,
        le=MAX_SECONDS,
    )
    """So no job can keep the device calibrating (and dispatch latency cannot cause a
    calibration loop)."""
    default_job_class: str = _setting(
        "production",
        "the class of a job that names none (plain Warden clients)",
        choices=JOB_CLASSES,
    )
    cell_job_class: str = _setting(
        "development",
        "the class %%qpu cells submit with when they name none (served in /device)",
        choices=JOB_CLASSES,
    )

    loop_hold_max_s: float = _setting(
        30.0,
        "longest the QPU is held for a hybrid loop between two of its jobs (0: never)",
        ge=0,
        le=MAX_SECONDS,
    )
    """Also how long a loop's next job goes first after its last one (rule 9): rule 9 holds
    the QPU only while it costs the others less than it saves the loop, so a cap over a chunk
    is seldom held, but a longer pause lets the loop's next job in first. 30 s from the
    frontier with 15 s chunks (docs/policy.md, "Aims and the frontier")."""
    loop_hold_budget_s: float = _setting(
        120.0,
        "held seconds one user's hybrid loops may get per loop_hold_window_s (0: no holds)",
        ge=0,
        le=MAX_SECONDS,
    )
    """A fifth of the window: short pauses repeated without end would otherwise keep the QPU
    idle for one user however little it runs for them."""
    loop_hold_window_s: float = _setting(
        600.0,
        "the sliding window loop_hold_budget_s counts held seconds over",
        gt=0,
        le=MAX_SECONDS,
    )
    loop_yield_after_chunks: float = _setting(
        1.0,
        "chunk durations a job outside a loop, of a higher class (or of the loop's, if "
        "interactive), may wait before loops lose their holds and their turn",
        ge=0,
        le=MAX_PRIORITY,
    )
    """Each hold is cheap by rule 9's measure, but a loop that comes back every time goes
    first every time: past this wait the loop queues like anyone else until that job ran."""

    def checked(self) -> PolicyConfig:
        """These settings, refused (:class:`InvalidSetting`) where one is outside its declared
        domain: for what operators give (the file, variables, flags, the API). The policy
        itself takes any values, as its tests and the simulation do."""
        for spec in fields(self):
            value = getattr(self, spec.name)
            if isinstance(value, Mapping):
                unknown = set(value) - set(spec.metadata.get("keys", value))
                if unknown:
                    raise InvalidSetting(
                        spec.name,
                        f"unknown keys in {spec.name}: {', '.join(sorted(map(str, unknown)))}; "
                        f"use {', '.join(spec.metadata['keys'])}",
                    )
            for item in value.values() if isinstance(value, Mapping) else (value,):
                _check_domain(spec.name, item, spec.metadata)
        return self

    def changed(self, **changes: Any) -> PolicyConfig:
        """A copy with ``changes``; a mapping setting changes only the keys given, so
        ``class_priority={"test": 25}`` keeps the other classes' priorities."""
        merged = {
            name: {**getattr(self, name), **value} if isinstance(value, Mapping) else value
            for name, value in changes.items()
        }
        return replace(self, **merged)


def _check_domain(name: str, value: Any, domain: Mapping[str, Any]) -> None:
    """Refuse a value outside a setting's declared domain (NaN is outside every bound)."""
    if "choices" in domain and value not in domain["choices"]:
        raise InvalidSetting(
            name, f"{name} must be one of {', '.join(domain['choices'])}, got {value!r}"
        )
    bounded = any(key in domain for key in ("ge", "gt", "le"))
    if bounded and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise InvalidSetting(name, f"{name} must be a number, got {value!r}")
    checks = {
        "ge": (lambda bound: value >= bound, "at least"),
        "gt": (lambda bound: value > bound, "more than"),
        "le": (lambda bound: value <= bound, "at most"),
    }
    for key, (within, words) in checks.items():
        if key in domain and not within(domain[key]):
            raise InvalidSetting(name, f"{name} must be {words} {domain[key]}, got {value!r}")


@dataclass(frozen=True)
class Usage:
    """What the policy remembers between decisions; the dispatcher keeps it.

    Pass it to :func:`decide` and :func:`estimates`, and replace it with :func:`record_chunk`
    after every chunk. Without it (:data:`NO_USAGE`) every account counts as unused and
    nothing ages: fair share and aging need it.
    """

    qpu_seconds: Mapping[str, float] = field(default_factory=dict)
    """Decayed QPU-seconds per fair-share account (:attr:`QueuedJob.account`) as of ``as_of``."""
    as_of: float = 0.0
    class_served_at: Mapping[str, float] = field(default_factory=dict)
    """When each job class's last chunk ended: its aging counts from there."""
    held: Mapping[str, tuple[tuple[float, float], ...]] = field(default_factory=dict)
    """Per user, the loop holds (start, end) within the last ``loop_hold_window_s``: what
    :func:`hold_budget_left` counts."""


NO_USAGE = Usage()


def record_chunk(
    usage: Usage, job: QueuedJob, started_at: float, finished_at: float, config: PolicyConfig
) -> Usage:
    """``usage`` after ``job`` ran a chunk from ``started_at`` to ``finished_at``.

    Every account decays by the same factor, so decaying only here (not at decision time)
    leaves the fair-share order exact. Accounts that decayed below a microsecond are dropped,
    so ended sessions do not accumulate.
    """
    charged = _charge(usage, job.account, started_at, finished_at, config)
    return replace(charged, class_served_at={**usage.class_served_at, job.job_class: finished_at})


def record_hold(
    usage: Usage, pause: LoopPause, started_at: float, finished_at: float, config: PolicyConfig
) -> Usage:
    """``usage`` after the QPU was held (rule 9) for ``pause``'s loop from ``started_at`` to
    ``finished_at``: charged to the loop's account like a chunk, and to its user's hold
    budget (:func:`hold_budget_left`); no class counts as served."""
    charged = _charge(usage, pause.account, started_at, finished_at, config)
    since = finished_at - config.loop_hold_window_s
    held = {  # holds that left the window are forgotten, so ended users do not accumulate
        user: kept
        for user, spans in usage.held.items()
        if (kept := tuple(span for span in spans if span[1] > since))
    }
    held[pause.user_id] = (*held.get(pause.user_id, ()), (started_at, finished_at))
    return replace(charged, held=held)


def hold_budget_left(usage: Usage, user_id: str, now: float, config: PolicyConfig) -> float:
    """Seconds ``user_id``'s loops may still be held: ``loop_hold_budget_s`` less what they
    were held in the ``loop_hold_window_s`` up to ``now``."""
    since = now - config.loop_hold_window_s
    used = sum(max(0.0, end - max(start, since)) for start, end in usage.held.get(user_id, ()))
    return config.loop_hold_budget_s - used


def _charge(
    usage: Usage, account: str, started_at: float, finished_at: float, config: PolicyConfig
) -> Usage:
    factor = 0.5 ** (max(0.0, finished_at - usage.as_of) / config.usage_half_life_s)
    seconds = {k: v * factor for k, v in usage.qpu_seconds.items() if v * factor >= 1e-6}
    seconds[account] = seconds.get(account, 0.0) + (finished_at - started_at)
    return Usage(seconds, max(usage.as_of, finished_at), usage.class_served_at, usage.held)


@dataclass(frozen=True)
class RunChunk:
    job_id: int
    shots: int


@dataclass(frozen=True)
class Calibrate:
    pass


@dataclass(frozen=True)
class Idle:
    """Nothing to do before ``until`` (None: until something changes)."""

    until: float | None


@dataclass(frozen=True)
class HoldForLoop:
    """Keep the QPU for hybrid loop ``loop`` until ``until`` or its next job (rule 9)."""

    loop: str
    until: float


Decision = RunChunk | Calibrate | Idle | HoldForLoop


@dataclass(frozen=True)
class LoopPause:
    """A hybrid loop between two of its jobs: its last job ended and it has none queued; the
    QPU may be held for it until ``until`` (rule 9). The dispatcher keeps it
    (:func:`loop_pause` when a loop's job ends) and drops it when anything else runs."""

    loop: str
    account: str
    user_id: str
    until: float
    job_class: str
    """The class of the loop's last job: who outranks it (:func:`yields`)."""

    def owns(self, job: QueuedJob) -> bool:
        """Whether ``job`` is this loop's: loop ids are the user's own, so another user's job
        naming the same loop never rides this one's pause."""
        return job.loop == self.loop and job.user_id == self.user_id


def loop_pause(
    job: QueuedJob,
    ended_at: float,
    config: PolicyConfig,
    reservations: Sequence[Reservation] = (),
) -> LoopPause | None:
    """The pause after ``job``, its loop's last queued job, ended at ``ended_at`` (None: not a
    loop's job, or holds are off): its expected think time, at most ``loop_hold_max_s``. None
    too when a reservation is in force then or begins before the pause would end: a loop
    cannot carry a window's hold past its end."""
    if job.loop is None or config.loop_hold_max_s <= 0:
        return None
    think = config.loop_hold_max_s if job.think_time_s is None else job.think_time_s
    until = ended_at + min(think, config.loop_hold_max_s)
    if any(r.starts_at < until and r.ends_at > ended_at for r in reservations):
        return None
    return LoopPause(job.loop, job.account, job.user_id, until, job.job_class)


def yields(
    pause: LoopPause, job: QueuedJob, now: float, device: DeviceView, config: PolicyConfig
) -> bool:
    """Whether ``job``, outside the paused loop (another user's, or its owner's other work),
    ends the loop's claim on the QPU: its class
    outranks the loop's (configured priorities), or is the loop's own and interactive (the
    class cells submit, ``cell_job_class``), and it has waited longer than
    ``loop_yield_after_chunks`` chunk durations."""
    theirs = config.class_priority.get(job.job_class, 0)
    mine = config.class_priority.get(pause.job_class, 0)
    interactive = job.job_class == pause.job_class == config.cell_job_class
    waited = now - job.created_at
    return (theirs > mine or interactive) and waited > (
        config.loop_yield_after_chunks * device.chunk_duration_s
    )


def bounded_pause(
    pause: LoopPause | None,
    usage: Usage,
    yielded: bool,
    now: float,
    config: PolicyConfig,
) -> LoopPause | None:
    """``pause`` as far as the bounds allow: None once its user's hold budget is spent or when
    work outside the loop has waited too long (``yielded``, :func:`yields`); else ending by the time
    the budget runs out."""
    if pause is None or yielded:
        return None
    left = hold_budget_left(usage, pause.user_id, now, config)
    if left <= 0:
        return None
    return replace(pause, until=min(pause.until, now + left))


def pause_clear_of(
    pause: LoopPause | None, reservations: Sequence[Reservation], device: DeviceView, now: float
) -> LoopPause | None:
    """``pause`` unless a reservation holds or begins before it ends, or moves the next
    calibration: rule 8 goes before rule 9, so a hold never runs into a window."""
    if pause is None:
        return None
    if calibration_due_at(device, now, reservations) != device.next_calibration_at:
        return None
    if any(r.starts_at < pause.until and r.ends_at > now for r in reservations):
        return None
    return pause


def hold_or(
    decision: Decision,
    pause: LoopPause | None,
    loop_job: QueuedJob | None,
    waiting_accounts: int,
    device: DeviceView,
    now: float,
    config: PolicyConfig,
) -> Decision:
    """Rule 9 applied to rules 1–7's ``decision``, for a loop paused until ``pause.until``.

    ``loop_job`` is the loop's first queued candidate (by arrival), ``waiting_accounts`` the
    fair-share accounts with candidates outside the loop. The loop's next job runs first when
    it can (rules 5–7's chunk). Otherwise, when ``decision`` would start a chunk of ``c``
    seconds for someone else: holding the ``r = until − now`` seconds left costs each waiting
    account ``r``; releasing costs the loop ``c − r`` (its next job, arriving at ``until``,
    waits for the rest of that chunk). Hold while ``r × waiting_accounts < c − r``; else
    release, the chunk shrunk to end by ``until`` (it is the loop's turn then). A due
    calibration or a wait goes ahead; no hold outlasts the calibration window.
    """
    if pause is None or now >= pause.until or not isinstance(decision, RunChunk):
        return decision
    if loop_job is not None:
        before_window = device.shots_before(device.next_calibration_at - now)
        fits = _runnable_shots(loop_job, device, now, before_window, config)
        if fits:
            return RunChunk(loop_job.id, min(loop_job.remaining, device.chunk_shots, fits))
        return decision
    left = min(pause.until, device.next_calibration_at) - now
    if left * waiting_accounts < device.seconds_for(decision.shots) - left:
        return HoldForLoop(pause.loop, now + left)
    fits = device.shots_before(left)
    return RunChunk(decision.job_id, min(decision.shots, fits)) if fits else decision


def class_priorities(
    queue: Sequence[QueuedJob], device: DeviceView, now: float, config: PolicyConfig, usage: Usage
) -> dict[str, float]:
    """Each queued class's effective priority: its configured priority plus aging.

    A class ages while it has work queued and gets no QPU time: from the later of its oldest
    queued job's arrival and the end of its last chunk. Aging is per class, not per job, so a
    production backlog that is being served does not outrank interactive work just because
    its last jobs were submitted long ago; only a class that gets nothing rises. Aging needs
    that history: until ``usage`` has recorded a chunk, the policy cannot tell a starved class
    from one being served, and priorities stay strict.
    """
    oldest: dict[str, float] = {}
    for job in queue:
        oldest[job.job_class] = min(oldest.get(job.job_class, math.inf), job.created_at)
    return {
        job_class: effective_priority(job_class, arrived, device, now, config, usage)
        for job_class, arrived in oldest.items()
    }


def effective_priority(
    job_class: str,
    oldest_arrival: float,
    device: DeviceView,
    now: float,
    config: PolicyConfig,
    usage: Usage,
) -> float:
    """One class's effective priority (:func:`class_priorities`), given its oldest queued job's
    arrival: the same for every job of the class, which is what lets
    :class:`~qhpc_lab.scheduler.ranking.RankedQueue` keep the order incrementally."""
    aging = config.aging_per_chunk if usage.class_served_at else 0.0
    waiting_since = max(oldest_arrival, usage.class_served_at.get(job_class, -math.inf))
    waited_chunks = max(0.0, now - waiting_since) / device.chunk_duration_s
    return config.class_priority.get(job_class, 0) + aging * waited_chunks


def fair_share(
    account: str, session_id: str | None, slots: Mapping[str, int], usage: Usage
) -> float:
    """An account's fair-share key: its decayed QPU-seconds per slot (lower runs first).

    Sessionless jobs and sessions missing from ``slots`` count one slot; it is the same for
    every job of the account, which is what lets the order be kept incrementally.
    """
    share = max(1, slots.get(session_id, 1)) if session_id is not None else 1
    return usage.qpu_seconds.get(account, 0.0) / share


def order(
    queue: Sequence[QueuedJob],
    slots: Mapping[str, int],
    device: DeviceView,
    now: float,
    config: PolicyConfig,
    usage: Usage = NO_USAGE,
) -> list[QueuedJob]:
    """The queue in the order the policy would serve it.

    1. effective class priority (:func:`class_priorities`), higher first; on a tie the higher
       configured priority first, so aging overtakes only strictly;
    2. fair share: the account's decayed QPU-seconds divided by its slots (``slots`` maps
       session ids to their Slurm ``qpu:N`` shares; sessionless jobs and unknown sessions
       count 1 slot), lower first;
    3. arrival (FIFO within an account), then job id.
    """
    priority = class_priorities(queue, device, now, config, usage)

    def rank(job: QueuedJob) -> tuple[float, int, float, float, int]:
        used = fair_share(job.account, job.session_id, slots, usage)
        base = config.class_priority.get(job.job_class, 0)
        return (-priority[job.job_class], -base, used, job.created_at, job.id)

    return sorted(queue, key=rank)


def shots_within(seconds: float, time_per_shot_s: float) -> int:
    """Whole shots that fit in ``seconds`` (never negative)."""
    return max(0, math.floor(seconds / time_per_shot_s + _SLACK))


def age_bound(job: QueuedJob, config: PolicyConfig, setup_s: float = 0.0) -> float | None:
    """The calibration age every shot of ``job`` must start within, as honoured (None: any):
    never under ``min_calibration_age_s``, nor under the device's setup (``setup_s``: a
    chunk's first shot starts that long after a calibration at the earliest)."""
    if job.max_calibration_age_s is None:
        return None
    return max(job.max_calibration_age_s, config.min_calibration_age_s, setup_s)


def shots_within_age(
    job: QueuedJob,
    calibration_age_s: float,
    time_per_shot_s: float,
    config: PolicyConfig,
    setup_s: float = 0.0,
) -> int:
    """How many of ``job``'s shots may start back to back, from a calibration this old at the
    first shot, within the job's calibration-age bound (:func:`age_bound`, the device's
    ``setup_s`` its floor): ``job.remaining`` without a bound, 0 once it is exceeded."""
    bound = age_bound(job, config, setup_s)
    if bound is None:
        return job.remaining
    if calibration_age_s > bound:
        return 0
    return shots_within(bound - calibration_age_s, time_per_shot_s) + 1


def single_calibration_refusal(
    shots: int, max_calibration_age_s: float | None, device: DeviceView, config: PolicyConfig
) -> str | None:
    """Why a single-calibration job of ``shots`` can never run under one calibration (None when
    it can): its shots take longer than the calibration interval, or than its age bound lets
    shots start after a fresh calibration. One chunk duration is kept in hand for dispatch
    latency: a job that fitted only to the millisecond would make rule 7 calibrate again and
    again, each fresh calibration found a little too old."""
    seconds = device.seconds_for(shots)
    slack, interval = device.chunk_duration_s, device.calibration_interval_s
    if device.shots_before(interval - slack) < shots:
        return (
            f"{shots} shots take {seconds:g} s, longer than one calibration leaves for them "
            f"({interval - slack:g} s: its {interval:g} s less one chunk): split the job or "
            "drop single_calibration"
        )
    probe = QueuedJob(0, "", None, "", shots, 0, 0.0, max_calibration_age_s)
    age = slack + device.setup_s  # the first shot's, after a calibration one chunk old
    if shots_within_age(probe, age, device.time_per_shot_s, config, device.setup_s) < shots:
        bound = age_bound(probe, config, device.setup_s)
        return (
            f"{shots} shots take {seconds:g} s, more than the job's max_calibration_age_s "
            f"({bound:g} s) lets run under one calibration"
        )
    return None


def _runnable_shots(
    job: QueuedJob, device: DeviceView, now: float, before_window: int, config: PolicyConfig
) -> int:
    """Shots ``job`` may run back to back now under this calibration (rules 5–7); 0: it waits
    for a calibration."""
    first_shot_age = now - device.calibrated_at + device.setup_s
    within_age = shots_within_age(
        job, first_shot_age, device.time_per_shot_s, config, device.setup_s
    )
    fits = min(within_age, before_window)
    if job.single_calibration and not job.started and fits < job.remaining:
        return 0
    return fits


def decide(
    queue: Sequence[QueuedJob],
    slots: Mapping[str, int],
    device: DeviceView,
    now: float,
    config: PolicyConfig,
    usage: Usage = NO_USAGE,
    reservations: Sequence[Reservation] = (),
    pause: LoopPause | None = None,
) -> Decision:
    """The next action for an idle QPU (rules 1–8 of this module's docstring).

    ``slots`` maps session ids to their QPU shares; ``usage`` is the dispatcher's
    :class:`Usage`, updated with :func:`record_chunk` after every chunk; ``reservations``
    the operator's windows (ended ones are ignored); ``pause`` the hybrid loop the QPU may be
    held for (rule 9).
    """
    decision = _decide(queue, slots, device, now, config, usage, reservations)
    pause = pause_clear_of(pause, reservations, device, now)
    if pause is None:
        return decision
    candidates = [j for j in queue if j.remaining > 0 and (device.accepting or j.started)]
    mine = [j for j in candidates if pause.owns(j)]
    loop_job = min(mine, key=lambda j: (j.created_at, j.id), default=None)
    outside = [j for j in candidates if not pause.owns(j)]
    yielded = any(yields(pause, j, now, device, config) for j in outside)
    pause = bounded_pause(pause, usage, yielded, now, config)
    if pause is None:
        return decision
    others = {j.account for j in outside}
    return hold_or(decision, pause, loop_job, len(others), device, now, config)


def _decide(
    queue: Sequence[QueuedJob],
    slots: Mapping[str, int],
    device: DeviceView,
    now: float,
    config: PolicyConfig,
    usage: Usage,
    reservations: Sequence[Reservation],
) -> Decision:
    """Rules 1–8."""
    if device.state in (DeviceState.MAINTENANCE, DeviceState.OFFLINE):
        return Idle(None)
    if device.state is DeviceState.CALIBRATING:
        return Idle(now + device.calibration_duration_s)
    due = calibration_due_at(device, now, reservations)
    if now >= due:
        return Calibrate()
    before_window = device.shots_before(due - now)
    room = {j.id: _reserved_room(j, reservations, now, device) for j in queue}
    candidates = [
        j
        for j in queue
        if j.remaining > 0
        and (device.accepting or j.started)
        and room[j.id] > 0
        and (room[j.id] >= j.remaining or not j.single_calibration or j.started)
    ]
    if not candidates:
        return Idle(min(due, reserving.next_boundary(reservations, now)))
    if before_window == 0:
        return Calibrate()
    priority = class_priorities(candidates, device, now, config, usage)
    ranked = order(candidates, slots, device, now, config, usage)
    top = priority[ranked[0].job_class]
    for job in ranked:
        fits = min(_runnable_shots(job, device, now, before_window, config), room[job.id])
        if fits == 0:
            continue
        if priority[job.job_class] < top and device.calibrates:
            break  # a fresher calibration would let the better-ranked job run instead
        return RunChunk(job.id, min(job.remaining, device.chunk_shots, fits))
    return calibrate_unless_pinned(ranked, device, now, before_window, config, room)


def calibrate_unless_pinned(
    ranked: Sequence[QueuedJob],
    device: DeviceView,
    now: float,
    before_window: int,
    config: PolicyConfig,
    room: Mapping[int, int] | None = None,
) -> Decision:
    """An early calibration, unless a started single-calibration job can still run (rule 7):
    then its next chunk, the best-ranked such job's (within its ``room`` before a reservation)."""
    for job in ranked:
        if job.single_calibration and job.started:
            fits = _runnable_shots(job, device, now, before_window, config)
            fits = min(fits, room[job.id]) if room is not None else fits
            if fits:
                return RunChunk(job.id, min(job.remaining, device.chunk_shots, fits))
    return Calibrate() if device.calibrates else Idle(None)


def calibration_due_at(
    device: DeviceView, now: float, reservations: Sequence[Reservation] = ()
) -> float:
    """When the next periodic calibration starts: ``device.next_calibration_at``, or just before
    a reservation it would fall inside (rule 8, :func:`reservations.calibration_due`)."""
    if not reservations:
        return device.next_calibration_at
    return reserving.calibration_due(
        now,
        device.next_calibration_at,
        device.calibrated_at,
        device.calibration_interval_s,
        device.calibration_duration_s,
        reservations,
    )


def _reserved_room(
    job: QueuedJob, reservations: Sequence[Reservation], t: float, device: DeviceView
) -> int:
    """Shots of ``job`` that may run from ``t`` before a window it does not own (at most its
    remaining shots)."""
    closed = reserving.closed_from(job, reservations, t) if reservations else math.inf
    if closed == math.inf:
        return job.remaining
    return min(job.remaining, device.shots_before(closed - t))


def estimates(
    queue: Sequence[QueuedJob],
    device: DeviceView,
    now: float,
    config: PolicyConfig,
    slots: Mapping[str, int] | None = None,
    usage: Usage = NO_USAGE,
    reservations: Sequence[Reservation] = (),
) -> dict[int, tuple[int, float]]:
    """Queue position (1 = next) and seconds until each job is expected to finish.

    Jobs run one after the other in today's :func:`order`, with no new arrivals; periodic
    calibrations, and early ones for jobs past their calibration-age bound, are included. A job
    waits out the reservations it does not own (the owner's jobs are not moved ahead of it).
    """
    result: dict[int, tuple[int, float]] = {}
    t = now
    calibrated_at = device.calibrated_at
    ranked = order(queue, slots or {}, device, now, config, usage)
    for position, job in enumerate(ranked, start=1):
        t, calibrated_at = run_through(job, t, calibrated_at, device, config, reservations)
        result[job.id] = (position, max(0.0, t - now))
    return result


def run_through(
    job: QueuedJob,
    t: float,
    calibrated_at: float,
    device: DeviceView,
    config: PolicyConfig,
    reservations: Sequence[Reservation] = (),
) -> tuple[float, float]:
    """When ``job``'s remaining shots end, and the last calibration before, if it starts at ``t``
    with the device calibrated at ``calibrated_at``: :func:`estimates`' model of one job,
    periodic calibrations and early ones for its calibration-age bound included, and the
    windows of reservations it does not own skipped (a calibration falling due in one is
    counted after it)."""
    left = job.remaining
    while left > 0:
        due = calibrated_at + device.calibration_interval_s
        if reservations:
            t = reserving.open_at(job, reservations, t)
            due = reserving.calibration_due(
                t,
                due,
                calibrated_at,
                device.calibration_interval_s,
                device.calibration_duration_s,
                reservations,
            )
        fits = min(
            shots_within(due - t, device.shot_share_s),
            shots_within_age(job, t - calibrated_at, device.shot_share_s, config),
        )
        if reservations and fits > 0:
            room = _reserved_room(job, reservations, t, device)
            if room == 0:
                t = reserving.closed_from(job, reservations, t)
                continue
            fits = min(fits, room)
        if fits == 0:
            t += device.calibration_duration_s
            calibrated_at = t
            continue
        run = min(left, fits)
        t += run * device.shot_share_s
        left -= run
    return t, calibrated_at
