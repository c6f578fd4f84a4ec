"""The emulated QPU behaves like hardware: chunked shots from one emulation, calibration, and a
readout error that drifts with the calibration's age. Device profiles load from data."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pulser import Pulse, Register, Sequence
from pulser.devices import AnalogDevice

from qhpc_lab.programs import Program, to_program
from qhpc_lab.qpu import (
    ChunkBudgetExceeded,
    DeviceProfile,
    DeviceState,
    Drift,
    EmulationBudget,
    profiles,
)
from qhpc_lab.qpu.emulated import STANDS_IN, EmulatedQPU, emulator_pid
from tests.support.polling import apoll_until
from tests.support.processes import cpu_seconds
from tests.support.programs import pulser_sequence_json


class FakeClock:
    """A clock the test moves by hand, so calibration ages are exact."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


FAST = dataclasses.replace(
    DeviceProfile.load("test"),
    time_per_shot_s=1e-5,
    chunk_seconds=1e-3,
    calibration_duration_s=0.05,
    drift=Drift(readout_error_fresh=0.0, readout_error_per_hour=0.05, readout_error_max=0.25),
)
"""100 shots a chunk, 10 µs a shot, and no readout error right after a calibration."""


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1_000_000.0)


@pytest.fixture
async def qpu(clock: FakeClock) -> AsyncIterator[EmulatedQPU]:
    """A driver calibrated at the clock's start (drivers of a process share one worker)."""
    driver = EmulatedQPU(FAST, clock=clock, seed=7)
    driver.start()
    yield driver
    await driver.close()


@pytest.fixture
def emulations(qpu: EmulatedQPU, monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Every emulation the driver asks its worker for, as the samples it got back."""
    seen: list[list[str]] = []
    original = qpu._sample

    async def spy(program: Program, shots: int) -> tuple[list[str], float]:
        samples, seconds = await original(program, shots)
        seen.append(list(samples))
        return samples, seconds

    monkeypatch.setattr(qpu, "_sample", spy)
    return seen


def _idle_program(atoms: int, shots: int) -> Program:
    """Zero amplitude: the ideal answer is all zeros, so every 1 is a readout error."""
    register = Register.from_coordinates([(6.0 * i, 0.0) for i in range(atoms)], prefix="q")
    sequence = Sequence(register, AnalogDevice)
    sequence.declare_channel("g", "rydberg_global")
    sequence.add(Pulse.ConstantPulse(100, 0.0, 0.0, 0.0), "g")
    sequence.measure("ground-rydberg")
    return to_program(sequence, shots)


def _wrong_bit_fraction(counts: dict[str, int]) -> float:
    bits = sum(len(b) * n for b, n in counts.items())
    return sum(b.count("1") * n for b, n in counts.items()) / bits


@pytest.mark.anyio
async def test_chunks_come_from_one_emulation_and_sum_to_the_shots(
    qpu: EmulatedQPU, clock: FakeClock, emulations: list[list[str]]
) -> None:
    # Age 0: no readout error, so the chunks are exactly the emulated samples.
    program = Program("pulser", pulser_sequence_json(3), 1050)
    remaining, merged, chunks = program.shots, Counter[str](), 0
    while remaining:
        shots = min(FAST.chunk_shots, remaining)
        outcome = await qpu.run_chunk("one-emulation", program, shots, remaining)
        assert sum(outcome.counts.values()) == shots
        assert outcome.calibration_age_s == 0
        assert outcome.device_seconds == pytest.approx(shots * FAST.time_per_shot_s)
        assert (outcome.emulator_seconds > 0) == (chunks == 0), "only the first emulates"
        merged.update(outcome.counts)
        remaining -= shots
        chunks += 1
    assert chunks == 11
    assert len(emulations) == 1
    assert merged == Counter(emulations[0])
    assert sum(merged.values()) == 1050
    assert len(merged) > 1, "a driven register should give more than one bitstring"


@pytest.mark.anyio
async def test_calibrate_goes_through_calibrating_and_resets_the_age(
    qpu: EmulatedQPU, clock: FakeClock
) -> None:
    clock.now += 7200
    assert qpu.state is DeviceState.ONLINE
    assert qpu.calibrated_at == clock.now - 7200
    task = asyncio.create_task(qpu.calibrate())

    async def calibrating() -> bool:
        return qpu.state is DeviceState.CALIBRATING

    # no pause between looks: the calibration lasts 50 ms of real time
    await apoll_until(calibrating, "the calibration to start", timeout=10, interval=0)
    clock.now += 1
    await task
    assert qpu.state is DeviceState.ONLINE
    assert qpu.calibrated_at == clock.now


def test_drift_grows_linearly_and_is_capped() -> None:
    drift = Drift(readout_error_fresh=0.01, readout_error_per_hour=0.05, readout_error_max=0.25)
    assert drift.readout_error(0) == 0.01
    assert drift.readout_error(3600) == pytest.approx(0.06)
    assert drift.readout_error(2 * 3600) == pytest.approx(0.11)
    assert drift.readout_error(100 * 3600) == 0.25
    ages = [0, 60, 600, 3600, 4 * 3600, 24 * 3600]
    errors = [drift.readout_error(age) for age in ages]
    assert errors == sorted(errors)


@pytest.mark.anyio
async def test_readout_error_grows_with_calibration_age(
    qpu: EmulatedQPU, clock: FakeClock, emulations: list[list[str]]
) -> None:
    # 8000 bits a chunk: the binomial spread is under 0.005, the tolerance 0.02.
    chunk, ages = 2000, [0.0, 3600.0, 10 * 3600.0]
    program = _idle_program(4, chunk * len(ages))
    fractions = []
    for i, age in enumerate(ages):
        clock.now = qpu.calibrated_at + age
        remaining = program.shots - i * chunk
        outcome = await qpu.run_chunk("drift", program, chunk, remaining)
        assert outcome.calibration_age_s == age
        fractions.append(_wrong_bit_fraction(outcome.counts))
    assert emulations == [["0000"] * program.shots]
    assert fractions[0] == 0.0
    assert fractions[1] == pytest.approx(FAST.drift.readout_error(3600), abs=0.02)
    assert fractions[2] == pytest.approx(FAST.drift.readout_error_max, abs=0.02)
    assert fractions[0] < fractions[1] < fractions[2]


@pytest.mark.anyio
async def test_forget_drops_a_jobs_samples(qpu: EmulatedQPU, emulations: list[list[str]]) -> None:
    program = _idle_program(2, 500)
    await qpu.run_chunk("forget", program, 100, 500)
    await qpu.run_chunk("forget", program, 100, 400)
    assert len(emulations) == 1, "later chunks draw from the kept samples"
    qpu.forget("forget")
    qpu.forget("never-ran")
    await qpu.run_chunk("forget", program, 100, 300)
    assert [len(samples) for samples in emulations] == [500, 300]


@pytest.mark.anyio
async def test_driver_says_it_stands_in(qpu: EmulatedQPU) -> None:
    assert qpu.notice == STANDS_IN
    assert qpu.profile == FAST


# --- budgets and cancellation ----------------------------------------------------------------

SLOW = Program("pulser", pulser_sequence_json(14, spacing=5.0, duration=2000), 1)
"""14 atoms on QuTiP: about 14 s of emulation here, far past any budget below."""

SMALL = Program("pulser", pulser_sequence_json(3), 10_000)
"""10000 shots: a budget of 10000 × 1e-5 s × the factor, whatever the floor."""


def _budgeted(**budget: float) -> DeviceProfile:
    return dataclasses.replace(FAST, emulation=EmulationBudget(**budget))


async def _works(driver: EmulatedQPU, key: str) -> None:
    outcome = await driver.run_chunk(key, SMALL, 100, SMALL.shots)
    assert sum(outcome.counts.values()) == 100


@pytest.mark.anyio
async def test_emulation_past_its_time_budget_ends_the_chunk(clock: FakeClock) -> None:
    # 1 shot: max(1 s, 1000 × 1 × 1e-5 s) = 1 s; 10000 shots: 100 s.
    driver = EmulatedQPU(_budgeted(time_floor_s=1.0, time_factor=1000.0), clock=clock)
    driver.start()
    await _works(driver, "warm")  # a warm worker: its imports are not the chunk's
    before = emulator_pid()
    started = time.monotonic()
    with pytest.raises(ChunkBudgetExceeded) as err:
        await driver.run_chunk("slow", SLOW, 1, 1)
    assert time.monotonic() - started < 1.0 + 10
    assert err.value.rule == "emulation_time"
    assert "its 1 s budget" in str(err.value) and "1000 × 1 shots" in str(err.value)
    assert emulator_pid() not in (None, before)
    await _works(driver, "after-time")


@pytest.mark.anyio
async def test_emulation_past_its_memory_cap_ends_the_chunk(clock: FakeClock) -> None:
    # The worker holds hundreds of MB once its SDKs are imported: 50 MB is overrun at once.
    capped = EmulatedQPU(_budgeted(memory_mb=50.0), clock=clock)
    capped.start()
    before = emulator_pid()
    with pytest.raises(ChunkBudgetExceeded) as err:
        await capped.run_chunk("capped", SMALL, 100, SMALL.shots)
    assert err.value.rule == "emulation_memory"
    assert "the cap is 50 MB" in str(err.value)
    assert emulator_pid() not in (None, before)
    await _works(EmulatedQPU(FAST, clock=clock), "after-memory")


@pytest.mark.anyio
async def test_cancel_stops_a_running_emulation(qpu: EmulatedQPU) -> None:
    await _works(qpu, "warm")
    before = emulator_pid()
    idle_cpu_s = cpu_seconds(before)
    chunk = asyncio.create_task(qpu.run_chunk("slow", SLOW, 1, 1))

    async def emulating() -> bool:
        """The idle worker took SLOW and computes (a quarter second of CPU, of its 14 s)."""
        return cpu_seconds(before) - idle_cpu_s >= 0.25

    await apoll_until(emulating, "the worker to start emulating", timeout=120)
    assert not chunk.done()
    started = time.monotonic()
    chunk.cancel()
    with pytest.raises(asyncio.CancelledError):
        await chunk
    assert time.monotonic() - started < 3.0
    assert emulator_pid() not in (None, before)
    await _works(qpu, "after-cancel")


def test_emulation_budget_scales_with_the_shots() -> None:
    budget = EmulationBudget(time_factor=10.0, time_floor_s=30.0)
    assert budget.time_budget_s(100, 0.01) == 30.0
    assert budget.time_budget_s(1000, 0.01) == 100.0
    assert DeviceProfile.load("fresnel-like").emulation.time_budget_s(2000, 0.33) == 660.0


# --- profiles ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", profiles())
def test_every_shipped_profile_loads(name: str) -> None:
    profile = DeviceProfile.load(name)
    assert profile.name == name
    assert profile.description
    assert profile.spec.max_atom_num and profile.spec.max_runs
    assert "rydberg_global" in profile.spec.channels
    assert profile.spec.pulser_device.name == profile.spec.name
    assert profile.chunk_shots >= 1
    assert 0 < profile.calibration_duration_s < profile.calibration_interval_s
    assert profile.drift.readout_error(0) <= profile.drift.readout_error_max
    assert profile.formats == ("pulser",)  # each stands for the analog neutral-atom QPU


def test_the_documented_profiles_ship() -> None:
    assert {"test", "demo", "fresnel-like"} <= set(profiles())


def test_unknown_profile_lists_the_shipped_ones() -> None:
    with pytest.raises(ValueError, match="unknown device profile 'no-such-qpu'") as err:
        DeviceProfile.load("no-such-qpu")
    for name in profiles():
        assert name in str(err.value)


def test_profile_loads_from_a_json_file(tmp_path: Path) -> None:
    shipped = Path(__file__).parents[1] / "qhpc_lab" / "qpu" / "profiles" / "test.json"
    data = json.loads(shipped.read_text())
    data.update(name="lab-bench", time_per_shot_s=0.002, chunk_seconds=0.5)
    data["device"]["max_atom_num"] = 8
    data["emulation"] = {"time_factor": 3.0, "memory_mb": 1024.0}
    path = tmp_path / "lab-bench.json"
    path.write_text(json.dumps(data))
    profile = DeviceProfile.load(str(path))
    assert (profile.name, profile.time_per_shot_s, profile.chunk_shots) == ("lab-bench", 0.002, 250)
    assert profile.spec.max_atom_num == 8
    assert profile.emulation == EmulationBudget(
        time_factor=3.0, time_floor_s=30.0, memory_mb=1024.0
    )
    del data["emulation"]
    path.write_text(json.dumps(data))
    assert DeviceProfile.load(str(path)).emulation == EmulationBudget()
    data["formats"] = ["qasm3"]
    path.write_text(json.dumps(data))
    assert DeviceProfile.load(str(path)).formats == ("qasm3",)
    data["formats"] = ["pulser", "cirq"]
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"'lab-bench' declares formats .*one of pulser, qasm3"):
        DeviceProfile.load(str(path))
