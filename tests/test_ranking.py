"""RankedQueue against the policy it keeps: after every event of random sequences, its decision,
order and estimates equal ``policy.decide``, ``policy.order`` and ``policy.estimates`` (hybrid
loops' pauses and holds included)."""

from __future__ import annotations

import dataclasses
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qhpc_lab.qpu import DeviceState
from qhpc_lab.scheduler import policy
from qhpc_lab.scheduler.policy import NO_USAGE, DeviceView, PolicyConfig, QueuedJob, Usage
from qhpc_lab.scheduler.ranking import RankedQueue
from qhpc_lab.scheduler.reservations import Reservation

CLASSES = ("development", "test", "production", "unknown")
SESSIONS = ("s0", "s1", "s2", "user:u0", None)
EIGHTHS = st.integers(0, 40).map(lambda n: n / 8)
"""Times on a binary grid, so that the policy's running sums and the closed form agree exactly."""


def device(**changes: object) -> DeviceView:
    """1/16 s a shot, 4-shot chunks, calibrated at 0 every 4 s for 1/2 s (all dyadic)."""
    base = DeviceView(
        state=DeviceState.ONLINE,
        calibrated_at=0.0,
        calibration_interval_s=4.0,
        calibration_duration_s=0.5,
        time_per_shot_s=1 / 16,
        chunk_shots=4,
    )
    return dataclasses.replace(base, **changes)


submit = st.tuples(
    st.just("submit"),
    st.sampled_from(CLASSES),
    st.sampled_from(SESSIONS),
    st.sampled_from(("u0", "u1")),
    st.integers(1, 90),
    st.integers(0, 3),  # shots done already (a requeued job), as a share of 3
    EIGHTHS,  # how long before now it arrived
    st.sampled_from((None, None, 0.25, 1.0, 2.5)),
    st.sampled_from((None, "a", "b")),  # the hybrid loop
    st.sampled_from((None, 1 / 32, 1 / 16, 1 / 8, 2.0)),  # its think time
)
chunk = st.tuples(st.just("chunk"), st.integers(0, 99), st.integers(1, 8))
event = st.one_of(
    submit,
    submit,
    submit,
    submit,
    chunk,
    chunk,
    chunk,
    st.tuples(st.just("remove"), st.integers(0, 99)),
    st.tuples(st.just("tick"), EIGHTHS),
    st.tuples(st.just("slots"), st.sampled_from(SESSIONS[:4]), st.integers(0, 3)),
    st.tuples(st.just("drop_slots"), st.sampled_from(SESSIONS[:4])),
    st.tuples(
        st.just("config"),
        st.lists(st.integers(0, 3).map(lambda n: n * 10), min_size=3, max_size=3),
        st.sampled_from((0.0, 0.5, 1.0, 4.0)),
        st.sampled_from((1.0, 8.0, 600.0)),
        st.sampled_from((0.0, 1 / 8, 120.0)),  # hold budget per user
        st.sampled_from((0.0, 1.0, 4.0)),  # chunk durations before loops yield
    ),
    st.tuples(st.just("drain"), st.booleans()),
    st.tuples(st.just("hold"), EIGHTHS),
    st.tuples(  # a loop's job ended elsewhere (say, canceled by its owner's client)
        st.just("loop_job_ended"),
        st.sampled_from(("a", "b")),
        st.sampled_from((None, 1 / 32, 1 / 16, 1 / 8, 2.0)),
        st.sampled_from(SESSIONS),
    ),
    st.tuples(st.just("loop_job_ended"), st.just("a"), st.just(1 / 32), st.just("s0")),
    st.tuples(st.just("end_pause")),
    st.tuples(st.just("calibrate")),
    st.tuples(st.just("state"), st.sampled_from([*DeviceState, DeviceState.ONLINE])),
    st.tuples(st.just("reserve"), EIGHTHS, EIGHTHS, st.sampled_from(("u0", "u1"))),
    st.tuples(st.just("unreserve")),
    st.tuples(st.just("setup"), st.sampled_from((0.0, 1 / 8, 1 / 4))),  # per chunk (QPU job)
)


@dataclasses.dataclass
class Model:
    """The same events applied to plain values, as the policy functions take them."""

    jobs: dict[int, QueuedJob] = dataclasses.field(default_factory=dict)
    slots: dict[str, int] = dataclasses.field(default_factory=dict)
    usage: Usage = NO_USAGE
    config: PolicyConfig = dataclasses.field(default_factory=PolicyConfig)
    device: DeviceView = dataclasses.field(default_factory=device)
    now: float = 1.0
    next_id: int = 1
    reservations: tuple[Reservation, ...] = ()
    pause: policy.LoopPause | None = None


def same_loop(a: QueuedJob, b: QueuedJob) -> bool:
    """Loop ids are their user's: the same id of two users is two loops."""
    return a.loop == b.loop and a.user_id == b.user_id


def apply(model: Model, ranked: RankedQueue, ev: tuple) -> None:
    kind = ev[0]
    if kind == "submit":
        _, job_class, session, user, shots, done_thirds, before, bound = ev[:8]
        loop, think = ev[8:] or (None, None)  # the hand-written events name no loop
        job = QueuedJob(
            model.next_id,
            user,
            session,
            job_class,
            shots,
            shots * done_thirds // 3,
            model.now - before,
            bound,
            loop=loop,
            think_time_s=think,
        )
        model.next_id += 1
        model.jobs[job.id] = job
        ranked.add(job)
    elif kind == "chunk" and model.jobs:
        job = list(model.jobs.values())[ev[1] % len(model.jobs)]
        shots = min(ev[2], job.remaining)
        started = model.now
        model.now += shots * model.device.time_per_shot_s
        model.usage = policy.record_chunk(model.usage, job, started, model.now, model.config)
        ranked.record_chunk(job, started, model.now)
        if job.shots_done + shots >= job.shots:
            del model.jobs[job.id]
            assert ranked.remove(job.id) == job
            ranked.loop_ended_job(job, model.now)
            if job.loop is not None and not any(same_loop(j, job) for j in model.jobs.values()):
                model.pause = policy.loop_pause(job, model.now, model.config, model.reservations)
        else:
            job = dataclasses.replace(job, shots_done=job.shots_done + shots)
            model.jobs[job.id] = job
            ranked.update(job)
    elif kind == "remove" and model.jobs:
        job = list(model.jobs.values())[ev[1] % len(model.jobs)]
        del model.jobs[job.id]
        assert ranked.remove(job.id) == job
        assert ranked.remove(job.id) is None
    elif kind == "hold" and model.pause is not None:
        started = model.now
        model.now += ev[1]
        model.usage = policy.record_hold(model.usage, model.pause, started, model.now, model.config)
        ranked.record_hold(started, model.now)
    elif kind == "loop_job_ended":
        ended = QueuedJob(0, "u0", ev[3], "development", 1, 1, model.now, loop=ev[1])
        ended = dataclasses.replace(ended, think_time_s=ev[2])
        ranked.loop_ended_job(ended, model.now)
        if not any(same_loop(j, ended) for j in model.jobs.values()):
            model.pause = policy.loop_pause(ended, model.now, model.config, model.reservations)
    elif kind == "end_pause":
        model.pause = None
        ranked.end_pause()
    elif kind == "tick":
        model.now += ev[1]
    elif kind == "slots":
        model.slots[ev[1]] = ev[2]
        ranked.set_slots(ev[1], ev[2])
    elif kind == "drop_slots":
        model.slots.pop(ev[1], None)
        ranked.drop_slots(ev[1])
    elif kind == "config":
        priorities = dict(zip(CLASSES[:3], ev[1], strict=True))
        model.config = PolicyConfig(
            class_priority=priorities,
            aging_per_chunk=ev[2],
            usage_half_life_s=ev[3],
            min_calibration_age_s=0.5,
            loop_hold_budget_s=ev[4],
            loop_yield_after_chunks=ev[5],
        )
        ranked.set_config(model.config)
    elif kind == "drain":
        model.device = dataclasses.replace(model.device, accepting=not ev[1])
    elif kind == "calibrate":
        model.device = dataclasses.replace(model.device, calibrated_at=model.now)
    elif kind == "state":
        model.device = dataclasses.replace(model.device, state=ev[1])
    elif kind == "reserve":  # from up to 1 s ago: some hold now, some start within a chunk
        starts = model.now - 1 + ev[1]
        window = Reservation(len(model.reservations), starts, starts + ev[2], "user", ev[3])
        model.reservations = (*model.reservations, window)
        ranked.set_reservations(model.reservations)
    elif kind == "unreserve":
        model.reservations = ()
        ranked.set_reservations(())
    elif kind == "setup":
        model.device = dataclasses.replace(model.device, setup_s=ev[1])


def check(model: Model, ranked: RankedQueue) -> None:
    queue = list(model.jobs.values())
    device, now, config, usage = model.device, model.now, model.config, model.usage
    assert ranked.usage == usage
    assert ranked.pause == model.pause
    assert len(ranked) == len(queue)
    assert sorted(j.id for j in ranked.jobs()) == sorted(model.jobs)
    expected = policy.order(queue, model.slots, device, now, config, usage)
    assert [j.id for j in ranked.ranked(device, now)] == [j.id for j in expected]
    assert [j.id for j in ranked.ranked(device, now, 3)] == [j.id for j in expected[:3]]
    reserved = model.reservations
    assert ranked.decide(device, now) == policy.decide(
        queue, model.slots, device, now, config, usage, reserved, model.pause
    )
    estimates = policy.estimates(queue, device, now, config, model.slots, usage, reserved)
    assert ranked.estimates(device, now) == estimates
    for job_id, (position, eta) in estimates.items():
        got = ranked.position(job_id, device, now)
        assert got is not None
        assert got[0] == position, job_id
        assert math.isclose(got[1], eta, rel_tol=1e-9, abs_tol=1e-9), (job_id, got, eta)
    depth = {c: sum(j.job_class == c for j in queue) for c in CLASSES}
    assert ranked.depth() == {c: n for c, n in depth.items() if n or c in policy.JOB_CLASSES}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(submit, min_size=3, max_size=25), st.lists(event, min_size=10, max_size=60))
def test_ranked_queue_equals_the_policy_after_every_event(
    backlog: list[tuple], events: list[tuple]
) -> None:
    model = Model()
    ranked = RankedQueue(model.config)
    for ev in backlog + events:
        apply(model, ranked, ev)
        check(model, ranked)


def test_tied_fair_share_keys_interleave_accounts_by_arrival() -> None:
    """Accounts with no usage tie on fair share, so their jobs interleave by arrival."""
    model = Model()
    ranked = RankedQueue(model.config)
    for session, created in [("a", 3.0), ("b", 1.0), ("a", 2.0)]:
        apply(model, ranked, ("submit", "test", session, "u0", 10, 0, model.now - created, None))
    assert [j.id for j in ranked.ranked(model.device, model.now)] == [2, 3, 1]
    check(model, ranked)


def test_update_needs_a_queued_job() -> None:
    ranked = RankedQueue(PolicyConfig())
    with pytest.raises(KeyError):
        ranked.update(QueuedJob(1, "u", None, "test", 10, 0, 0.0))


def test_estimates_at_exact_window_boundaries() -> None:
    """Jobs that end exactly as a calibration window fills: no calibration is counted for them,
    one is for the next (a window holds 64 shots of this device)."""
    model = Model(device=device(calibrated_at=1.0))
    ranked = RankedQueue(model.config)
    for _ in range(7):
        apply(model, ranked, ("submit", "test", "s0", "u0", 32, 0, 0.0, None))
    etas = [ranked.position(job_id, model.device, model.now) for job_id in model.jobs]
    assert [eta for _, eta in etas] == [2.0, 4.0, 6.5, 8.5, 11.0, 13.0, 15.5]
    check(model, ranked)


def test_long_fifos_split_into_blocks_and_shrink_back() -> None:
    """Thousands of jobs of one account: the blocked prefix sums stay exact through removals."""
    model = Model()
    ranked = RankedQueue(model.config)
    for n in range(1500):
        session = "s0" if n % 7 else "s1"
        apply(model, ranked, ("submit", "production", session, "u0", 1 + n % 5, 0, n % 3, None))
    for n in range(0, 1500, 3):
        apply(model, ranked, ("remove", n % len(model.jobs)))
    apply(model, ranked, ("chunk", 17, 3))
    queue = list(model.jobs.values())
    expected = policy.order(queue, model.slots, model.device, model.now, model.config, model.usage)
    assert [j.id for j in ranked.ranked(model.device, model.now)] == [j.id for j in expected]
    estimates = policy.estimates(
        queue, model.device, model.now, model.config, model.slots, model.usage
    )
    for job in queue[::37]:
        position, eta = ranked.position(job.id, model.device, model.now)
        assert position == estimates[job.id][0]
        assert math.isclose(eta, estimates[job.id][1], rel_tol=1e-9, abs_tol=1e-9)


def test_a_job_past_its_bound_lets_an_equally_aged_lower_class_run() -> None:
    """Production aged to development's effective priority (10 + 20 chunks = 30) still ranks
    after it, but runs while the development job waits for a calibration."""
    config = PolicyConfig(min_calibration_age_s=0.5)
    model = Model(config=config, device=device(calibration_interval_s=64.0), now=6.0)
    ranked = RankedQueue(config)
    apply(model, ranked, ("submit", "development", "s0", "u0", 8, 0, 1.0, 1.0))
    apply(model, ranked, ("submit", "production", "s1", "u1", 8, 0, 5.0, None))
    served = QueuedJob(99, "u0", "s0", "development", 4, 0, 5.0)
    model.usage = policy.record_chunk(model.usage, served, 5.75, 6.0, config)
    ranked.record_chunk(served, 5.75, 6.0)
    assert [j.id for j in ranked.ranked(model.device, model.now)] == [1, 2]
    assert ranked.decide(model.device, model.now) == policy.RunChunk(2, 4)
    check(model, ranked)
