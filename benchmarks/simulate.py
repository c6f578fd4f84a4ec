"""Scheduling-policy benchmark: four policies over one workload trace on a virtual clock.

The trace (seeded, ``benchmarks/traces.py``) mixes what a shared QPU sees at an HPC centre:
interactive variational loops (small ``development`` jobs, each sent when the user has looked
at the last result and thought), production campaigns (tens of thousands of shots in many jobs,
one of them asking for a calibration younger than an hour), ``test`` jobs, and the device's
periodic calibrations. The same trace is replayed under

- **exclusive**: first-level allocation only. Every stream (a loop, a campaign, a test job) is a
  Slurm job that holds the whole QPU from its start to its last result, think time included;
  Slurm serves them first come, first served;
- **job FIFO**: one queue, whole jobs in arrival order (Warden's first policy);
- **slot-weighted FIFO**: whole jobs, sessions served round robin weighted by their slots,
  FIFO inside a session (our model of Warden's later policy);
- **ours**: the daemon's own decision (:meth:`qhpc_lab.scheduler.ranking.RankedQueue.decide`,
  :func:`qhpc_lab.scheduler.policy.decide` kept incrementally).

Every policy runs in the daemon's dispatcher loop (:mod:`qhpc_lab.scheduler.dispatcher`) on a
virtual clock with a simulated QPU: a chunk of ``n`` shots moves the clock by
``n × time_per_shot_s``, no sleeping. The baselines know nothing of calibration windows: a
calibration starts when it is due and no job is running, so a long job can overrun it. A second
trace floods the QPU with development work to show what aging does (ours with and without it).
Seeds 1–10 are replayed once more with the variational loops marked as hybrid loops (policy
rule 9: the QPU may be held for a loop between two of its jobs), and each loop's wall time is
compared with the same loop alone on an empty QPU. A site trace adds what an operator adds to
each of those seeds (``make_site_trace``): a one-hour reservation for one Slurm account whose
work arrives before and during it, and a quota on one campaign's user, applied at every
submission as the daemon applies it (``qhpc_lab.scheduler.quotas.refusal``).
Prints the report, writes ``docs/img/policy.png`` and the ``## Scheduling policy`` section of
``docs/benchmarks.md`` (nothing else in it; ``benchmarks/report.py``)::

    .venv/bin/python benchmarks/simulate.py [--profile fresnel-like] [--seed 7] [--hours 8]
        [--fresh-age-s 3600] [--seeds 10]
"""

from __future__ import annotations

import argparse
import math
import os
import random
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from qhpc_lab.qpu import ChunkOutcome, DeviceProfile, DeviceState
from qhpc_lab.scheduler import policy, quotas
from qhpc_lab.scheduler.dispatcher import (
    Dispatcher,
    Recorder,
    SimulatedQPU,
    VirtualClock,
    play,
    progress,
)
from qhpc_lab.scheduler.policy import Calibrate, Decision, Idle, QueuedJob, RunChunk
from qhpc_lab.scheduler.quotas import Quota
from qhpc_lab.scheduler.ranking import RankedQueue
from qhpc_lab.scheduler.reservations import Reservation

sys.path.insert(0, str(Path(__file__).parent))
from report import SessionRow, SiteRow, percentile, plot, section, summarise, write_section
from traces import Stream, make_flood_trace, make_site_trace, make_trace

ROOT = Path(__file__).resolve().parent.parent
COMMAND = ".venv/bin/python benchmarks/simulate.py"


@dataclass
class JobRecord:
    stream: int
    job_class: str
    submitted_at: float
    job: QueuedJob
    """The job as it was submitted."""
    first_shot_at: float | None = None
    finished_at: float | None = None
    shots_done: int = 0
    qpu_seconds: float = 0.0


@dataclass
class Run:
    """What one policy did with the trace."""

    policy: str
    jobs: dict[int, JobRecord] = field(default_factory=dict)
    busy_s: float = 0.0
    work_span_s: float = 0.0
    """Time during which some job was submitted and not finished."""
    calibrations: int = 0
    early_calibrations: int = 0
    shots: int = 0
    fidelity_sum: float = 0.0
    production_shots: int = 0
    production_fresh_shots: int = 0
    bounded_shots: int = 0
    bounded_within_shots: int = 0
    aged_chunks: int = 0
    """Chunks that started while a job of a higher configured class priority was queued."""
    starved_s: dict[str, float] = field(default_factory=dict)
    """Per class, the longest time it had work queued and got no QPU time."""
    timeline: list[tuple[float, float, str]] = field(default_factory=list)
    """What the QPU did: (start, end, job class or "calibration")."""
    most_interactive_queued: int = 0
    loop_wall_s: dict[str, float] = field(default_factory=dict)
    """Per variational loop (closed stream), its first submission to its last result."""
    held_s: float = 0.0
    """Time the QPU was held for hybrid loops (policy rule 9), idle meanwhile."""
    chunks: list[tuple[float, float, int]] = field(default_factory=list)
    """Every chunk that ran: (start, end, job id)."""
    refused: int = 0
    """Submissions a quota refused (they never entered the queue)."""
    quota_use: dict[tuple[str, float], float] = field(default_factory=dict)
    """Per quota and period start, the most it was charged after any submission or at the end."""


class Simulation(Recorder):
    """Replays a trace under one policy in the dispatcher loop, and tallies what happens."""

    def __init__(
        self,
        profile: DeviceProfile,
        streams: list[Stream],
        name: str,
        fresh_age_s: float,
        config: policy.PolicyConfig | None = None,
        sessions: bool = False,
        reservations: Sequence[Reservation] = (),
        quotas: Sequence[Quota] = (),
    ) -> None:
        self.profile = profile
        self.quotas = quotas
        """Checked at each submission, as the daemon does (``quotas.refusal``)."""
        self.sessions = sessions
        """Variational loops mark their jobs as a hybrid loop (``loop``, ``think_time_s``)."""
        self.streams = streams
        self.fresh_age_s = fresh_age_s
        self.config = config or policy.PolicyConfig()
        self.clock = VirtualClock()
        self.qpu = SimulatedQPU(
            self.clock,
            profile.time_per_shot_s,
            profile.calibration_duration_s,
            setup_s=profile.job_setup_s,
        )
        self.queue = RankedQueue(self.config)
        self.queue.set_reservations(reservations)
        for stream in streams:
            if stream.session_id is not None:
                self.queue.set_slots(stream.session_id, stream.slots)
        self.left = [len(s.shots) for s in streams]
        """Jobs of each stream not finished yet (0: the stream is done)."""
        self.run = Run(name)
        self._positions: dict[int, int] = {}
        """Each queued job's place in its stream."""
        self._ids = 0
        self._calibrated_at = self.qpu.calibrated_at
        for index, stream in enumerate(streams):
            for position in range(1 if stream.closed else len(stream.shots)):
                self._push(stream.start_s, index, position)

    @property
    def now(self) -> float:
        return self.clock.now()

    @property
    def calibrated_at(self) -> float:
        return self.qpu.calibrated_at

    @property
    def slots(self) -> dict[str, int]:
        return dict(self.queue.slots)

    @property
    def time_per_shot_s(self) -> float:
        """A shot's time with the chunk's setup spread over it, as the daemon counts it in
        ETAs and quota charges."""
        return self.profile.shot_share_s

    def device(self) -> policy.DeviceView:
        """The device as the daemon shows it to the policy: the shot time and, apart, the
        setup every chunk pays (the profile's ``job_setup_s``)."""
        return policy.DeviceView(
            state=DeviceState.ONLINE,
            calibrated_at=self.qpu.calibrated_at,
            calibration_interval_s=self.profile.calibration_interval_s,
            calibration_duration_s=self.profile.calibration_duration_s,
            time_per_shot_s=self.profile.time_per_shot_s,
            chunk_shots=self.profile.chunk_shots,
            setup_s=self.profile.job_setup_s,
        )

    def stream_of(self, job_id: int) -> int:
        return self.run.jobs[job_id].stream

    def play(self, choose: Callable[[Simulation], Decision] | None = None) -> Run:
        """Run the trace to its end; ``choose`` is a baseline (default: the daemon's policy)."""
        decide = None if choose is None else (lambda device, now: choose(self))
        dispatcher = Dispatcher(self.queue, self.qpu, self.clock, self.device, self, decide=decide)
        play(dispatcher, self.clock, lambda: not self.clock.pending and not len(self.queue))
        for quota in self.quotas:
            for _, period_start in [key for key in self.run.quota_use if key[0] == quota.name]:
                self._charge(quota, period_start)
        self.run.work_span_s = _union_length(_spans(self.run))
        return self.run

    def _push(self, at: float, stream: int, position: int) -> None:
        job_id = self._ids
        self._ids += 1
        self.clock.at(at, lambda: self._arrive(at, job_id, stream, position))

    def _arrive(self, at: float, job_id: int, index: int, position: int) -> None:
        stream = self.streams[index]
        in_session = self.sessions and stream.closed
        job = QueuedJob(
            id=job_id,
            user_id=stream.user_id,
            session_id=stream.session_id,
            job_class=stream.job_class,
            shots=stream.shots[position],
            shots_done=0,
            created_at=at,
            max_calibration_age_s=stream.max_calibration_age_s,
            slurm_account=stream.slurm_account,
            loop=stream.name if in_session else None,
            # What a session sends when given no think time: the loop's last pause.
            think_time_s=stream.think_s[position - 1] if in_session and position else None,
        )
        if self._refused(job):
            self.run.refused += 1
            # A loop stops at its first refusal: its next job needs this one's result.
            self.left[index] = 0 if stream.closed else self.left[index] - 1
            return
        self.queue.add(job)
        self.run.jobs[job_id] = JobRecord(index, stream.job_class, at, job)
        self._positions[job_id] = position
        for quota in self._quotas_on(job):
            self._charge(quota, quotas.period_bounds(quota, at)[0])

    # -- quotas, as the daemon applies them at submission ---------------------------------------

    def _quotas_on(self, job: QueuedJob) -> Iterable[Quota]:
        subject = {"user": job.user_id, "account": job.slurm_account}
        return (q for q in self.quotas if subject[q.kind] == q.subject)

    def _used(self, quota: Quota, period_start: float) -> float:
        """What ``quota`` charges in the period from ``period_start`` (``quotas.charged``)."""
        _, resets_at = quotas.period_bounds(quota, period_start)
        tps = self.time_per_shot_s
        return sum(
            quotas.charged(
                quota.unit,
                r.job.shots,
                r.shots_done,
                r.qpu_seconds,
                r.finished_at is None,
                tps,
            )
            for r in self.run.jobs.values()
            if period_start <= r.submitted_at < resets_at
            and any(q is quota for q in self._quotas_on(r.job))
        )

    def _refused(self, job: QueuedJob) -> bool:
        tps = self.time_per_shot_s
        for quota in self._quotas_on(job):
            used = self._used(quota, quotas.period_bounds(quota, job.created_at)[0])
            requested = quotas.cost(quota.unit, job.shots, tps)
            if quotas.refusal(quota, used, requested, job.created_at) is not None:
                return True
        return False

    def _charge(self, quota: Quota, period_start: float) -> None:
        key = (quota.name, period_start)
        used = self._used(quota, period_start)
        self.run.quota_use[key] = max(self.run.quota_use.get(key, 0.0), used)

    # -- what the dispatcher loop reports -------------------------------------------------------

    async def chunk_starting(self, job: QueuedJob, shots: int) -> bool:
        queued = list(self.queue.jobs())
        priority = self.config.class_priority
        self.run.aged_chunks += any(priority[j.job_class] > priority[job.job_class] for j in queued)
        self._measure_starvation(queued)
        interactive = sum(j.job_class == "development" for j in queued)
        self.run.most_interactive_queued = max(self.run.most_interactive_queued, interactive)
        record = self.run.jobs[job.id]
        if record.first_shot_at is None:
            record.first_shot_at = self.now
        return True

    async def chunk_ran(self, job: QueuedJob, shots: int, outcome: ChunkOutcome) -> None:
        start, end = outcome.started_at, outcome.finished_at
        self._tally(job, outcome.calibration_age_s, shots)
        self.run.timeline.append((start, end, job.job_class))
        self.run.chunks.append((start, end, job.id))
        self.run.busy_s += end - start
        record = self.run.jobs[job.id]
        record.shots_done += shots
        record.qpu_seconds += outcome.device_seconds
        if progress(self.queue, job, shots) is not None:
            return
        record.finished_at = end
        self.left[record.stream] -= 1
        stream = self.streams[record.stream]
        position = self._positions.pop(job.id)
        if stream.closed and position + 1 < len(stream.shots):
            self._push(end + stream.think_s[position], record.stream, position + 1)
        elif stream.closed:
            self.run.loop_wall_s[stream.name] = end - stream.start_s

    def hold_ended(self, pause: policy.LoopPause, started_at: float, finished_at: float) -> None:
        self.run.held_s += finished_at - started_at
        self.run.timeline.append((started_at, finished_at, "hold"))

    async def calibrated(self, started_at: float, finished_at: float) -> None:
        due = self._calibrated_at + self.profile.calibration_interval_s
        self.run.calibrations += 1
        self.run.early_calibrations += due - started_at >= self.profile.time_per_shot_s
        self.run.timeline.append((started_at, finished_at, "calibration"))
        self._calibrated_at = self.qpu.calibrated_at

    def _measure_starvation(self, queued: list[QueuedJob]) -> None:
        oldest: dict[str, float] = {}
        for job in queued:
            oldest[job.job_class] = min(oldest.get(job.job_class, math.inf), job.created_at)
        served_at = self.queue.usage.class_served_at
        for job_class, arrived in oldest.items():
            since = max(arrived, served_at.get(job_class, -math.inf))
            longest = max(self.run.starved_s.get(job_class, 0.0), self.now - since)
            self.run.starved_s[job_class] = longest

    def _tally(self, job: QueuedJob, age: float, shots: int) -> None:
        """Per-shot quality: each shot reads out with the error its calibration age gives."""
        tps = self.profile.time_per_shot_s
        drift = self.profile.drift
        self.run.shots += shots
        self.run.fidelity_sum += sum(1 - drift.readout_error(age + k * tps) for k in range(shots))
        if job.job_class == "production":
            self.run.production_shots += shots
            self.run.production_fresh_shots += started_within(self.fresh_age_s, age, tps, shots)
        if job.max_calibration_age_s is not None:
            self.run.bounded_shots += shots
            limit = job.max_calibration_age_s
            self.run.bounded_within_shots += started_within(limit, age, tps, shots)


def _union_length(spans: object) -> float:
    """Total length of the union of ``(start, end)`` spans."""
    total, reach = 0.0, -math.inf
    for start, end in sorted(spans):  # type: ignore[call-overload]
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


def started_within(limit_s: float, age_s: float, time_per_shot_s: float, shots: int) -> int:
    """How many of ``shots`` back-to-back shots, the first at calibration age ``age_s``, start
    at most ``limit_s`` after the calibration."""
    return min(shots, max(0, math.floor((limit_s - age_s) / time_per_shot_s + 1e-9) + 1))


# -- the baselines (ours is the dispatcher's own decision) ------------------------------------


FLOOD_POLICIES: dict[str, policy.PolicyConfig] = {
    "ours": policy.PolicyConfig(),
    "ours without aging": policy.PolicyConfig(aging_per_chunk=0.0),
}


def _whole_job_or_calibrate(sim: Simulation, job: QueuedJob | None) -> Decision:
    """A calibration-unaware baseline: calibrate when due between jobs, else run ``job`` whole."""
    due = sim.calibrated_at + sim.profile.calibration_interval_s
    if sim.now >= due:
        return Calibrate()
    return Idle(due) if job is None else RunChunk(job.id, job.remaining)


def job_fifo(sim: Simulation) -> Decision:
    """Whole jobs in arrival order."""
    job = min(sim.queue.jobs(), key=lambda j: (j.created_at, j.id), default=None)
    return _whole_job_or_calibrate(sim, job)


class SlotWeightedFifo:
    """Whole jobs; the session with the fewest jobs started per slot goes next, FIFO inside."""

    def __init__(self) -> None:
        self.started: dict[str, int] = {}

    def __call__(self, sim: Simulation) -> Decision:
        slots = sim.queue.slots

        def turn(job: QueuedJob) -> tuple[float, float, int]:
            share = slots.get(job.session_id, 1) if job.session_id else 1
            return (self.started.get(job.account, 0) / share, job.created_at, job.id)

        job = min(sim.queue.jobs(), key=turn, default=None)
        decision = _whole_job_or_calibrate(sim, job)
        if isinstance(decision, RunChunk) and job is not None:
            self.started[job.account] = self.started.get(job.account, 0) + 1
        return decision


class ExclusiveAllocation:
    """First level only: each stream holds the whole QPU from its start until it is done."""

    def __init__(self) -> None:
        self.holder: int | None = None

    def __call__(self, sim: Simulation) -> Decision:
        if self.holder is None or sim.left[self.holder] == 0:
            waiting = [i for i, s in enumerate(sim.streams) if sim.left[i] and s.start_s <= sim.now]
            self.holder = min(waiting, key=lambda i: sim.streams[i].start_s, default=None)
        mine = [j for j in sim.queue.jobs() if sim.stream_of(j.id) == self.holder]
        return _whole_job_or_calibrate(sim, min(mine, key=lambda j: j.id, default=None))


POLICIES: dict[str, Callable[[], Callable[[Simulation], Decision] | None]] = {
    "exclusive": lambda: ExclusiveAllocation(),
    "job FIFO": lambda: job_fifo,
    "slot-weighted FIFO": SlotWeightedFifo,
    "ours": lambda: None,
}
"""Each policy's decision (made afresh for every run); None: the dispatcher's own."""


def session_row(
    profile: DeviceProfile, seed: int, hours: float, fresh_age_s: float, sessions: bool
) -> SessionRow:
    """Ours on seed ``seed``'s trace, its variational loops in sessions (rule 9) or not, each
    loop's wall time against the same loop alone on an empty QPU."""
    streams = make_trace(random.Random(seed), hours)
    name = "sessions" if sessions else "no sessions"
    run = Simulation(profile, streams, name, fresh_age_s, sessions=sessions).play()
    alone = {
        stream.name: Simulation(profile, [stream], "alone", fresh_age_s).play().loop_wall_s
        for stream in streams
        if stream.closed
    }
    ratios = [wall / alone[loop][loop] for loop, wall in run.loop_wall_s.items()]
    loops = [stream for stream in streams if stream.closed]
    together = Simulation(profile, loops, name, fresh_age_s, sessions=sessions).play()
    among = [wall / alone[loop][loop] for loop, wall in together.loop_wall_s.items()]
    waits = [r.first_shot_at - r.submitted_at for r in together.jobs.values() if r.first_shot_at]
    thinking = sum(sum(stream.think_s[:-1]) for stream in loops) / run.work_span_s
    return SessionRow(
        seed, summarise(run), ratios, run.held_s, max(among), percentile(waits, 0.95), thinking
    )


def site_row(
    profile: DeviceProfile,
    seed: int,
    hours: float,
    fresh_age_s: float,
    config: policy.PolicyConfig | None = None,
    reference: bool = True,
) -> SiteRow:
    """Ours (``config``: the policy settings, default the daemon's) on seed ``seed``'s site
    trace (loops in sessions, a reservation, a quota), judged by the issue's aims; each loop's
    wall time against the same loop alone on an empty QPU. ``reference``: also replay the trace
    without the reservation (the ``unreserved_*`` figures; NaN without it, half the cost)."""
    site = make_site_trace(random.Random(seed), hours)
    window = site.reservation
    run = Simulation(
        profile,
        site.streams,
        "site",
        fresh_age_s,
        config,
        sessions=True,
        reservations=[window],
        quotas=[site.quota],
    ).play()
    alone = {
        stream.name: Simulation(profile, [stream], "alone", fresh_age_s).play().loop_wall_s
        for stream in site.streams
        if stream.closed
    }
    ratios = {loop: wall / alone[loop][loop] for loop, wall in run.loop_wall_s.items()}
    # The reference: the same trace and quota without the reservation.
    unreserved_p95, unreserved_ratio = math.nan, math.nan
    if reference:
        open_run = Simulation(
            profile, site.streams, "site", fresh_age_s, config, sessions=True, quotas=[site.quota]
        ).play()
        unreserved_p95 = summarise(open_run).interactive_p95_s
        unreserved_ratio = max(wall / alone[k][k] for k, wall in open_run.loop_wall_s.items())
    owned = [r for r in run.jobs.values() if window.owns(r.job)]
    owners = {site.streams[r.stream].name for r in owned}
    starts = {stream.name: stream.start_s for stream in site.streams}
    # Another's loop running across the window waits for its end: a cost of the reservation.
    blocked = {
        loop
        for loop, wall in run.loop_wall_s.items()
        if loop not in owners and window.overlaps(starts[loop], starts[loop] + wall)
    }
    # Inside the window only the owner may run: while it has nothing queued, the QPU cannot work.
    owner_idle = _within(_spans(run), window) - _within(_spans(run, owned), window)
    owner_busy = sum(
        max(0.0, min(end, window.ends_at) - max(start, window.starts_at))
        for start, end, job_id in run.chunks
        if window.owns(run.jobs[job_id].job)
    )
    intruding = sum(
        window.overlaps(start, end) and not window.owns(run.jobs[job_id].job)
        for start, end, job_id in run.chunks
    )
    clear_waits = [
        r.first_shot_at - r.submitted_at
        for r in run.jobs.values()
        if r.job_class == "development"
        and r.first_shot_at is not None
        and (window.owns(r.job) or not window.overlaps(r.submitted_at, r.first_shot_at))
    ]
    used = max(run.quota_use.values(), default=0.0)
    return SiteRow(
        seed=seed,
        summary=summarise(run),
        utilisation=run.busy_s / (run.work_span_s - owner_idle),
        owner_idle_s=owner_idle,
        owner_busy_s=owner_busy,
        window_s=window.ends_at - window.starts_at,
        loop_wall_ratios=ratios,
        loops_across_window=blocked,
        interactive_p95_clear_s=percentile(clear_waits, 0.95),
        unreserved_p95_s=unreserved_p95,
        unreserved_ratio_max=unreserved_ratio,
        held_s=run.held_s,
        intruding_chunks=intruding,
        quota_used=used,
        quota_budget=site.quota.budget,
        quota_periods_over=sum(
            quotas.refusal(site.quota, use, 0.0, period_start) is not None
            for (_, period_start), use in run.quota_use.items()
        ),
        refused=run.refused,
        quota_periods=len(run.quota_use),
    )


def _spans(run: Run, records: Iterable[JobRecord] | None = None) -> list[tuple[float, float]]:
    """Each job's (submission, end): when it was waiting or running."""
    chosen = run.jobs.values() if records is None else records
    return [(r.submitted_at, r.finished_at or r.submitted_at) for r in chosen]


def _within(spans: list[tuple[float, float]], window: Reservation) -> float:
    """How long the union of ``spans`` lasts inside ``window``."""
    clipped = [(max(s, window.starts_at), min(e, window.ends_at)) for s, e in spans]
    return _union_length((s, e) for s, e in clipped if e > s)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="fresnel-like", help="device profile (timing, drift)")
    parser.add_argument("--seed", type=int, default=7, help="seed of the workload trace")
    parser.add_argument("--hours", type=float, default=8.0, help="span of the arrivals")
    parser.add_argument("--fresh-age-s", type=float, default=3600.0, help="'fresh' calibration")
    parser.add_argument("--seeds", type=int, default=10, help="other traces to run ours on")
    args = parser.parse_args()
    profile = DeviceProfile.load(args.profile)
    streams = make_trace(random.Random(args.seed), args.hours)
    summaries = [
        summarise(Simulation(profile, streams, name, args.fresh_age_s).play(make()))
        for name, make in POLICIES.items()
    ]
    flood = make_flood_trace(random.Random(args.seed))
    flood_summaries = [
        summarise(Simulation(profile, flood, name, args.fresh_age_s, config).play())
        for name, config in FLOOD_POLICIES.items()
    ]
    seed_summaries = [
        summarise(
            Simulation(
                profile, make_trace(random.Random(seed), args.hours), "ours", args.fresh_age_s
            ).play()
        )
        for seed in range(1, args.seeds + 1)
    ]
    session_rows = [
        session_row(profile, seed, args.hours, args.fresh_age_s, sessions)
        for seed in range(1, args.seeds + 1)
        for sessions in (False, True)
    ]
    site_rows = [
        site_row(profile, seed, args.hours, args.fresh_age_s) for seed in range(1, args.seeds + 1)
    ]
    chunk_s = profile.chunk_shots * profile.time_per_shot_s
    command = (
        f"{COMMAND} --profile {args.profile} --seed {args.seed} --hours {args.hours:g} "
        f"--fresh-age-s {args.fresh_age_s:g} --seeds {args.seeds}"
    )
    body = section(
        profile,
        streams,
        summaries,
        flood_summaries,
        seed_summaries,
        session_rows,
        site_rows,
        args.fresh_age_s,
        command,
        os.getloadavg(),
    )
    print(body)
    plot(summaries, chunk_s, args.fresh_age_s, ROOT / "docs/img/policy.png")
    write_section(ROOT / "docs/benchmarks.md", "## Scheduling policy", body)


if __name__ == "__main__":
    main()
