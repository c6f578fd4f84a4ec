"""Scheduling policy: a pure function of (queue, sessions, device, clock) → what to do next.

No I/O and no wall clock: the dispatcher, the tests and the simulation benchmarks call the
same functions with real or virtual time. Ordering is decided here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from qhpc_lab.qpu import DeviceState

JOB_CLASSES = ("development", "test", "production")


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

    @property
    def remaining(self) -> int:
        return self.shots - self.shots_done

    @property
    def started(self) -> bool:
        return self.shots_done > 0


@dataclass(frozen=True)
class DeviceView:
    """The device as the policy sees it at one instant."""

    state: DeviceState
    calibrated_at: float
    calibration_interval_s: float
    calibration_duration_s: float
    time_per_shot_s: float
    chunk_shots: int
    accepting: bool = True
    """False while an operator drains the QPU: started jobs finish, new ones wait."""

    @property
    def next_calibration_at(self) -> float:
        return self.calibrated_at + self.calibration_interval_s


@dataclass(frozen=True)
class PolicyConfig:
    """Operator settings. Interactive development work outranks batch production by default."""

    class_priority: Mapping[str, int] = field(
        default_factory=lambda: {"development": 30, "test": 20, "production": 10}
    )


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


Decision = RunChunk | Calibrate | Idle


def order(queue: Sequence[QueuedJob], config: PolicyConfig) -> list[QueuedJob]:
    """The queue in the order the policy would serve it: class priority, then arrival."""
    return sorted(
        queue, key=lambda j: (-config.class_priority.get(j.job_class, 0), j.created_at, j.id)
    )


def decide(
    queue: Sequence[QueuedJob],
    slots: Mapping[str, int],
    device: DeviceView,
    now: float,
    config: PolicyConfig,
) -> Decision:
    """The next action for an idle QPU. ``slots`` maps session ids to their QPU shares."""
    if device.state in (DeviceState.MAINTENANCE, DeviceState.OFFLINE):
        return Idle(None)
    if now >= device.next_calibration_at:
        return Calibrate()
    candidates = [j for j in order(queue, config) if device.accepting or j.started]
    if not candidates:
        return Idle(device.next_calibration_at)
    job = candidates[0]
    return RunChunk(job.id, min(job.remaining, device.chunk_shots))


def estimates(
    queue: Sequence[QueuedJob], device: DeviceView, now: float, config: PolicyConfig
) -> dict[int, tuple[int, float]]:
    """Queue position (1 = next) and seconds until each job is expected to finish."""
    result: dict[int, tuple[int, float]] = {}
    t = now
    calibration_at = device.next_calibration_at
    for position, job in enumerate(order(queue, config), start=1):
        t += job.remaining * device.time_per_shot_s
        if t > calibration_at:
            t += device.calibration_duration_s
            calibration_at += device.calibration_interval_s
        result[job.id] = (position, max(0.0, t - now))
    return result
