"""A job's place follows its status, not the instant it is read: the same answers while a
chunk of the started job runs and in the moment between two of its chunks."""

from __future__ import annotations

import dataclasses
from typing import Any, cast

from qhpc_lab.qpu import DeviceState
from qhpc_lab.scheduler.gateway import StoreGateway
from qhpc_lab.scheduler.policy import DeviceView, PolicyConfig
from qhpc_lab.scheduler.queue_state import QueueState
from qhpc_lab.scheduler.store import JobRow
from qhpc_lab.scheduler.views import Holds

DEVICE = DeviceView(
    state=DeviceState.ONLINE,
    calibrated_at=0.0,
    calibration_interval_s=3600.0,
    calibration_duration_s=1.0,
    time_per_shot_s=0.01,
    chunk_shots=10,
)


class Situation:
    """A queue with what the dispatcher runs and the holds set by the test."""

    def __init__(self) -> None:
        self.on_device: int | None = None
        self.holds = Holds()
        self.queue = QueueState(
            PolicyConfig(),
            cast(StoreGateway, None),  # no store: nothing here changes the policy
            lambda: DEVICE,
            lambda: self.holds,
            lambda: self.on_device,
            lambda: None,
            lambda _key: None,
            lambda: 100.0,  # after every job here arrived
        )

    def add(self, job_id: int, status: str, job_class: str = "test", shots_done: int = 0) -> None:
        self.queue.enqueue(_row(job_id, status, job_class, shots_done))

    def positions(self) -> dict[int, int | None]:
        return {job.id: self.queue.place(job.id).position for job in self.queue.jobs()}


def _row(job_id: int, status: str, job_class: str, shots_done: int) -> JobRow:
    fields: dict[str, Any] = {field.name: None for field in dataclasses.fields(JobRow)}
    fields.update(
        id=job_id,
        user_id="u",
        status=status,
        job_class=job_class,
        format="pulser",
        body="{}",
        variables={},
        shots=100,
        shots_done=shots_done,
        counts={},
        qpu_seconds=0.0,
        emulator_seconds=0.0,
        calibrations=[],
        single_calibration=False,
        created_at=float(job_id),
    )
    return JobRow(**fields)


def test_a_started_job_is_at_0_during_and_between_its_chunks() -> None:
    situation = Situation()
    situation.add(1, "RUNNING", shots_done=10)
    situation.add(2, "PENDING")
    seen = []
    for on_device in (1, None):  # a chunk of job 1 runs; then none, between two of its chunks
        situation.on_device = on_device
        estimate = situation.queue.estimate("u", 10, "test")
        snapshot = situation.queue.snapshot()
        seen.append((situation.positions(), estimate.position, snapshot.depth["test"]))
    assert seen == [({1: 0, 2: 1}, 2, 1)] * 2


def test_a_started_job_that_a_class_above_overtook_stays_at_0() -> None:
    situation = Situation()
    situation.add(1, "RUNNING", job_class="production", shots_done=10)
    situation.add(2, "PENDING", job_class="development")
    assert situation.positions() == {1: 0, 2: 1}
    situation.on_device = 2  # the development job's first chunk, before the store says RUNNING
    assert situation.positions() == {1: 0, 2: 0}
    # It waits again (counted as waiting), and a job behind it still counts it ahead.
    assert sum(situation.queue.waiting_depth().values()) == 1
    situation.add(3, "PENDING", job_class="production")
    assert situation.positions()[3] == 2


def test_holds_by_status() -> None:
    situation = Situation()
    situation.add(1, "RUNNING", shots_done=10)
    situation.add(2, "PENDING")
    situation.holds = Holds(draining=True)
    assert [situation.queue.place(i).held_by for i in (1, 2)] == [None, "draining"]
    situation.holds = Holds(maintenance=True)
    held = [situation.queue.place(i) for i in (1, 2)]
    assert [(p.position, p.eta_s, p.held_by) for p in held] == [
        (0, None, "maintenance"),
        (1, None, "maintenance"),
    ]
