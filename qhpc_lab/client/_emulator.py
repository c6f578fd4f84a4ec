"""The emulator target: :mod:`qhpc_lab.emulators` inside this process, one job at a time.

Jobs run in a worker thread so a notebook kernel stays responsive; they queue in submission
order, with positions like the scheduler's. With a ``device`` profile, programs are checked
against that device first, so a notebook that runs here also fits the QPU it stands in for.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import functools
import itertools
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from qhpc_lab.client._target import (
    JobState,
    LoopMark,
    Quota,
    RefusedError,
    Target,
    TargetInfo,
)
from qhpc_lab.programs import FORMATS, DeviceSpec, Program
from qhpc_lab.vocabulary import DeviceState, JobStatus

if TYPE_CHECKING:
    from qhpc_lab.emulators import Emulation

NOTICE = "local emulator in this process"


class EmulatorTarget(Target):
    kind = "emulator"

    def __init__(self, name: str = "emulator", origin: str = "built in", device: str | None = None):
        super().__init__(name, "emulator", origin)
        self._device = device
        self._spec: DeviceSpec | None = None
        self._jobs: dict[str, JobState] = {}
        self._work: dict[str, Callable[[], dict[str, int] | Emulation]] = {}
        self._ids = itertools.count(1)
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._turn = asyncio.Lock()  # jobs run one at a time, in submission order
        self._changed = asyncio.Condition()
        self._tasks: set[asyncio.Task[None]] = set()

    async def info(self) -> TargetInfo:
        if self._device and self._spec is None:
            from qhpc_lab.qpu import DeviceProfile

            try:
                self._spec = DeviceProfile.load(self._device).spec
            except (ValueError, OSError) as err:
                return self.unreachable(f"target {self.name!r}: {err}")
        return TargetInfo(
            self.name,
            self.kind,
            self.type,
            self.origin,
            True,
            device=self._spec.name if self._spec else "emulator",
            state=DeviceState.ONLINE,
            message=NOTICE,
            spec=self._spec,
            queued=self._queued(),
            formats=FORMATS,
        )

    def _queued(self) -> int:
        return sum(job.status == JobStatus.PENDING for job in self._jobs.values())

    async def watch_device(self) -> AsyncIterator[TargetInfo]:
        """The info, then again whenever the queue length changes (the device never does)."""
        info = await self.info()
        yield info
        while True:
            async with self._changed:
                await self._changed.wait_for(lambda seen=info: self._queued() != seen.queued)
            info = await self.info()
            yield info

    async def _set(self, state: JobState) -> None:
        async with self._changed:
            self._jobs[state.id] = state
            self._changed.notify_all()

    async def submit(
        self,
        program: Program,
        job_class: str | None,
        single_calibration: bool = False,
        max_calibration_age_s: float | None = None,
        loop: LoopMark | None = None,
    ) -> JobState:
        """Queue ``program``; ``job_class`` has no meaning here (one user, FIFO), and every
        job is single-calibration and within any calibration-age bound (the emulator never
        calibrates nor drifts)."""
        return await self._queue(functools.partial(_emulate, program), program.shots)

    async def submit_native(self, sample: Callable[[int], dict[str, int]], shots: int) -> JobState:
        """Queue a program that only an in-process engine runs (a digital Qadence circuit on
        pyqtorch, :class:`qhpc_lab.programs.NativeProgram`): ``sample(shots)`` gives counts."""
        return await self._queue(functools.partial(sample, shots), shots)

    async def _queue(self, work: Callable[[], dict[str, int] | Emulation], shots: int) -> JobState:
        job_id = str(next(self._ids))
        self._work[job_id] = work
        await self._set(
            JobState(job_id, JobStatus.PENDING, shots=shots, created_at=datetime.now(UTC))
        )
        task = asyncio.create_task(self._run(job_id), name=f"qhpc-emulator-{job_id}")
        self._tasks.add(task)  # the loop keeps only weak references to tasks
        task.add_done_callback(self._tasks.discard)
        return self._view(job_id)

    async def _run(self, job_id: str) -> None:
        async with self._turn:
            work = self._work.pop(job_id)
            if self._jobs[job_id].final:
                return
            await self._set(
                dataclasses.replace(self._jobs[job_id], status=JobStatus.RUNNING, started_at=_now())
            )
            if self._executor is None:
                self._executor = concurrent.futures.ThreadPoolExecutor(
                    1, thread_name_prefix="qhpc-emulator"
                )
            loop = asyncio.get_running_loop()
            outcome: dict[str, Any]
            try:
                done = await loop.run_in_executor(self._executor, work)
            except Exception as err:
                outcome = {"status": JobStatus.ERROR, "error": f"emulation failed: {err}"}
            else:
                counts = done if isinstance(done, dict) else done.counts
                outcome = {
                    "status": JobStatus.DONE,
                    "counts": counts,
                    "shots_done": sum(counts.values()),
                }
                if not isinstance(done, dict):  # an Emulation says how it was obtained
                    approximate = done.approximation
                    outcome["engine"] = done.engine
                    outcome["approximation"] = approximate.describe() if approximate else None
            if not self._jobs[job_id].final:  # canceled while running: the outcome is dropped
                await self._set(
                    dataclasses.replace(self._jobs[job_id], finished_at=_now(), **outcome)
                )

    async def state(self, job_id: str) -> JobState:
        return self._view(job_id)

    def _view(self, job_id: str) -> JobState:
        state = self._jobs.get(job_id)
        if state is None:
            raise RefusedError(f"job {job_id} not found on target {self.name!r}", 404)
        if state.final:
            return state
        pending = [j.id for j in self._jobs.values() if j.status == JobStatus.PENDING]
        position = 0 if state.status == JobStatus.RUNNING else pending.index(job_id) + 1
        return dataclasses.replace(state, position=position)

    async def cancel(self, job_id: str) -> JobState:
        self._view(job_id)  # unknown ids are refused
        state = self._jobs[job_id]
        if not state.final:
            await self._set(
                dataclasses.replace(state, status=JobStatus.CANCELED, finished_at=_now())
            )
        return self._view(job_id)

    async def watch(self, job_id: str) -> AsyncIterator[JobState]:
        state = self._view(job_id)
        yield state
        while not state.final:
            async with self._changed:
                await self._changed.wait_for(lambda seen=state: self._view(job_id) != seen)
            state = self._view(job_id)
            yield state

    async def quotas(self) -> list[Quota]:
        """None: nothing limits emulation in this process."""
        return []

    async def aclose(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)


def _emulate(program: Program) -> Emulation:
    """The counts with the engine that ran and its approximation (emu-mps past emu-sv's reach),
    which the job's result states."""
    from qhpc_lab import emulators

    return emulators.emulate(program)


def _now() -> datetime:
    return datetime.now(UTC)
