"""Hybrid loops (docs/policy.md rule 9): the hold rule, pure and as properties, and the
dispatcher holding on a virtual clock. A real daemon holding for a loop run in
``qhpc_lab.loop(...)``, and ``%qpu loop``: tests/test_magics.py (its daemon)."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qhpc_lab.client import Client
from qhpc_lab.programs import Program
from qhpc_lab.qpu import DeviceState
from qhpc_lab.scheduler import policy
from qhpc_lab.scheduler.dispatcher import (
    Dispatcher,
    Recorder,
    SimulatedQPU,
    VirtualClock,
    play,
    progress,
)
from qhpc_lab.scheduler.policy import (
    NO_USAGE,
    Calibrate,
    DeviceView,
    HoldForLoop,
    LoopPause,
    PolicyConfig,
    QueuedJob,
    RunChunk,
)
from qhpc_lab.scheduler.ranking import RankedQueue
from qhpc_lab.scheduler.reservations import Reservation
from tests.support.programs import pulser_sequence_json

CONFIG = PolicyConfig()


def device(**changes: object) -> DeviceView:
    """Fresnel-like timing: 0.33 s a shot, 90-shot chunks (29.7 s), calibrated at 0 every 2 h."""
    base = DeviceView(
        state=DeviceState.ONLINE,
        calibrated_at=0.0,
        calibration_interval_s=7200.0,
        calibration_duration_s=300.0,
        time_per_shot_s=0.33,
        chunk_shots=90,
    )
    return dataclasses.replace(base, **changes)


def job(id: int, job_class: str = "production", user: str = "prod", **fields: object) -> QueuedJob:
    return QueuedJob(id, user, None, job_class, 900, 0, 0.0, **fields)  # type: ignore[arg-type]


def pause(until: float, loop: str = "vqe") -> LoopPause:
    return LoopPause(loop, "user:dev", "dev", until, "development")


def test_a_loop_pauses_for_its_think_time_capped_and_not_at_all_when_holds_are_off():
    ended = job(1, "development", "dev", loop="vqe", think_time_s=12.0)
    assert policy.loop_pause(ended, 100.0, CONFIG) == LoopPause(
        "vqe", "user:dev", "dev", 112.0, "development"
    )
    long = dataclasses.replace(ended, think_time_s=600.0)
    assert policy.loop_pause(long, 100.0, CONFIG).until == 100.0 + CONFIG.loop_hold_max_s
    unknown = dataclasses.replace(ended, think_time_s=None)
    assert policy.loop_pause(unknown, 100.0, CONFIG).until == 100.0 + CONFIG.loop_hold_max_s
    assert policy.loop_pause(ended, 100.0, CONFIG.changed(loop_hold_max_s=0.0)) is None
    assert policy.loop_pause(job(2), 100.0, CONFIG) is None  # not a loop's job


def test_holds_while_others_lose_less_than_the_loop_saves_else_releases_with_a_shorter_chunk():
    queue = [job(1)]  # one account waits; its next chunk would take 29.7 s
    # r = 10 s left: 1 × 10 < 29.7 − 10, so hold.
    held = policy.decide(queue, {}, device(), 100.0, CONFIG, pause=pause(110.0))
    assert held == HoldForLoop("vqe", 110.0)
    # r = 15 s: 15 ≥ 14.7, so release; the chunk ends by the pause's end (45 shots of 0.33 s).
    released = policy.decide(queue, {}, device(), 100.0, CONFIG, pause=pause(115.0))
    assert released == RunChunk(1, 45)
    # Two accounts waiting, the test job's chunk next: r = 9 s costs 2 × 9 < 29.7 − 9, hold;
    two = [job(1), job(2, user="ci", job_class="test")]
    assert isinstance(
        policy.decide(two, {}, device(), 100.0, CONFIG, pause=pause(109.0)), HoldForLoop
    )
    # r = 10 s with two waiting: 20 ≥ 19.7, release.
    assert policy.decide(two, {}, device(), 100.0, CONFIG, pause=pause(110.0)) == RunChunk(2, 30)


def test_the_loops_next_job_runs_first_and_a_due_calibration_before_it():
    alice = dataclasses.replace(job(1, "development", "alice"), created_at=95.0)  # waited 5 s
    queue = [alice, dataclasses.replace(job(2, "development", "dev", loop="vqe"), created_at=99.0)]
    assert policy.decide(queue, {}, device(), 100.0, CONFIG) == RunChunk(1, 90)
    assert policy.decide(queue, {}, device(), 100.0, CONFIG, pause=pause(110.0)) == RunChunk(2, 90)
    due = device(calibrated_at=-7200.0)
    assert policy.decide(queue, {}, due, 100.0, CONFIG, pause=pause(110.0)) == Calibrate()
    # Past the pause, the loop's job ranks as any other.
    assert policy.decide(queue, {}, device(), 111.0, CONFIG, pause=pause(110.0)) == RunChunk(1, 90)


def test_no_hold_just_before_a_calibration_window_and_a_hold_is_charged_to_the_loop():
    near = device(calibrated_at=-7190.0)  # the window opens at 10 s: the loop would wait anyway
    assert policy.decide([job(1)], {}, near, 0.0, CONFIG, pause=pause(29.0)) == RunChunk(1, 30)
    usage = policy.record_hold(NO_USAGE, pause(29.0), 0.0, 10.0, CONFIG)
    assert usage.qpu_seconds == {"user:dev": 10.0}
    assert usage.class_served_at == {}  # a hold is no service: the loop's class still ages


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(
            st.sampled_from(policy.JOB_CLASSES),
            st.sampled_from(("a", "b", "c", "dev")),
            st.integers(1, 300),
            st.sampled_from((None, "vqe", "other")),
        ),
        max_size=8,
    ),
    st.floats(0, 7300),
    st.floats(0, 60),
    st.floats(0, 45),
)
def test_hold_properties(specs, now, since, think):
    """A hold is granted exactly when rule 9's cost comparison says so, never past the cap,
    the pause or the calibration window, never while a calibration is due, never when the
    loop's own job is queued; RankedQueue decides alike."""
    queue = [
        QueuedJob(i, user, None, cls, shots, 0, 0.0, loop=loop)
        for i, (cls, user, shots, loop) in enumerate(specs, start=1)
    ]
    ended = QueuedJob(0, "dev", None, "development", 1, 1, 0.0, loop="vqe", think_time_s=think)
    paused = policy.loop_pause(ended, now - since, CONFIG)
    view = device()
    decision = policy.decide(queue, {}, view, now, CONFIG, pause=paused)
    ranked = RankedQueue(CONFIG)
    ranked.loop_ended_job(ended, now - since)  # then the queue arrives, the loop's jobs too
    for queued in queue:
        ranked.add(queued)
    assert ranked.pause == paused
    assert ranked.decide(view, now) == decision
    base = policy.decide(queue, {}, view, now, CONFIG)
    if not isinstance(decision, HoldForLoop):
        return
    assert paused is not None and now < view.next_calibration_at
    assert decision.until <= min(paused.until, view.next_calibration_at)
    assert decision.until - (now - since) <= CONFIG.loop_hold_max_s + 1e-9
    assert not any(paused.owns(j) for j in queue)  # the loop's own job would have run
    left = decision.until - now
    waiting = len({j.account for j in queue})
    assert isinstance(base, RunChunk)
    assert left * waiting < base.shots * view.time_per_shot_s - left


class Tally(Recorder):
    """The simulation's bookkeeping for the dispatcher test: progress, holds, the loop's next
    job sent ``think`` seconds after each result."""

    def __init__(self, queue: RankedQueue, clock: VirtualClock, think: float) -> None:
        self.queue, self.clock, self.think = queue, clock, think
        self.holds: list[tuple[float, float]] = []
        self.chunks: list[tuple[int, float]] = []
        self.loop_jobs = 0

    def submit_loop_job(self) -> None:
        now = self.clock.now()
        self.loop_jobs += 1
        job_id = 100 + self.loop_jobs
        loop_job = QueuedJob(job_id, "dev", None, "development", 20, 0, now, loop="vqe")
        self.queue.add(dataclasses.replace(loop_job, think_time_s=self.think))

    async def chunk_ran(self, job, shots, outcome):
        self.chunks.append((job.id, outcome.finished_at - outcome.device_seconds))
        if progress(self.queue, job, shots) is None and job.loop and self.loop_jobs < 3:
            self.clock.at(outcome.finished_at + self.think, self.submit_loop_job)

    def hold_ended(self, pause, started_at, finished_at):
        self.holds.append((started_at, finished_at))


def test_the_dispatcher_holds_for_a_loop_of_three_jobs_and_charges_it():
    """1 s a shot, 10-shot chunks: a loop of three 20-shot jobs with 2 s of think time, and a
    production job of another user waiting all along. 2 s × 1 account < 10 s − 2 s: the QPU
    is held after each loop job, released by the next one as it comes, and after the last
    when the think time has run out (the loop sends nothing more)."""
    view = device(time_per_shot_s=1.0, chunk_shots=10)
    clock = VirtualClock()
    queue = RankedQueue(CONFIG)
    qpu = SimulatedQPU(clock, view.time_per_shot_s, view.calibration_duration_s)
    tally = Tally(queue, clock, think=2.0)
    tally.submit_loop_job()
    queue.add(QueuedJob(1, "prod", None, "production", 30, 0, 0.0))
    dispatcher = Dispatcher(queue, qpu, clock, lambda: view, tally)
    play(dispatcher, clock, lambda: not len(queue) and not clock.pending, max_steps=100)
    assert tally.holds == [(20.0, 22.0), (42.0, 44.0), (64.0, 66.0)]
    loop_starts = [start for job_id, start in tally.chunks if job_id > 100][::2]
    assert loop_starts == [0.0, 22.0, 44.0]  # each iteration starts the moment it is sent
    assert [start for job_id, start in tally.chunks if job_id == 1] == [66.0, 76.0, 86.0]
    assert queue.usage.qpu_seconds["user:dev"] > 60.0  # 60 s of shots and 6 s held, decayed


def test_a_loop_without_a_think_time_sends_its_last_pause(tmp_path):
    """On the in-process emulator (which ignores the mark): before its first result a loop
    knows no pause; after it, the time since that job ended; a declared think time wins. The
    old names (``session``) still work for a release, each warning with its new name."""
    client = Client(environ={"HOME": str(tmp_path)})
    client.use("emulator")
    try:
        with client.loop("vqe") as loop:
            first = loop.mark()
            assert (first.loop, first.think_time_s) == ("vqe", None)
            client.submit(Program("pulser", pulser_sequence_json(), 5)).result(timeout=120)
            pause = loop.mark().think_time_s
            assert pause is not None and 0 <= pause < 120
        assert client.active_loop is None
        declared = client.start_loop("cells", 2.0).mark()
        assert (declared.loop, declared.think_time_s) == ("cells", 2.0)
        assert client.stop_loop() is not None and client.stop_loop() is None
        renamed = r"Client.session\(\) .*Client.loop\(\)"
        with pytest.warns(DeprecationWarning, match=renamed), client.session("old") as old:
            assert client.active_loop is old
        with pytest.warns(DeprecationWarning, match=r"Client.start_loop\(\)"):
            client.start_session("old")
        with pytest.warns(DeprecationWarning, match="Client.active_loop"):
            assert client.active_session is not None
        with pytest.warns(DeprecationWarning, match=r"Client.stop_loop\(\)"):
            assert client.stop_session() is not None
    finally:
        client.close()


def test_a_reservation_goes_before_a_hold():
    """Rule 8 before rule 9: no hold runs into a window, in the policy and the incremental
    queue alike; without the window the same pause is held."""
    owners = [job(1, user="owner")]
    window = Reservation(1, 105.0, 400.0, "user", "owner")
    loop_ended = job(3, "development", "dev", loop="vqe", think_time_s=10.0)
    assert policy.decide(owners, {}, device(), 100.0, CONFIG, pause=pause(110.0)) == (
        HoldForLoop("vqe", 110.0)
    )
    decided = policy.decide(
        owners, {}, device(), 100.0, CONFIG, reservations=[window], pause=pause(110.0)
    )
    assert decided == RunChunk(1, 90)  # the owner's chunk runs into its own window
    ranked = RankedQueue(CONFIG)
    ranked.add(owners[0])
    ranked.set_reservations([window])
    ranked.loop_ended_job(loop_ended, 100.0)
    assert ranked.decide(device(), 100.0) == decided


def test_a_users_holds_stop_when_their_budget_in_the_window_is_spent():
    """Short pauses repeated without end held the QPU idle for one user: now their loops get
    at most ``loop_hold_budget_s`` held per ``loop_hold_window_s``, the last hold cut to what
    is left, and none (nor a first turn) once it is spent; the window slides."""
    config = CONFIG.changed(loop_hold_budget_s=12.0, loop_hold_window_s=600.0)
    usage = policy.record_hold(NO_USAGE, pause(110.0), 100.0, 110.0, config)
    assert policy.hold_budget_left(usage, "dev", 110.0, config) == 2.0
    assert policy.hold_budget_left(usage, "someone", 110.0, config) == 12.0
    queue = [job(1)]
    assert policy.decide(queue, {}, device(), 200.0, config, usage, pause=pause(210.0)) == (
        HoldForLoop("vqe", 202.0)
    )
    spent = policy.record_hold(usage, pause(210.0), 200.0, 202.0, config)
    assert policy.decide(queue, {}, device(), 300.0, config, spent, pause=pause(310.0)) == (
        RunChunk(1, 90)
    )
    later = 710.0  # the first hold has left the window
    assert policy.hold_budget_left(spent, "dev", later, config) == 10.0
    ranked = RankedQueue(config)
    ranked.add(queue[0])
    ranked.record_hold(0.0, 0.0)  # no pause: nothing charged
    assert ranked.usage == NO_USAGE


def test_a_loop_cannot_carry_a_reservation_past_its_window():
    """The attack: the owner's loop, its job ending just before its window closed, kept the
    QPU past the end with holds and first turns. A job ending inside a window (or just before
    one) pauses no loop, so after the window others run in the usual order."""
    window = Reservation(1, 0.0, 100.0, "user", "dev")
    owner = job(3, "development", "dev", loop="vqe", think_time_s=20.0)
    assert policy.loop_pause(owner, 95.0, CONFIG, [window]) is None
    assert policy.loop_pause(owner, 75.0, CONFIG, [window]) is None  # 20 s ends past it too
    assert policy.loop_pause(owner, 100.0, CONFIG, [window]) is not None  # after: as usual
    ranked = RankedQueue(CONFIG)
    ranked.set_reservations([window])
    ranked.loop_ended_job(owner, 95.0)
    assert ranked.pause is None
