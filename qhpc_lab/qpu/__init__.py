"""QPU drivers behind one small interface: the emulated QPU (:mod:`.emulated`, in process)
and a device behind Pasqal's QPU API (:mod:`.api`; ``qhpc qpu serve`` serves the emulated one
that way).

A driver executes shot chunks and reports the device's physical state; ordering and policy
live in the scheduler.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

from qhpc_lab.programs import FORMATS, DeviceSpec, Program
from qhpc_lab.vocabulary import DeviceState as DeviceState  # drivers report it from here


@dataclass(frozen=True)
class Drift:
    """Readout error that grows linearly with time since calibration, capped (docs/design)."""

    readout_error_fresh: float
    readout_error_per_hour: float
    readout_error_max: float

    def readout_error(self, calibration_age_s: float) -> float:
        grown = self.readout_error_fresh + self.readout_error_per_hour * calibration_age_s / 3600
        return min(self.readout_error_max, grown)


@dataclass(frozen=True)
class Calibration:
    """One calibration of a device: what a result names as the conditions it was taken under.

    ``id`` counts the device's calibrations (monotonic, kept across scheduler restarts);
    ``drift`` is how its readout error grows from ``calibrated_at`` on.
    """

    id: int
    calibrated_at: float
    drift: Drift


@dataclass(frozen=True)
class EmulationBudget:
    """What one chunk's emulation may cost before its job is ended (docs/scheduler.md).

    Wall time: ``max(time_floor_s, time_factor × shots emulated × time_per_shot_s)``, i.e. a
    multiple of what the device itself would spend, with a floor for the engines' fixed costs.
    Memory: the emulator worker's resident memory, watched while it emulates.
    """

    time_factor: float = 10.0
    time_floor_s: float = 30.0
    memory_mb: float = 4096.0

    def time_budget_s(self, shots: int, time_per_shot_s: float) -> float:
        return max(self.time_floor_s, self.time_factor * shots * time_per_shot_s)


JOB_CANCELED = "the job was canceled"
"""The message a chunk's task is canceled with when its job was canceled (any other
cancellation is the scheduler stopping): a driver then stops the device's work too."""


class ChunkNotRun(RuntimeError):
    """The chunk did not start and nothing of it ran (the device went DOWN, or changed, before
    accepting it): its job waits in the queue for the next decision, it does not fail."""


class ChunkCanceled(Exception):
    """The job was canceled while its chunk was on the device: what the device did of it is
    charged to the job (its QPU-seconds, its shots, its account's fair share). ``shots`` ran
    (0: none), producing ``outcome`` (None when nothing ran). The emulated QPU stops at once
    and reports the shots its time on the device covered; a QPU behind the QPU API cannot
    stop a program that started, which runs, and is charged, to its end."""

    def __init__(self, shots: int, outcome: ChunkOutcome | None) -> None:
        ran = f"{outcome.device_seconds:.3f} s, {shots} shots" if outcome else "nothing"
        super().__init__(f"{JOB_CANCELED} while its chunk was on the device ({ran} ran)")
        self.shots = shots
        self.outcome = outcome


class ChunkBudgetExceeded(RuntimeError):
    """A chunk's emulation overran its :class:`EmulationBudget`; the worker was replaced.

    ``rule`` is ``emulation_time`` or ``emulation_memory``; the message names the limit and
    the value reached. The job should end in ERROR; the next one runs on a fresh worker.
    """

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.rule = rule


@dataclass(frozen=True)
class DeviceProfile:
    """An emulated device: Pulser specs plus the timing and drift that make it behave like one."""

    name: str
    description: str
    spec: DeviceSpec
    time_per_shot_s: float
    chunk_seconds: float
    calibration_interval_s: float
    calibration_duration_s: float
    drift: Drift
    emulation: EmulationBudget = EmulationBudget()
    calibrates: bool = True
    """Whether the scheduler calibrates the device on ``calibration_interval_s`` (the emulated
    QPU). False: the device calibrates itself, unseen (a QPU behind the QPU API); no periodic
    calibration is due or shown."""
    job_setup_s: float = 0.0
    """Seconds a QPU job spends before its first shot (upload, register loading). Behind the
    QPU API each chunk is one QPU job and pays it: ``qhpc qpu serve`` waits it out, and the
    policy simulation charges it to every chunk."""
    formats: tuple[str, ...] = ("pulser",)
    """Program formats the device's hardware runs; the scheduler refuses others (rule
    ``format``). An analog neutral-atom QPU runs pulser only: analog Qiskit, Qadence and CUDA-Q
    programs reach it as pulser."""

    @property
    def chunk_shots(self) -> int:
        """Shots in one chunk: the unit between which the scheduler may switch jobs."""
        return max(1, int(self.chunk_seconds / self.time_per_shot_s))

    @property
    def shot_share_s(self) -> float:
        """A shot's share of device time, the setup spread over a full chunk: what end
        estimates and quota charges count per shot."""
        return time_per_shot_with_setup(self.time_per_shot_s, self.job_setup_s, self.chunk_shots)

    @classmethod
    def load(cls, name_or_path: str) -> DeviceProfile:
        """A shipped profile by name (``test``, ``demo``, ``fresnel-like``) or a JSON file."""
        path = Path(name_or_path)
        if path.suffix == ".json" and path.exists():
            text = path.read_text()
        else:
            shipped = resources.files(__package__) / "profiles" / f"{name_or_path}.json"
            if not shipped.is_file():
                raise ValueError(
                    f"unknown device profile {name_or_path!r}; shipped: {', '.join(profiles())}"
                )
            text = shipped.read_text()
        data = json.loads(text)
        return cls(
            name=data["name"],
            description=data.get("description", ""),
            spec=DeviceSpec(json.dumps(data["device"])),
            time_per_shot_s=float(data["time_per_shot_s"]),
            chunk_seconds=float(data["chunk_seconds"]),
            calibration_interval_s=float(data["calibration"]["interval_s"]),
            calibration_duration_s=float(data["calibration"]["duration_s"]),
            drift=Drift(**data["drift"]),
            emulation=EmulationBudget(**data.get("emulation", {})),
            job_setup_s=float(data.get("job_setup_s", 0.0)),
            formats=_formats(data.get("formats", ["pulser"]), data["name"]),
        )


def time_per_shot_with_setup(shot_s: float, setup_s: float, chunk_shots: int) -> float:
    """A shot's share of device time when every chunk of ``chunk_shots`` pays ``setup_s``
    first: what the scheduler's ETAs and chunk lengths count for a device with a setup time."""
    return shot_s + setup_s / chunk_shots


def _formats(declared: list[str], profile: str) -> tuple[str, ...]:
    unknown = [fmt for fmt in declared if fmt not in FORMATS]
    if unknown or not declared:
        raise ValueError(
            f"device profile {profile!r} declares formats {declared!r}; "
            f"each must be one of {', '.join(FORMATS)}"
        )
    return tuple(declared)


def profiles() -> list[str]:
    """Names of the shipped device profiles."""
    folder = resources.files(__package__) / "profiles"
    return sorted(
        p.name.removesuffix(".json") for p in folder.iterdir() if p.name.endswith(".json")
    )


@dataclass(frozen=True)
class ChunkOutcome:
    counts: dict[str, int]
    started_at: float
    finished_at: float
    calibration_age_s: float
    device_seconds: float
    """What the device spends on the chunk (shots × time_per_shot_s): what accounting charges."""
    emulator_seconds: float
    """Wall time spent emulating during the chunk (0 when it drew from kept samples)."""
    calibration: Calibration | None = None
    """The calibration the chunk ran under (None from drivers that number none)."""


@dataclass(frozen=True)
class InFlight:
    """A chunk sent to the device as one QPU job, as the scheduler records it: before sending
    (``uid`` None: a restart looks for it by ``pasqman_job_id`` among the jobs after
    ``after_uid``), then with the device's ``uid`` before waiting on it."""

    key: str
    shots: int
    pasqman_job_id: str
    after_uid: int | None
    uid: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InFlight:
        return cls(
            str(data["key"]),
            int(data["shots"]),
            str(data["pasqman_job_id"]),
            data.get("after_uid"),
            data.get("uid"),
        )


class Ledger(Protocol):
    """Where the scheduler keeps what the driver must not forget across a crash."""

    async def sending(self, flight: InFlight) -> None:
        """A QPU job is about to be created: record it before sending (a crash before its
        answer is recorded leaves this trace for the restart to look for)."""
        ...

    async def submitted(self, flight: InFlight) -> None:
        """The QPU job exists (``flight.uid``): record it before waiting on it."""
        ...


class QPUDriver(Protocol):
    """What the scheduler's dispatcher needs from a QPU."""

    profile: DeviceProfile
    notice: str
    """One line users should read about this device (an emulator says it stands in)."""
    ledger: Ledger | None
    """Where the driver records what must survive the scheduler (set by the scheduler)."""
    on_change: Callable[[], None]
    """Called when the device changes by itself (DOWN, UP, new specs): set by the scheduler."""

    @property
    def state(self) -> DeviceState: ...

    @property
    def calibrated_at(self) -> float: ...

    @property
    def calibration(self) -> Calibration:
        """The calibration in force (its ``calibrated_at`` is :attr:`calibrated_at`)."""
        ...

    async def run_chunk(
        self, key: str, program: Program, shots: int, remaining: int
    ) -> ChunkOutcome:
        """Run ``shots`` of ``program``; ``remaining`` (≥ shots) is what the job still needs.

        Raises :class:`ChunkBudgetExceeded` past the emulation budget. Cancelling the awaiting
        task with :data:`JOB_CANCELED` stops the chunk and raises :class:`ChunkCanceled` with
        what ran; any other cancellation (the scheduler stopping) re-raises."""
        ...

    def start(self) -> None:
        """Get ready to run (start workers, connect); called once by the scheduler."""
        ...

    async def calibrate(self) -> None: ...

    async def adopt(self, flight: Any) -> ChunkOutcome | None:
        """The outcome of a chunk a previous scheduler left running on the device (what the
        ledger recorded), or None when it cannot be had (its shots run again)."""
        ...

    def forget(self, key: str) -> None:
        """Drop any state kept for a job that ended."""
        ...

    async def close(self) -> None: ...
