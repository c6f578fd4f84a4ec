"""The one interface every target implements, the snapshots it returns, and the client's errors.

A target is where a program runs: the second-level scheduler, a QRMI resource or the in-kernel
emulator. Like httpx's transport seam, the interface is a handful of coroutines; they all run
on the client's own event loop (:mod:`qhpc_lab.client._loop`), so a target is written once and
serves blocking scripts, notebooks and ``await`` alike.
"""

from __future__ import annotations

import abc
import warnings
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

from qhpc_lab.programs import DeviceSpec, Program
from qhpc_lab.vocabulary import (
    FINAL_STATUSES,
    UNIT_NAMES,
    DeviceState,
    JobStatus,
    format_duration,
    format_position,
    start_in_s,
)
from qhpc_lab.wire.times import iso_time


class ClientError(Exception):
    """A problem the user can act on; its message is one line meant for them."""


class TargetError(ClientError):
    """A target that is unknown, unreachable or failing: nothing was queued."""


class RefusedError(ClientError):
    """The target answered and refused the request (a 4xx naming the rule that failed)."""

    def __init__(self, message: str, status: int | None = None, rule: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.rule = rule


class AnswerError(ClientError):
    """The target answered in a form this client does not read (a server that is neither our
    scheduler nor Warden, or a version of them it does not know). The request may have taken
    effect (a job queued); the message names the target and the offending value."""


class JobError(ClientError):
    """A result was asked of a job that ended without one (ERROR or CANCELED)."""

    def __init__(self, message: str, status: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class CalibrationRange:
    """Consecutive shots of a job that ran under one calibration of the device."""

    id: int
    """The calibration's number: the device counts its calibrations."""
    calibrated_at: datetime | None
    shots_from: int
    """First shot of the range, counted from 1."""
    shots_to: int
    """Last shot of the range (inclusive)."""
    age_s_first: float
    """Calibration age when the range's first shot began."""
    age_s_last: float
    """Calibration age when the range's last shot ended."""
    drift: dict[str, float] = field(default_factory=dict, compare=False)
    """The calibration's drift parameters (readout error fresh, per hour, max)."""

    @property
    def shots(self) -> int:
        return self.shots_to - self.shots_from + 1

    @property
    def label(self) -> str:
        """``calibration #4 (age 12 s–40 s)``: which calibration, and how old it was."""
        ages = f"{format_duration(self.age_s_first)}–{format_duration(self.age_s_last)}"
        return f"calibration #{self.id} (age {ages})"

    def __str__(self) -> str:
        return f"shots {self.shots_from}–{self.shots_to} under {self.label}"


@dataclass(frozen=True)
class LoopMark:
    """What a submission in a hybrid loop carries: the hybrid loop's id and the pause it
    expects after this job (None: unknown). Only a scheduler target acts on it."""

    loop: str
    think_time_s: float | None


@dataclass(frozen=True)
class JobState:
    """A job as its target last described it; targets return a new one on every change."""

    id: str
    status: str
    """PENDING, RUNNING, DONE, ERROR or CANCELED."""
    shots: int | None = None
    shots_done: int = 0
    position: int | None = None
    """1 = next to run, 0 = running, None when finished or unknown."""
    end_in_s: float | None = None
    """Seconds until it is expected to end (the wire's ``eta_s``); None when final, held or
    unknown."""
    time_per_shot_s: float | None = None
    """The device's time per shot, where the target says (scheduler targets): what
    :attr:`start_in_s` takes off :attr:`end_in_s`."""
    held_by: str | None = None
    """``maintenance`` or ``draining`` while an operator's hold keeps the job waiting."""
    counts: dict[str, int] | None = None
    error: str | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    calibration_age_s: float | None = None
    """Age of the device's calibration when the job's shots ran (scheduler targets)."""
    calibrations: tuple[CalibrationRange, ...] = ()
    """The calibrations its shots ran under, in shot order (scheduler targets)."""
    qpu_seconds: float | None = None
    """Device time its shots used so far (scheduler targets); None where the target does not
    account for it."""
    detail: str | None = None
    """What the system running the job says of it, in its words (cluster emulator: the batch
    job's reason for waiting and expected start, or the node and GPUs it runs on)."""
    engine: str | None = None
    """The emulator engine that produced the counts, where the target says (the emulators)."""
    approximation: str | None = None
    """How the counts are approximate (emu-mps: its bond dimension, precision); None where the
    engine is exact or the target does not say."""
    sets: int | None = None
    """A sweep's number of (shots, variables) sets; None for a plain job."""
    sets_done: int | None = None
    """A sweep's sets run to their end (they run in order)."""

    @property
    def final(self) -> bool:
        return self.status in FINAL_STATUSES

    @property
    def start_in_s(self) -> float | None:
        """Seconds until it is expected to start: 0 once started; for a waiting job its
        :attr:`end_in_s` less its own shots' time; None when final, held or unknown."""
        if self.status == JobStatus.RUNNING or self.position == 0:
            return 0.0
        if self.end_in_s is None or self.time_per_shot_s is None or self.shots is None:
            return None
        return start_in_s(self.end_in_s, self.shots - self.shots_done, self.time_per_shot_s)

    @property
    def eta_s(self) -> float | None:
        """Deprecated: :attr:`end_in_s` (or :attr:`start_in_s`: an ETA is one or the other)."""
        warnings.warn(
            "JobState.eta_s is deprecated and will be removed: use end_in_s (or start_in_s)",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.end_in_s


@dataclass(frozen=True)
class SetResult:
    """One point of a sweep: the variables it bound and the counts its shots gave."""

    index: int
    """Its place in the sweep (0-based, as submitted)."""
    variables: dict[str, Any]
    counts: dict[str, int]

    @property
    def shots(self) -> int:
        return sum(self.counts.values())

    @property
    def probabilities(self) -> dict[str, float]:
        """Each bitstring's frequency, most frequent first."""
        return frequencies(self.counts)


def ranked_counts(counts: dict[str, int]) -> list[tuple[str, int]]:
    """Bitstrings by count, most frequent first (ties by bitstring): as results show them."""
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))


def frequencies(counts: dict[str, int]) -> dict[str, float]:
    """Each bitstring's frequency, most frequent first (a job's or one sweep set's)."""
    total = sum(counts.values()) or 1
    return {bits: count / total for bits, count in ranked_counts(counts)}


@dataclass(frozen=True)
class Estimate:
    """Where a program would stand if submitted now (the scheduler's ``GET /estimate``)."""

    position: int
    """1 = next to run."""
    done_in_s: float | None
    """Seconds until it would end: the queue ahead, calibrations, its own run; None while a
    hold (``held_by``) keeps new jobs waiting."""
    run_s: float
    held_by: str | None = None
    calibration_age_s: float | None = None
    waiting: int | None = None
    """Jobs waiting on the device, every user's."""
    yours: tuple[int, ...] = ()
    """The caller's own active jobs' places (0 = running), nearest first."""
    target: str | None = None
    """The target that answered."""

    @property
    def end_in_s(self) -> float | None:
        """Seconds until it would end (the wire's ``done_in_s``; None while held)."""
        return self.done_in_s

    @property
    def start_in_s(self) -> float | None:
        """Seconds until it would start: its estimated end less its own run (None while held)."""
        return None if self.done_in_s is None else max(0.0, self.done_in_s - self.run_s)

    def __str__(self) -> str:
        where = f"{self.target}: " if self.target else ""
        waiting = None if self.waiting is None else self.waiting + 1  # itself among them
        head = f"{where}{format_position(self.position, waiting)}"
        if self.done_in_s is None:
            return f"{head}, held by {self.held_by}: no start or end time while the hold lasts"
        start, end, run = (
            format_duration(s) for s in (self.start_in_s, self.done_in_s, self.run_s)
        )
        return f"{head}, starts in ~{start}, ends in ~{end} (its own run ~{run})"


@dataclass(frozen=True)
class Quota:
    """A budget the caller's jobs are charged to on a scheduler, and its use this period
    (``GET /quotas``, docs/policy.md "Quotas"): what a submission past it is refused over."""

    target: str
    kind: str
    """``user`` or ``account`` (a Slurm account, through the job's session)."""
    subject: str
    """The uid or the account's name."""
    unit: str
    """``qpu_seconds`` or ``shots``."""
    budget: float
    used: float
    """Charged this period: ended jobs' use, active jobs' use and what their shots left cost."""
    remaining: float
    period: str
    """``day``, ``week``, ``month`` (UTC calendar) or ``<N>s``."""
    resets_at: datetime

    def __str__(self) -> str:
        unit = UNIT_NAMES.get(self.unit, self.unit)
        share = f" ({100 * self.used / self.budget:.0f}%)" if self.budget else ""
        resets = iso_time(self.resets_at, sep=" ", timespec="minutes")
        return (
            f"{self.target}: {self.kind} {self.subject}: {self.used:g} of {self.budget:g} {unit} "
            f"used this {self.period}{share}, resets at {resets}"
        )


@dataclass(frozen=True)
class TargetInfo:
    """What probing a target found; an unreachable target is listed too, with the reason."""

    name: str
    kind: str
    """scheduler, qrmi, emulator or cluster-emulator."""
    type: str
    """The resource type: pasqal-local, pasqal-cloud, ..., scheduler or emulator."""
    origin: str
    """Where the target was found: the QRMI variables, a targets file, or built in."""
    reachable: bool
    url: str | None = None
    device: str | None = None
    state: str | None = None
    """Device state: ONLINE, CALIBRATING, MAINTENANCE, OFFLINE (qrmi: PAUSED)."""
    calibration_age_s: float | None = None
    message: str = ""
    """The device's notice when reachable, why not otherwise."""
    selected: bool = False
    """True for the target that ``submit()`` uses when none is named; for each of the job's
    QPU resources when there are several (it chooses among them per program)."""
    queued: int | None = None
    """Jobs waiting to run on the device, every user's (scheduler targets)."""
    queue_start_in_s: float | None = None
    """Seconds until a job submitted now would start: the queue ahead and calibrations (scheduler
    targets; None while a hold keeps new jobs waiting, or where the server cannot say)."""
    yours: tuple[int, ...] = ()
    """The user's own active jobs' places in the queue (0 = running), nearest first."""
    spec: DeviceSpec | None = field(default=None, repr=False, compare=False)
    """Device specs that programs are checked against before submission, when known."""
    formats: tuple[str, ...] = ("pulser",)
    """Program formats the target runs; ``submit()`` refuses others before sending them. A
    server that does not say (plain Warden) runs pulser, Warden's own rule."""
    cell_job_class: str | None = None
    """The class the site gives ``%%qpu`` cells that name none (our scheduler's ``/device``);
    None where the target does not say (``development`` then)."""

    def __str__(self) -> str:
        mark = "*" if self.selected else " "
        if not self.reachable:
            return f"{mark} {self.name:14} {self.type:27} unreachable: {self.message}"
        details = [self.device or "?", self.state or "state unknown"]
        if self.calibration_age_s is not None:
            details.append(f"calibrated {format_duration(self.calibration_age_s)} ago")
        if self.queued is not None:
            details.append(self.queue_summary)
        note = f" — {self.message}" if self.message else ""
        return f"{mark} {self.name:14} {self.type:27} {', '.join(details)}{note}"

    @property
    def down(self) -> bool:
        """Whether its device runs nothing now (maintenance, or the QPU says DOWN): ``"auto"``
        passes it over, and the panel shows the device's reason."""
        return self.state in (DeviceState.MAINTENANCE, DeviceState.OFFLINE)

    @property
    def queue_summary(self) -> str:
        """``3 waiting, yours 2nd of 3 waiting, a new job starts in ~40 s``: the queue as a
        user reads it."""
        parts = [f"{self.queued} waiting"]
        if self.yours:
            places = ", ".join(format_position(p, self.queued) for p in self.yours)
            parts.append(f"yours {places}")
        if self.queue_start_in_s is not None:
            parts.append(f"a new job starts in ~{format_duration(self.queue_start_in_s)}")
        return ", ".join(parts)


class Target(abc.ABC):
    """Where programs run. Methods are coroutines run on the client's loop; none may block it.

    Errors: :class:`TargetError` when the target cannot be reached, :class:`RefusedError`
    when it refuses a request. ``info`` never raises: an unreachable target says so.
    """

    kind: ClassVar[str]
    url: str | None = None
    bounds_calibration_age: ClassVar[bool] = True
    """Whether a job's ``max_calibration_age_s`` is honoured (a QRMI resource promises none)."""

    def __init__(
        self, name: str, type: str, origin: str, job_timeout_s: float | None = None
    ) -> None:
        self.name = name
        self.type = type
        self.origin = origin
        self.job_timeout_s = job_timeout_s
        """How long waiting for a job may take by default (``{name}_QRMI_JOB_TIMEOUT_SECONDS``)."""

    @abc.abstractmethod
    async def info(self) -> TargetInfo:
        """Probe the target: reachability, device, state, calibration and specs."""

    @abc.abstractmethod
    async def submit(
        self,
        program: Program,
        job_class: str | None,
        single_calibration: bool = False,
        max_calibration_age_s: float | None = None,
        loop: LoopMark | None = None,
    ) -> JobState:
        """Queue ``program`` (already checked against the specs ``info`` gave);
        ``single_calibration``: all its shots under one calibration of the device;
        ``max_calibration_age_s``: every shot starts within that age of a calibration;
        ``loop``: the hybrid loop it belongs to (a scheduler may hold the QPU between
        its jobs; other targets have no one to hold it from and ignore it)."""

    async def submit_sweep(
        self,
        program: Program,
        sets: Sequence[tuple[int, dict[str, Any]]],
        job_class: str | None,
        single_calibration: bool = False,
        max_calibration_age_s: float | None = None,
        loop: LoopMark | None = None,
    ) -> JobState:
        """Queue ``program`` once per set (shots, variables) as one job, a sweep. Only a
        scheduler runs sweeps: elsewhere RefusedError (rule ``sweep``)."""
        raise RefusedError(
            f"target {self.name!r} ({self.type}) cannot run a sweep as one job: submit it to a "
            "scheduler target, or submit one job per point",
            rule="sweep",
        )

    async def sweep_sets(self, job_id: str) -> tuple[SetResult, ...]:
        """A sweep's results per set, in the order submitted (none for a plain job)."""
        return ()

    @abc.abstractmethod
    async def state(self, job_id: str) -> JobState:
        """The job's current state."""

    @abc.abstractmethod
    async def cancel(self, job_id: str) -> JobState:
        """Cancel the job if it is not finished; return its state afterwards."""

    @abc.abstractmethod
    def watch(self, job_id: str) -> AsyncIterator[JobState]:
        """Yield the job's current state, then each change, ending after a final state."""

    async def watch_device(self) -> AsyncIterator[TargetInfo]:
        """Yield the target's info, then each change of its device (state, calibration, queue
        length), until the caller stops; a target without a change feed yields it once."""
        yield await self.info()

    async def estimate(
        self, shots: int, job_class: str | None, max_calibration_age_s: float | None = None
    ) -> Estimate | None:
        """Where a job of ``shots`` would stand if submitted now; None where the target
        cannot say (it is then chosen last among several, docs/client.md)."""
        return None

    async def timeline(self, job_id: str) -> list[dict[str, Any]] | None:
        """Why the job waited, as the scheduler's ``GET /jobs/{id}/timeline`` entries (see
        docs/operations.md); None where the target keeps no timeline."""
        return None

    async def jobs(self) -> list[JobState] | None:
        """Every job of the caller the target knows, from any process, oldest first; None
        where it cannot list them (then only the jobs submitted from this process are known)."""
        return None

    async def logs(self, job_id: str) -> str:
        """The job's story as text. Here, for targets that keep no log (the in-kernel
        emulator): what this process knows of it, its status, shots and times."""
        state = await self.state(job_id)
        shots = "" if state.shots is None else f", {state.shots_done}/{state.shots} shots done"
        lines = [
            f"{self.name} keeps no log; what this process knows of job {state.id}:",
            f"job {state.id} ({self.type}): {state.status}{shots}",
        ]
        moments = [
            ("queued", state.created_at),
            ("started", state.started_at),
            (f"finished {state.status}", state.finished_at),
        ]
        lines += [
            f"{iso_time(at, sep=' ', timespec='milliseconds')}  {what}"
            for what, at in moments
            if at is not None
        ]
        if state.error:
            lines.append(f"error: {state.error}")
        return "\n".join(lines)

    async def quotas(self) -> list[Quota] | None:
        """The caller's quotas and their use; None where the target reports none (QRMI
        resources, a plain Warden), though its provider may have some."""
        return None

    async def aclose(self) -> None:  # noqa: B027 (optional: a target may hold nothing)
        """Release connections and workers."""

    def unreachable(self, message: str) -> TargetInfo:
        """The info of this target when it cannot be used, saying why."""
        return TargetInfo(
            self.name, self.kind, self.type, self.origin, False, url=self.url, message=message
        )
