"""Reservations in the policy (rule 8) and in the dispatcher loop on a virtual clock."""

from __future__ import annotations

import dataclasses

from hypothesis import given
from hypothesis import strategies as st

from qhpc_lab.scheduler import policy
from qhpc_lab.scheduler.policy import Calibrate, Idle, PolicyConfig, RunChunk
from qhpc_lab.scheduler.reservations import Reservation, next_reservation
from tests.support.policy import (
    PROPERTIES,
    TOLERANCE,
    VirtualQPU,
    configs,
    device,
    devices,
    job,
    workloads,
)

CONFIG = PolicyConfig()


def reserve(starts_at: float, ends_at: float, owner: str = "u2", kind: str = "user") -> Reservation:
    return Reservation(1, starts_at, ends_at, kind, owner)


def decide(queue, now, *reservations, view=None):
    return policy.decide(queue, {}, view or device(), now, CONFIG, reservations=reservations)


def test_an_owner_is_a_user_an_account_or_a_slurm_job():
    mine = dataclasses.replace(job(1, user_id="u2"), slurm_job_id="42", slurm_account="chem")
    assert reserve(0, 1, "u2").owns(mine)
    assert reserve(0, 1, "chem", "account").owns(mine)
    assert reserve(0, 1, "42", "slurm_job").owns(mine)
    assert not reserve(0, 1, "43", "slurm_job").owns(mine)
    assert not reserve(0, 1, "chem", "account").owns(job(2))  # no account: nobody's


def test_inside_a_window_only_the_owner_runs_and_others_wait_for_its_end():
    window = reserve(1.0, 3.0)
    assert decide([job(1)], 2.0, window) == Idle(3.0)
    assert decide([job(1), job(2, user_id="u2", created_at=1.0)], 2.0, window) == RunChunk(2, 10)
    assert decide([job(1)], 3.0, window) == RunChunk(1, 10)  # the end is outside


def test_a_chunk_shrinks_to_end_before_a_window_the_job_does_not_own():
    window = reserve(0.05, 3.0)
    assert decide([job(1)], 0.0, window) == RunChunk(1, 5)
    assert decide([job(1, user_id="u2")], 0.0, window) == RunChunk(1, 10)
    # Less than a shot before the window: wait for it (not an early calibration), then its end.
    assert decide([job(1)], 0.045, window) == Idle(0.05)
    assert decide([job(1)], 0.05, window) == Idle(3.0)


def test_a_single_calibration_job_starts_only_when_all_its_shots_end_before_the_window():
    pinned = dataclasses.replace(job(1, shots=20), single_calibration=True)
    assert decide([pinned], 0.0, reserve(0.15, 3.0)) == Idle(0.15)
    assert decide([pinned], 0.0, reserve(0.2, 3.0)) == RunChunk(1, 10)


def test_a_calibration_due_inside_a_window_runs_just_before_it():
    window = reserve(98.0, 150.0)  # due at 100, in the window; 150 <= 98 + 100 clears it
    assert policy.calibration_due_at(device(), 0.0, [window]) == 93.0
    assert decide([job(1)], 92.95, window) == RunChunk(1, 5)  # shrinks to the moved calibration
    assert decide([job(1)], 93.0, window) == Calibrate()
    assert decide([], 50.0, window) == Idle(93.0)
    # A window longer than the interval needs a calibration inside anyway: it stays due.
    assert policy.calibration_due_at(device(), 0.0, [reserve(98.0, 250.0)]) == 100.0
    # Nor is it moved once the window has started, or before the last calibration.
    assert policy.calibration_due_at(device(), 98.5, [window]) == 100.0
    assert policy.calibration_due_at(device(calibrated_at=94.0), 95.0, [reserve(97, 196)]) == 194


def test_estimates_jump_the_window_for_others_only():
    queue = [job(1, shots=100), job(2, shots=100, user_id="u2", created_at=1.0)]
    window = reserve(0.5, 10.5)
    etas = policy.estimates(queue, device(), 0.0, CONFIG, reservations=[window])
    assert etas == {1: (1, 11.0), 2: (2, 12.0)}
    own = policy.estimates(queue[1:], device(), 0.0, CONFIG, reservations=[window])
    assert own == {2: (1, 1.0)}


def test_the_next_reservation_is_the_one_in_force_else_the_next_to_start():
    early, late = reserve(1.0, 2.0), dataclasses.replace(reserve(5.0, 6.0), id=2)
    assert next_reservation([late, early], 0.0) == early
    assert next_reservation([late, early], 1.5) == early
    assert next_reservation([late, early], 2.0) == late
    assert next_reservation([late, early], 6.0) is None


def test_the_dispatcher_keeps_the_window_for_its_owner_and_wakes_at_its_bounds():
    qpu = VirtualQPU(device())
    qpu.queue.set_reservations([reserve(1.05, 2.0)])
    qpu.submit(
        job(1, shots=300),
        job(2, shots=100, user_id="u2", session_id="s2", created_at=1.5),
        job(3, shots=50, user_id="u3", session_id="s3", created_at=1.2),
    ).run()
    others = [c for c in qpu.chunks if c.job.user_id != "u2"]
    shrunk = [c for c in others if c.end <= 1.05 + TOLERANCE][-1]
    assert shrunk.shots == 5 and abs(shrunk.end - 1.05) < TOLERANCE
    assert all(c.end <= 1.05 + TOLERANCE or c.start >= 2.0 - TOLERANCE for c in others)
    assert qpu.first_start(2) == 1.5  # submitted inside its window: runs at once
    assert qpu.first_start(3) >= 2.0  # submitted inside another's window: waits for its end
    assert sum(c.shots for c in qpu.chunks) == 450


@PROPERTIES
@given(data=st.data())
def test_no_chunk_of_another_overlaps_a_window_and_every_shot_still_runs(data):
    view = data.draw(devices())
    jobs = data.draw(workloads(view))
    config = data.draw(configs(view))
    chunk = view.chunk_duration_s
    starts = data.draw(st.floats(0, 20)) * chunk
    window = reserve(starts, starts + data.draw(st.floats(0.5, 30)) * chunk)
    qpu = VirtualQPU(view, config)
    qpu.queue.set_reservations([window])
    qpu.submit(*jobs).run()
    for submitted in jobs:
        assert sum(c.shots for c in qpu.chunks if c.job.id == submitted.id) == submitted.shots
    for ran in qpu.chunks:
        if not window.owns(ran.job):
            assert ran.end <= window.starts_at + TOLERANCE or ran.start >= window.ends_at
        assert ran.end <= ran.calibrated_at + view.calibration_interval_s + TOLERANCE
