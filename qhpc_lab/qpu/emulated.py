"""The emulated QPU: local emulators behind hardware-like timing, calibration and drift.

It stands in for a physical QPU, which cannot exist here, and says so in its device state
message. A job's shots are emulated once, on its first chunk, in a worker process (so the
scheduler's event loop never blocks on emulation) under the profile's
:class:`~qhpc_lab.qpu.EmulationBudget`; later chunks draw from those samples. The engine is
the one :func:`qhpc_lab.emulators.choose_engine` picks (QuTiP, emu-sv, or emu-mps for the
registers a real device runs); the result stays counts, as a QPU's, and the log names the
engine and its approximation. Each
chunk then takes ``shots × time_per_shot_s`` of wall time, like hardware, and its bits are
flipped with the readout error that the calibration's age gives (:class:`~qhpc_lab.qpu.Drift`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import random
import time
from collections.abc import Callable
from typing import Any

from qhpc_lab.programs import Program
from qhpc_lab.programs.sdk_imports import defer_iri_grammar
from qhpc_lab.programs.worker import BudgetedWorker, BudgetExceeded, WorkerDied
from qhpc_lab.qpu import (
    JOB_CANCELED,
    Calibration,
    ChunkBudgetExceeded,
    ChunkCanceled,
    ChunkOutcome,
    DeviceProfile,
    DeviceState,
    Ledger,
)

STANDS_IN = "emulated QPU (no physical device): results come from local emulators"

log = logging.getLogger("qhpc.qpu")


_STATES: dict[str, tuple[Any, str]] = {}
_STATES_LIMIT = 64


def _emulate(request: tuple[dict[str, Any], int, int]) -> dict[str, Any]:
    """Runs in the worker process, which keeps final states of recent Pulser programs:
    ``counts`` and ``engine`` (which ran, with its approximation), or ``memory_bytes`` when
    the chosen engine's estimate is past ``memory_cap`` and nothing was started.

    A production campaign or a variational loop at a fixed point resubmits one program many
    times; its evolution is computed once and each job samples the kept state.
    """
    from qhpc_lab import emulators

    envelope, shots, memory_cap = request
    program = Program.from_dict(envelope)
    plan = emulators.plan(program)
    if plan.engine == "aer":
        return {"counts": emulators.run(program, shots, plan.engine), "engine": plan.engine}
    key = json.dumps([program.body, program.variables], sort_keys=True)
    kept = _STATES.get(key)
    if kept is None:
        if plan.memory_bytes > memory_cap:
            return {"engine": plan.engine, "memory_bytes": plan.memory_bytes}
        state, approximation = emulators.evolve(program, plan.engine)
        how = f"{plan.engine} ({approximation.describe()})" if approximation else plan.engine
        kept = state, how
        if len(_STATES) >= _STATES_LIMIT:
            _STATES.pop(next(iter(_STATES)))
        _STATES[key] = kept
    return {"counts": emulators.sample(kept[0], shots), "engine": kept[1]}


def _warm_up() -> None:
    """Pay the SDK imports (seconds, cold) before the first job, not during it.

    Torch gets one thread: the worker shares the machine with the daemon's event loop, and
    emu-sv on two contended threads ran ten times slower than on one (docs/benchmarks.md).
    The IRI grammar that Pulser's jsonschema would build is deferred (``sdk_imports``).
    """
    defer_iri_grammar()
    import emu_mps  # noqa: F401
    import emu_sv  # noqa: F401
    import pulser  # noqa: F401
    import pulser_simulation  # noqa: F401
    import qiskit_aer  # noqa: F401
    import torch

    torch.set_num_threads(1)


_EMULATOR = BudgetedWorker("qhpc-emulator", _emulate, _warm_up)
"""The process's one emulator worker, shared by its drivers (one QPU per daemon; tests make
many drivers in one process and should pay the SDK imports once, not per driver)."""


def emulator_pid() -> int | None:
    """The emulator worker's process id (None before it starts): for metrics and tests."""
    return _EMULATOR.pid


class EmulatedQPU:
    """A :class:`~qhpc_lab.qpu.QPUDriver` over the local emulators."""

    def __init__(
        self,
        profile: DeviceProfile,
        calibrated_at: float | None = None,
        clock: Callable[[], float] = time.time,
        seed: int | None = None,
        *,
        calibration_id: int = 1,
    ) -> None:
        """``calibrated_at`` and ``calibration_id``: the calibration in force, as the store
        kept them (a fresh device counts its first calibration as now, number 1). In process
        a chunk pays no setup (``qhpc qpu serve`` waits the profile's ``job_setup_s``), so the
        profile the scheduler reads here declares none."""
        self.profile = dataclasses.replace(profile, job_setup_s=0.0)
        self.notice = STANDS_IN
        self.ledger: Ledger | None = None
        self.on_change: Callable[[], None] = lambda: None
        self._clock = clock
        self._calibration = Calibration(
            calibration_id, clock() if calibrated_at is None else calibrated_at, profile.drift
        )
        self._state = DeviceState.ONLINE
        self._samples: dict[str, list[str]] = {}
        self._rng = random.Random(seed)

    @property
    def state(self) -> DeviceState:
        return self._state

    @property
    def calibrated_at(self) -> float:
        return self._calibration.calibrated_at

    @property
    def calibration(self) -> Calibration:
        return self._calibration

    @property
    def worker_alive(self) -> bool:
        """Whether the emulator worker process lives (``qhpc_emulator_worker_up``); a dead one
        is replaced at the next job's first chunk."""
        return _EMULATOR.alive

    def start(self) -> None:
        """Start the worker process and import the emulators in it ahead of the first job."""
        _EMULATOR.start()

    async def run_chunk(
        self, key: str, program: Program, shots: int, remaining: int
    ) -> ChunkOutcome:
        """One chunk; raises :class:`~qhpc_lab.qpu.ChunkBudgetExceeded` past the emulation
        budget. Cancelling the awaiting task stops an emulation in progress (the worker is
        replaced); a job's cancellation (:data:`~qhpc_lab.qpu.JOB_CANCELED`) raises
        :class:`~qhpc_lab.qpu.ChunkCanceled` with the time the chunk was on the device and
        the shots that time covered, any other re-raises ``CancelledError``."""
        started = self._clock()
        emulator_seconds = 0.0
        drawn: list[str] = []
        calibration = self._calibration
        age = started - calibration.calibrated_at
        try:
            samples = self._samples.get(key)
            if samples is None or len(samples) < shots:
                samples, emulator_seconds = await self._sample(program, remaining)
                self._samples[key] = samples
            drawn, self._samples[key] = samples[:shots], samples[shots:]
            counts = self._read_out(drawn, calibration.drift.readout_error(age))
            busy = shots * self.profile.time_per_shot_s - (self._clock() - started)
            if busy > 0:
                await asyncio.sleep(busy)
        except asyncio.CancelledError as err:
            if err.args != (JOB_CANCELED,):
                raise
            raise self._canceled(shots, drawn, started, age, emulator_seconds) from None
        device_seconds = shots * self.profile.time_per_shot_s
        return ChunkOutcome(
            counts, started, self._clock(), age, device_seconds, emulator_seconds, calibration
        )

    def _canceled(
        self, shots: int, drawn: list[str], started: float, age: float, emulator_seconds: float
    ) -> ChunkCanceled:
        """What a chunk of ``shots`` stopped now ran: its time on the device so far, and the
        shots that time covered (none while its samples were still being emulated)."""
        time_per_shot_s = self.profile.time_per_shot_s
        calibration = self._calibration
        now = self._clock()
        device_seconds = min(max(0.0, now - started), shots * time_per_shot_s)
        ran = min(len(drawn), int(device_seconds / time_per_shot_s))
        counts = self._read_out(drawn[:ran], calibration.drift.readout_error(age))
        outcome = ChunkOutcome(
            counts, started, now, age, device_seconds, emulator_seconds, calibration
        )
        return ChunkCanceled(ran, outcome)

    async def prepare(self, key: str, program: Program, shots: int) -> float:
        """Emulate ``shots`` of ``program`` now, for the chunks of ``key`` to draw from (a
        device serving the QPU API does it while it loads a job, so that its running time is
        the shots' alone); the seconds it took."""
        samples, seconds = await self._sample(program, shots)
        self._samples[key] = samples
        return seconds

    async def _sample(self, program: Program, shots: int) -> tuple[list[str], float]:
        """``shots`` samples in random order, and the seconds the emulation took."""
        budget = self.profile.emulation
        time_s = budget.time_budget_s(shots, self.profile.time_per_shot_s)
        memory_bytes = int(budget.memory_mb * 2**20)
        try:
            answer, elapsed = await _EMULATOR.call_async(
                (program.to_dict(), shots, memory_bytes), time_s, memory_bytes
            )
        except BudgetExceeded as err:
            if err.what == "time":
                raise ChunkBudgetExceeded(
                    "emulation_time",
                    f"emulating {shots} shots ran past its {time_s:g} s budget "
                    f"({err.value:.1f} s): max({budget.time_floor_s:g} s, "
                    f"{budget.time_factor:g} × {shots} shots × {self.profile.time_per_shot_s:g} s)",
                ) from None
            raise ChunkBudgetExceeded(
                "emulation_memory",
                f"emulating {shots} shots took the emulator to {err.value:.0f} MB; "
                f"the cap is {budget.memory_mb:g} MB",
            ) from None
        except WorkerDied as err:
            raise RuntimeError(f"{err}; resubmit the job") from None
        if "memory_bytes" in answer:
            raise ChunkBudgetExceeded(
                "emulation_memory",
                f"emulating it on {answer['engine']} would take about "
                f"{answer['memory_bytes'] / 2**20:.0f} MB (estimate); the cap is "
                f"{budget.memory_mb:g} MB",
            )
        log.info("emulated %d shots on %s in %.1f s", shots, answer["engine"], elapsed)
        samples = [bits for bits, n in answer["counts"].items() for _ in range(n)]
        self._rng.shuffle(samples)
        return samples, elapsed

    def _read_out(self, samples: list[str], error: float) -> dict[str, int]:
        counts: dict[str, int] = {}
        flip = {"0": "1", "1": "0"}
        for bits in samples:
            if error > 0:
                bits = "".join(flip[b] if self._rng.random() < error else b for b in bits)
            counts[bits] = counts.get(bits, 0) + 1
        return counts

    async def calibrate(self) -> None:
        self._state = DeviceState.CALIBRATING
        try:
            await asyncio.sleep(self.profile.calibration_duration_s)
        finally:
            number = self._calibration.id + 1
            self._calibration = Calibration(number, self._clock(), self.profile.drift)
            self._state = DeviceState.ONLINE

    async def adopt(self, flight: object) -> None:
        """Nothing to adopt: an emulated chunk ends with the process that ran it."""
        return None

    def forget(self, key: str) -> None:
        self._samples.pop(key, None)

    async def close(self) -> None:
        """The shared worker outlives a driver; it ends with the process (or its parent)."""
