"""The dispatcher loop, written once: decide (the pure policy) → run a chunk → record → repeat.

The daemon (:class:`~qhpc_lab.scheduler.core.Scheduler`), the simulation benchmark
(``benchmarks/simulate.py``) and the policy tests (``tests/test_policy.py``) all drive this
loop, so what the simulation measures is what the daemon runs. What differs between them is
injected:

- the **clock** (:class:`Clock`): the daemon's :class:`WallClock` waits on the event loop; a
  :class:`VirtualClock` jumps to the next thing that happens and fires what was scheduled on
  the way (arrivals);
- the **QPU** (:class:`Driver`, the part of :class:`~qhpc_lab.qpu.QPUDriver` the loop uses):
  the daemon's emulated QPU, or a :class:`SimulatedQPU` that "runs" a chunk by moving the
  virtual clock;
- the **recorder** (:class:`Recorder`): what happens around a chunk or a calibration. The
  daemon's writes the store (retrying through outages), metrics, events and timelines; the
  simulation's tallies its figures.

The loop is async because the daemon's chunks are tasks a cancellation stops. A virtual run
never waits for anything: :func:`play` runs it to the end in one ``asyncio.run``, every await
returning at once, so the simulation stays a synchronous call.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import heapq
import itertools
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from qhpc_lab.qpu import JOB_CANCELED, ChunkCanceled, ChunkNotRun, ChunkOutcome, DeviceState
from qhpc_lab.scheduler.policy import (
    Calibrate,
    Decision,
    DeviceView,
    HoldForLoop,
    LoopPause,
    QueuedJob,
    RunChunk,
)
from qhpc_lab.scheduler.ranking import RankedQueue

log = logging.getLogger("qhpc.scheduler")

Decide = Callable[[DeviceView, float], Decision]
"""A policy as the loop asks it: the device now, the time → what to do next."""
Work = Callable[[QueuedJob, int], Awaitable[tuple[Any, int, int]]]
"""What a chunk the policy chose runs: the job and its shots → the program the driver gets,
the chunk's shots (a sweep's chunk stops at its set's end) and what that program still needs."""


async def whole_job(job: QueuedJob, shots: int) -> tuple[Any, int, int]:
    """A chunk as the policy chose it, of a job without a program (a virtual run)."""
    return None, shots, job.remaining


class Clock(Protocol):
    """The loop's time: what it is now, and how to wait for the next thing to do."""

    def now(self) -> float: ...

    async def idle(self, until: float | None, wake: asyncio.Event) -> None:
        """Return at ``until`` (None: never by itself) or once ``wake`` is set."""
        ...


class WallClock:
    """Real time: ``now`` is the injected clock (``time.time``), an idle wait sleeps."""

    def __init__(self, now: Callable[[], float] = time.time) -> None:
        self.now = now

    async def idle(self, until: float | None, wake: asyncio.Event) -> None:
        timeout = None if until is None else max(0.0, until - self.now())
        # asyncio.timeout, not wait_for: Python 3.11's wait_for swallows a cancellation that
        # lands as the wake-up does, and stopping the dispatcher would then wait forever.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await wake.wait()


class IdleForever(RuntimeError):
    """A virtual run asked to wait with nothing scheduled: nothing would ever wake it."""


class VirtualClock:
    """Virtual time: what is scheduled with :meth:`at` fires, in time order, as time passes."""

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self._events: list[tuple[float, int, Callable[[], None]]] = []
        self._order = itertools.count()

    def now(self) -> float:
        return self._now

    def at(self, when: float, action: Callable[[], None]) -> None:
        """Run ``action`` when the clock reaches ``when`` (ties: in the order scheduled)."""
        heapq.heappush(self._events, (when, next(self._order), action))

    @property
    def pending(self) -> bool:
        return bool(self._events)

    def advance(self, to: float) -> None:
        """Move to ``to`` (never back), running what is due on the way at its own time."""
        while self._events and self._events[0][0] <= to:
            when, _, action = heapq.heappop(self._events)
            self._now = max(self._now, when)
            action()
        self._now = max(self._now, to)

    async def idle(self, until: float | None, wake: asyncio.Event) -> None:
        """Jump to ``until`` or the next scheduled event, whichever is first."""
        wake_at = min(
            math.inf if until is None else until, self._events[0][0] if self._events else math.inf
        )
        if wake_at == math.inf:
            raise IdleForever(f"idle at {self._now} with nothing scheduled")
        if wake_at <= self._now:
            raise RuntimeError(f"idle at {self._now} until the past ({wake_at})")
        self.advance(wake_at)


class Driver(Protocol):
    """What the loop asks of a QPU (a :class:`~qhpc_lab.qpu.QPUDriver` is one)."""

    @property
    def calibrated_at(self) -> float: ...

    async def run_chunk(
        self, key: str, program: Any, shots: int, remaining: int
    ) -> ChunkOutcome: ...

    async def calibrate(self) -> None: ...


class SimulatedQPU:
    """A QPU on a :class:`VirtualClock`: a chunk of ``n`` shots moves the clock by
    ``setup_s + n × time_per_shot_s``, a calibration by ``calibration_duration_s``; counts split
    the shots between two outcomes. As the QPU API driver reports a chunk, it starts after its
    setup, and its device time is its shots' (the setup is charged to no one)."""

    def __init__(
        self,
        clock: VirtualClock,
        time_per_shot_s: float,
        calibration_duration_s: float,
        calibrated_at: float = 0.0,
        setup_s: float = 0.0,
    ) -> None:
        self.clock = clock
        self.time_per_shot_s = time_per_shot_s
        self.calibration_duration_s = calibration_duration_s
        self.calibrated_at = calibrated_at
        self.setup_s = setup_s
        self.state = DeviceState.ONLINE

    async def run_chunk(self, key: str, program: Any, shots: int, remaining: int) -> ChunkOutcome:
        if not 0 < shots <= remaining:
            raise RuntimeError(f"bad chunk of {shots} shots for job {key} ({remaining} left)")
        start = self.clock.now() + self.setup_s
        device_seconds = shots * self.time_per_shot_s
        self.clock.advance(start + device_seconds)
        half = shots // 2
        counts = {"01": half, "10": shots - half}
        age = start - self.calibrated_at
        return ChunkOutcome(counts, start, start + device_seconds, age, device_seconds, 0.0)

    async def calibrate(self) -> None:
        self.state = DeviceState.CALIBRATING
        self.clock.advance(self.clock.now() + self.calibration_duration_s)
        self.calibrated_at = self.clock.now()
        self.state = DeviceState.ONLINE


class Recorder:
    """What the loop tells its owner, and the answers it needs; the defaults do nothing.

    The chunk hooks are called in this order: :meth:`chunk_starting`, then :meth:`chunk_ran`,
    :meth:`chunk_failed` or, when the job was canceled while its chunk ran,
    :meth:`chunk_canceled`. :meth:`chunk_ran` owns the job's progress: it records the chunk
    and updates the job in the queue, or removes it.
    """

    async def chunk_starting(self, job: QueuedJob, shots: int) -> bool:
        """Before a chunk runs; False when the job ended meanwhile (the chunk is skipped)."""
        return True

    async def chunk_ran(self, job: QueuedJob, shots: int, outcome: ChunkOutcome) -> None:
        """A chunk ended; its device time is already in the queue's usage."""

    async def chunk_failed(self, job: QueuedJob, error: Exception) -> None:
        """The driver raised: the job ends in error, the QPU goes on. By default, re-raised."""
        raise error

    async def chunk_canceled(self, job: QueuedJob, canceled: ChunkCanceled) -> None:
        """The job was canceled (and dequeued by its canceller) while its chunk was on the
        device: what ran (``canceled.outcome``) is charged to it; its device time is already
        in the queue's usage."""

    def calibrating(self) -> None:
        """A calibration started (the driver says CALIBRATING)."""

    async def calibrated(self, started_at: float, finished_at: float) -> None:
        """A calibration ended."""

    def holding(self, pause: LoopPause, until: float) -> None:
        """The QPU is held for ``pause.loop`` until ``until`` at the latest (rule 9)."""

    def hold_ended(self, pause: LoopPause, started_at: float, finished_at: float) -> None:
        """A hold ended (the loop's next job came, someone else goes next, or time ran out);
        its seconds are already charged to the loop's account."""

    def step_failed(self, error: Exception) -> None:
        """A step raised (supervised runs only: :meth:`Dispatcher.run_forever`)."""

    def step_succeeded(self) -> None:
        """A step ended normally (supervised runs only)."""


class Dispatcher:
    """The loop: one :meth:`step` decides and acts; :meth:`run_forever` repeats it, supervised.

    ``decide`` defaults to the ranked queue's (``policy.decide`` kept incrementally); the
    simulation's baselines pass their own. ``work`` gives the driver a chunk's program.
    """

    def __init__(
        self,
        queue: RankedQueue,
        driver: Driver,
        clock: Clock,
        device: Callable[[], DeviceView],
        recorder: Recorder | None = None,
        work: Work = whole_job,
        decide: Decide | None = None,
    ) -> None:
        self.queue = queue
        self.driver = driver
        self.clock = clock
        self.device = device
        self.recorder = recorder or Recorder()
        self.work = work
        self.decide = decide or queue.decide
        self.running: int | None = None
        """The job whose chunk is running (from just before it starts to just after it ends)."""
        self._chunk: asyncio.Task[ChunkOutcome] | None = None
        self._wake = asyncio.Event()
        self._calibration_requested = False

    def wake(self) -> None:
        """Something changed (a submission, a cancellation, the device): decide again now."""
        self._wake.set()

    def request_calibration(self) -> None:
        """Calibrate next, whatever the policy would do."""
        self._calibration_requested = True
        self._wake.set()

    def cancel_chunk(self, job_id: int) -> None:
        """Stop ``job_id``'s chunk now if it is running (the job was canceled)."""
        if job_id == self.running and self._chunk is not None:
            self._chunk.cancel(JOB_CANCELED)

    async def run_forever(self) -> None:
        """Step forever; an unexpected error is reported and retried with back-off, never fatal."""
        failures = 0
        while True:
            try:
                await self.step()
                failures = 0
                self.recorder.step_succeeded()
            except asyncio.CancelledError:
                raise
            except Exception as err:
                failures += 1
                log.exception("dispatcher error (attempt %d)", failures)
                self.recorder.step_failed(err)
                await asyncio.sleep(min(5.0, 0.1 * 2**failures))

    async def step(self) -> Decision:
        """One decision, and what it asks: a chunk run and recorded, a calibration or a wait."""
        self._wake.clear()
        if self._calibration_requested:
            decision: Decision = Calibrate()
        else:
            decision = self.decide(self.device(), self.clock.now())
        if isinstance(decision, Calibrate):
            await self._calibrate()
        elif isinstance(decision, RunChunk):
            await self._run_chunk(decision)
        elif isinstance(decision, HoldForLoop):
            await self._hold(decision)
        else:
            await self.clock.idle(decision.until, self._wake)
        return decision

    async def _hold(self, decision: HoldForLoop) -> None:
        """Keep the QPU for a loop until ``decision.until`` or a wake-up; charge the loop."""
        pause = self.queue.pause
        assert pause is not None, "the policy holds only for a paused loop"
        started = self.clock.now()
        self.recorder.holding(pause, decision.until)
        await self.clock.idle(decision.until, self._wake)
        self.queue.record_hold(started, self.clock.now())
        self.recorder.hold_ended(pause, started, self.clock.now())

    async def _calibrate(self) -> None:
        self.queue.end_pause()
        self._calibration_requested = False
        started = self.clock.now()
        calibration = asyncio.create_task(self.driver.calibrate())
        await asyncio.sleep(0)  # the driver says CALIBRATING before anyone is told
        self.recorder.calibrating()
        await calibration
        await self.recorder.calibrated(started, self.clock.now())

    async def _run_chunk(self, decision: RunChunk) -> None:
        job = self.queue.get(decision.job_id)
        assert job is not None, "the policy picks only queued jobs"
        self.queue.end_pause()
        self.running = job.id
        try:
            program, shots, remaining = await self.work(job, decision.shots)
            if not await self.recorder.chunk_starting(job, shots):
                return
            self._chunk = asyncio.create_task(
                self.driver.run_chunk(str(job.id), program, shots, remaining)
            )
            try:
                outcome = await self._chunk
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise  # the dispatcher is stopping: the daemon requeues the job at start
                # The job was canceled before the driver had anything on the device.
                await self.recorder.chunk_canceled(job, ChunkCanceled(0, None))
                return
            except ChunkCanceled as canceled:  # the job was canceled: charge what ran
                if canceled.outcome is not None:
                    ran = canceled.outcome
                    self.queue.record_chunk(
                        job, ran.finished_at - ran.device_seconds, ran.finished_at
                    )
                await self.recorder.chunk_canceled(job, canceled)
                _stop_if_stopping()
                return
            except ChunkNotRun as err:  # nothing ran: the job waits for the next decision
                log.warning("chunk of job %s not run: %s", job.id, err)
                return
            except Exception as err:  # an emulator failure or a budget ends this job, not the QPU
                await self.recorder.chunk_failed(job, err)
                return
            finally:
                self._chunk = None
        finally:
            self.running = None
        # Fair share counts what the device spent, not the emulator's own time.
        started = outcome.finished_at - outcome.device_seconds
        self.queue.record_chunk(job, started, outcome.finished_at)
        await self.recorder.chunk_ran(job, shots, outcome)
        if job.id not in self.queue:
            self.queue.loop_ended_job(job, outcome.finished_at)
        _stop_if_stopping()  # recorded first: those shots ran


def progress(queue: RankedQueue, job: QueuedJob, shots: int) -> QueuedJob | None:
    """A virtual run's record of a chunk: ``job`` (as the chunk found it) with ``shots`` more
    done, updated in ``queue``, or taken out of it (None) once every shot has run. The daemon
    reads the same from its store instead."""
    done = dataclasses.replace(job, shots_done=job.shots_done + shots)
    if done.remaining:
        queue.update(done)
        return done
    queue.remove(job.id)
    return None


def play(
    dispatcher: Dispatcher,
    clock: VirtualClock,
    done: Callable[[], bool],
    max_steps: int | None = None,
) -> int:
    """Drive ``dispatcher`` on ``clock`` until ``done()`` (checked before every step, once what
    is due has fired); the steps taken. Past ``max_steps`` raises; an idle wait with nothing
    scheduled raises :class:`IdleForever`."""

    async def steps() -> int:
        taken = 0
        while True:
            clock.advance(clock.now())
            if done():
                return taken
            if max_steps is not None and taken >= max_steps:
                raise RuntimeError(f"no end after {max_steps} steps")
            await dispatcher.step()
            taken += 1

    return asyncio.run(steps())


def _stop_if_stopping() -> None:
    """Raise the dispatcher's own cancellation if it was asked to stop while it awaited a
    chunk: a stop that lands as a job's cancellation does is merged by asyncio into that one,
    which the driver turns into :class:`~qhpc_lab.qpu.ChunkCanceled` (or the chunk ends just
    then), so the dispatcher task would otherwise never see it and stop would wait forever."""
    current = asyncio.current_task()
    if current is not None and current.cancelling():
        raise asyncio.CancelledError
