"""The emulated QPU: local emulators behind hardware-like timing, calibration and drift.

It stands in for a physical QPU, which cannot exist here, and says so in its device state
message. A job's shots are emulated once, on its first chunk, in a worker process (so the
scheduler's event loop never blocks on emulation); later chunks draw from those samples. Each
chunk then takes ``shots × time_per_shot_s`` of wall time, like hardware, and its bits are
flipped with the readout error that the calibration's age gives (:class:`~qhpc_lab.qpu.Drift`).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ctypes
import json
import multiprocessing
import os
import random
import signal
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from qhpc_lab.programs import Program
from qhpc_lab.qpu import ChunkOutcome, DeviceProfile, DeviceState

STANDS_IN = "emulated QPU (no physical device): results come from local emulators"


def _die_with_parent(scheduler_pid: int) -> None:
    """A scheduler killed with SIGKILL must not leave its emulator worker behind.

    The death signal covers only a parent that dies after it is set; a scheduler killed while
    this worker was still starting is gone already, and the worker would wait forever.
    """
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != scheduler_pid:
        os._exit(1)


_STATES: dict[str, Any] = {}
_STATES_LIMIT = 64


def _emulate(envelope: dict[str, Any], shots: int) -> dict[str, int]:
    """Runs in the worker process, which keeps final states of recent Pulser programs.

    A production campaign or a variational loop at a fixed point resubmits one program many
    times; its evolution is computed once and each job samples the kept state.
    """
    from qhpc_lab import emulators

    program = Program.from_dict(envelope)
    engine = emulators.choose_engine(program)
    if engine == "aer":
        return emulators.run(program, shots, engine)
    key = json.dumps([program.body, program.variables], sort_keys=True)
    state = _STATES.get(key)
    if state is None:
        state = emulators.final_state(program, engine)
        if len(_STATES) >= _STATES_LIMIT:
            _STATES.pop(next(iter(_STATES)))
        _STATES[key] = state
    return emulators.sample(state, shots)


def _warm_up() -> None:
    """Pay the SDK imports (seconds, cold) before the first job, not during it.

    Torch gets one thread: the worker shares the machine with the daemon's event loop, and
    emu-sv on two contended threads ran ten times slower than on one (docs/benchmarks.md).
    """
    import pulser  # noqa: F401
    import pulser_simulation  # noqa: F401
    import qiskit_aer  # noqa: F401
    import torch

    torch.set_num_threads(1)


def _serve(connection: Connection, scheduler_pid: int) -> None:
    """The worker process: emulate requests from the pipe, one at a time, until it closes."""
    _die_with_parent(scheduler_pid)
    _warm_up()
    while True:
        try:
            envelope, shots = connection.recv()
        except EOFError:
            return
        try:
            connection.send((True, _emulate(envelope, shots)))
        except Exception as err:  # the job fails with the reason; the worker lives on
            connection.send((False, f"{type(err).__name__}: {err}"))


class WorkerDied(RuntimeError):
    pass


class _EmulatorWorker:
    """One spawned emulator process, spoken to over a pipe.

    The QPU runs one chunk at a time, so one process and one lock suffice. Calls block and are
    made from a helper thread (``asyncio.to_thread``): Python 3.11's ProcessPoolExecutor wrote
    to its wake-up pipe on the event loop at every submit, which was 18 % of the daemon's time
    under load.
    """

    def __init__(self) -> None:
        context = multiprocessing.get_context("spawn")
        self._connection, child = context.Pipe()
        self.process = context.Process(
            target=_serve, args=(child, os.getpid()), name="qhpc-emulator", daemon=True
        )
        self.process.start()
        child.close()
        self._lock = threading.Lock()

    def emulate(self, envelope: dict[str, Any], shots: int) -> dict[str, int]:
        with self._lock:
            try:
                self._connection.send((envelope, shots))
                ok, answer = self._connection.recv()
            except (EOFError, OSError):
                raise WorkerDied("the emulator worker process died; resubmit the job") from None
        if not ok:
            raise RuntimeError(answer)
        return answer

    def stop(self) -> None:
        self._connection.close()
        self.process.join(5)
        if self.process.is_alive():
            self.process.kill()


_worker: _EmulatorWorker | None = None


def _emulator_worker() -> _EmulatorWorker:
    """The process's one emulator worker, shared by its drivers (one QPU per daemon; tests make
    many drivers in one process and should pay the SDK imports once, not per driver)."""
    global _worker
    if _worker is None or not _worker.process.is_alive():
        _worker = _EmulatorWorker()
        atexit.register(_discard_worker)
    return _worker


def _discard_worker() -> None:
    global _worker
    if _worker is not None:
        _worker.stop()
        _worker = None


class EmulatedQPU:
    """A :class:`~qhpc_lab.qpu.QPUDriver` over the local emulators."""

    def __init__(
        self,
        profile: DeviceProfile,
        calibrated_at: float | None = None,
        clock: Callable[[], float] = time.time,
        seed: int | None = None,
    ) -> None:
        self.profile = profile
        self.notice = STANDS_IN
        self._clock = clock
        self._calibrated_at = clock() if calibrated_at is None else calibrated_at
        self._state = DeviceState.ONLINE
        self._samples: dict[str, list[str]] = {}
        self._rng = random.Random(seed)

    @property
    def state(self) -> DeviceState:
        return self._state

    @property
    def calibrated_at(self) -> float:
        return self._calibrated_at

    @property
    def worker_alive(self) -> bool:
        """Whether the emulator worker process lives (``qhpc_emulator_worker_up``); a dead one
        is replaced at the next job's first chunk."""
        return _worker is not None and _worker.process.is_alive()

    def start(self) -> None:
        """Start the worker process and import the emulators in it ahead of the first job."""
        _emulator_worker()

    async def run_chunk(
        self, key: str, program: Program, shots: int, remaining: int
    ) -> ChunkOutcome:
        started = self._clock()
        samples = self._samples.get(key)
        if samples is None or len(samples) < shots:
            samples = await self._sample(program, remaining)
            self._samples[key] = samples
        drawn, self._samples[key] = samples[:shots], samples[shots:]
        age = started - self._calibrated_at
        counts = self._read_out(drawn, self.profile.drift.readout_error(age))
        busy = shots * self.profile.time_per_shot_s - (self._clock() - started)
        if busy > 0:
            await asyncio.sleep(busy)
        return ChunkOutcome(counts, started, self._clock(), age)

    async def _sample(self, program: Program, shots: int) -> list[str]:
        worker = _emulator_worker()
        counts = await asyncio.to_thread(worker.emulate, program.to_dict(), shots)
        samples = [bits for bits, n in counts.items() for _ in range(n)]
        self._rng.shuffle(samples)
        return samples

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
            self._calibrated_at = self._clock()
            self._state = DeviceState.ONLINE

    def forget(self, key: str) -> None:
        self._samples.pop(key, None)

    async def close(self) -> None:
        """The shared worker outlives a driver; it ends with the process (or its parent)."""
