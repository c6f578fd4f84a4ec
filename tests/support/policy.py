"""The scheduling policy on a virtual clock: devices and jobs as it sees them, the dispatcher's
loop with a simulated QPU, and hypothesis strategies for both."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from qhpc_lab.qpu import ChunkOutcome, DeviceState
from qhpc_lab.scheduler import policy
from qhpc_lab.scheduler.dispatcher import (
    Dispatcher,
    IdleForever,
    Recorder,
    SimulatedQPU,
    VirtualClock,
    play,
    progress,
)
from qhpc_lab.scheduler.policy import DeviceView, PolicyConfig, QueuedJob
from qhpc_lab.scheduler.ranking import RankedQueue

TOLERANCE = 1e-6

PROPERTIES = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def device(**changes: object) -> DeviceView:
    """A 10 ms-a-shot device with 10-shot chunks, calibrated at 0, every 100 s for 5 s."""
    base = DeviceView(
        state=DeviceState.ONLINE,
        calibrated_at=0.0,
        calibration_interval_s=100.0,
        calibration_duration_s=5.0,
        time_per_shot_s=0.01,
        chunk_shots=10,
    )
    return dataclasses.replace(base, **changes)


def job(
    id: int,
    job_class: str = "production",
    shots: int = 100,
    created_at: float = 0.0,
    session_id: str | None = "s1",
    user_id: str = "u1",
    shots_done: int = 0,
    max_calibration_age_s: float | None = None,
) -> QueuedJob:
    return QueuedJob(
        id, user_id, session_id, job_class, shots, shots_done, created_at, max_calibration_age_s
    )


@dataclass(frozen=True)
class Chunk:
    job: QueuedJob
    """The job as the policy saw it when the chunk started."""
    shots: int
    start: float
    end: float
    calibrated_at: float


class VirtualQPU(Recorder):
    """The daemon's dispatcher loop on a virtual clock with a simulated QPU, logging what ran."""

    def __init__(
        self,
        device: DeviceView,
        config: PolicyConfig | None = None,
        slots: dict[str, int] | None = None,
    ) -> None:
        self.device = device
        """The device as the policy sees it, but for its calibration (the QPU's): tests may
        change it between runs (say, stop draining)."""
        self.clock = VirtualClock()
        self.qpu = SimulatedQPU(
            self.clock,
            device.time_per_shot_s,
            device.calibration_duration_s,
            device.calibrated_at,
            setup_s=device.setup_s,
        )
        self.queue = RankedQueue(config or PolicyConfig())
        for session_id, share in (slots or {}).items():
            self.queue.set_slots(session_id, share)
        self.chunks: list[Chunk] = []
        self.calibrations: list[tuple[float, float]] = []
        self.counts: dict[int, Counter[str]] = {}
        """Each job's result, merged chunk by chunk as the store does."""
        self.dispatcher = Dispatcher(self.queue, self.qpu, self.clock, self.view, self)

    @property
    def now(self) -> float:
        return self.clock.now()

    def view(self) -> DeviceView:
        return dataclasses.replace(self.device, calibrated_at=self.qpu.calibrated_at)

    def submit(self, *jobs: QueuedJob) -> VirtualQPU:
        for submitted in jobs:
            self.clock.at(submitted.created_at, functools.partial(self.queue.add, submitted))
        return self

    def run(
        self, stop: Callable[[VirtualQPU], bool] = lambda qpu: False, max_steps: int = 20_000
    ) -> VirtualQPU:
        """Until every job is done, ``stop`` says so, or the policy idles with nothing coming."""

        def finished() -> bool:
            return (not self.queue and not self.clock.pending) or stop(self)

        with contextlib.suppress(IdleForever):
            play(self.dispatcher, self.clock, finished, max_steps)
        return self

    async def chunk_ran(self, job: QueuedJob, shots: int, outcome: ChunkOutcome) -> None:
        start, end = outcome.started_at, outcome.finished_at
        self.chunks.append(Chunk(job, shots, start, end, self.qpu.calibrated_at))
        self.counts[job.id] = self.counts.get(job.id, Counter()) + Counter(outcome.counts)
        progress(self.queue, job, shots)

    async def calibrated(self, started_at: float, finished_at: float) -> None:
        self.calibrations.append((started_at, finished_at))

    def first_start(self, job_id: int) -> float:
        return min(c.start for c in self.chunks if c.job.id == job_id)


CLASSES = st.sampled_from(policy.JOB_CLASSES)


@st.composite
def devices(draw: st.DrawFn) -> DeviceView:
    time_per_shot_s = draw(st.sampled_from([0.001, 0.01, 0.33]))
    chunk_shots = draw(st.integers(1, 30))
    chunk = chunk_shots * time_per_shot_s
    return DeviceView(
        state=DeviceState.ONLINE,
        calibrated_at=-draw(st.floats(0, 5)) * chunk,
        calibration_interval_s=draw(st.floats(1.5, 25)) * chunk,
        calibration_duration_s=draw(st.floats(0.1, 4)) * chunk,
        time_per_shot_s=time_per_shot_s,
        chunk_shots=chunk_shots,
    )


@st.composite
def workloads(draw: st.DrawFn, view: DeviceView, bounds: bool = True) -> list[QueuedJob]:
    chunk = view.chunk_duration_s
    jobs = []
    for i in range(draw(st.integers(1, 10))):
        bound = None
        if bounds and draw(st.booleans()):
            bound = draw(st.floats(0, 1.2)) * view.calibration_interval_s
        jobs.append(
            job(
                i + 1,
                job_class=draw(CLASSES),
                shots=draw(st.integers(1, 200)),
                created_at=draw(st.floats(0, 20)) * chunk,
                session_id=draw(st.sampled_from(["a", "b", "c", None])),
                user_id=draw(st.sampled_from(["u1", "u2"])),
                max_calibration_age_s=bound,
            )
        )
    return jobs


def configs(view: DeviceView) -> st.SearchStrategy[PolicyConfig]:
    return st.builds(
        PolicyConfig,
        aging_per_chunk=st.sampled_from([0.0, 0.5, 1.0, 4.0]),
        usage_half_life_s=st.sampled_from([1.0, 3600.0]),
        min_calibration_age_s=st.floats(0, 0.5).map(lambda f: f * view.calibration_interval_s),
    )
