"""Job (a submitted program, on one target) and Result (its counts and where they came from)."""

from __future__ import annotations

import asyncio
import html
import warnings
from collections.abc import AsyncIterator, Callable, Generator
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from qhpc_lab.client import _loop
from qhpc_lab.client._target import (
    CalibrationRange,
    JobError,
    JobState,
    SetResult,
    Target,
    TargetInfo,
    frequencies,
    ranked_counts,
)
from qhpc_lab.client._timeline import plot_timeline
from qhpc_lab.vocabulary import JobStatus, format_duration, format_position, format_sets_done

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from qhpc_lab.programs import Program

SHOWN_OUTCOMES = 16
"""Bitstrings listed in text and HTML views (the most frequent); ``counts`` has them all."""


class Job:
    """A program submitted to a target. Live properties ask the target while it is unfinished.

    Block with ``wait()`` / ``result()``, or ``await job`` for the Result in async code and
    notebooks. ``state`` is the last known :class:`JobState`, read without I/O.
    """

    def __init__(
        self,
        target: Target,
        state: JobState,
        device: str | None,
        route: str | None = None,
        program: Program | None = None,
        job_class: str | None = None,
    ) -> None:
        self._target = target
        self._device = device
        self.state = state
        self.route = route
        """Why the client chose this target among several (``target="auto"``); None when
        the target was named or the only one."""
        self.program = program
        """The program as it was sent (a notebook run records its hash); None for a job this
        process did not submit."""
        self.job_class = job_class
        """The class it was submitted with; None: the target's default (or not known)."""

    @property
    def id(self) -> str:
        return self.state.id

    @property
    def target(self) -> str:
        """The target's name."""
        return self._target.name

    @property
    def status(self) -> str:
        """PENDING, RUNNING, DONE, ERROR or CANCELED."""
        return self.refresh().status

    @property
    def position(self) -> int | None:
        """1 = next to run, 0 = running, None once finished."""
        return self.refresh().position

    @property
    def start_in_s(self) -> float | None:
        """Seconds until the job is expected to start (0 once started), when the target
        estimates it (:attr:`JobState.start_in_s`)."""
        return self.refresh().start_in_s

    @property
    def end_in_s(self) -> float | None:
        """Seconds until the job is expected to end, when the target estimates it."""
        return self.refresh().end_in_s

    @property
    def eta_s(self) -> float | None:
        """Deprecated: :attr:`end_in_s` (or :attr:`start_in_s`: an ETA is one or the other)."""
        warnings.warn(
            "Job.eta_s is deprecated and will be removed: use end_in_s (or start_in_s)",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.refresh().end_in_s

    def refresh(self) -> JobState:
        """The job's current state (no I/O once it is final)."""
        if not self.state.final:
            self.state = _loop.call(self._target.state(self.id))
        return self.state

    def wait(self, timeout: float | None = None) -> str:
        """Block until the job ends; return its final status.

        ``timeout`` defaults to the target's job timeout (``{name}_QRMI_JOB_TIMEOUT_SECONDS``),
        else none; past it, TimeoutError (the job goes on).
        """
        return _loop.call(self._final(timeout)).status

    def result(self, timeout: float | None = None) -> Result:
        """Wait (as :meth:`wait`) and return the Result; JobError if the job ended without one."""
        return self._result(*_loop.call(self._ended(timeout)))

    def timeline(self) -> list[dict[str, Any]] | None:
        """Why the job waited: its chunks, the classes that ran while it waited, and the
        calibrations and holds it sat through (docs/operations.md); None where the target
        keeps no timeline (the emulator, QRMI resources, plain Warden)."""
        return _loop.call(self._target.timeline(self.id))

    async def atimeline(self) -> list[dict[str, Any]] | None:
        """:meth:`timeline` for async code (the panel)."""
        return await _loop.acall(self._target.timeline(self.id))

    def logs(self) -> str:
        """The job's story as text, as its target tells it: a scheduler's ``GET
        /jobs/{id}/logs`` (summary, then queued, chunks run, waits, holds, end), a QRMI
        resource's task logs, or what this process knows (the emulator keeps no log)."""
        return _loop.call(self._target.logs(self.id))

    def cancel(self) -> str:
        """Cancel the job unless it already ended; return its status afterwards."""
        self.state = _loop.call(self._target.cancel(self.id))
        return self.state.status

    async def watch(self) -> AsyncIterator[JobState]:
        """Each change of the job, from the current state to the final one, in the caller's
        loop: the hook for live displays (no thread or polling loop per job)."""
        async for state in _loop.aiterate(self._target.watch(self.id)):
            self.state = state
            yield state

    async def watch_device(self) -> AsyncIterator[TargetInfo]:
        """The job's target, then each change of its device (state, calibration, queue
        length), in the caller's loop until the caller stops: what a live display shows
        beside the job. Targets without a change feed yield their info once."""
        async for info in _loop.aiterate(self._target.watch_device()):
            yield info

    async def acancel(self) -> str:
        """:meth:`cancel` for async code: the caller's loop (a kernel's) stays free."""
        self.state = await _loop.acall(self._target.cancel(self.id))
        return self.state.status

    def __await__(self) -> Generator[Any, None, Result]:
        return self._aresult().__await__()

    async def _aresult(self) -> Result:
        return self._result(*await _loop.acall(self._ended(None)))

    async def _ended(self, timeout: float | None) -> tuple[JobState, tuple[SetResult, ...]]:
        """The final state and, for a sweep that ended DONE, its results per set."""
        state = await self._final(timeout)
        if state.sets is None or state.status != JobStatus.DONE:
            return state, ()
        return state, await self._target.sweep_sets(self.id)

    async def _final(self, timeout: float | None) -> JobState:
        if self.state.final:
            return self.state
        timeout = self._target.job_timeout_s if timeout is None else timeout
        try:
            async with asyncio.timeout(timeout):
                async for state in self._target.watch(self.id):
                    self.state = state
        except TimeoutError:
            raise TimeoutError(
                f"job {self.id} on {self.target} is still {self.state.status} after {timeout:g} s"
            ) from None
        return self.state

    def _result(self, state: JobState, sets: tuple[SetResult, ...] = ()) -> Result:
        if state.status != JobStatus.DONE or state.counts is None:
            reason = f": {state.error}" if state.error else ""
            raise JobError(
                f"job {self.id} on {self.target} ended {state.status}{reason}", state.status
            )
        return Result(
            counts=dict(state.counts),
            job_id=self.id,
            target=self.target,
            device=self._device,
            calibration_age_s=state.calibration_age_s,
            calibrations=state.calibrations,
            created_at=state.created_at,
            started_at=state.started_at,
            finished_at=state.finished_at,
            qpu_seconds=state.qpu_seconds,
            engine=state.engine,
            approximation=state.approximation,
            sets=sets,
            _timeline=self.timeline,
        )

    def __str__(self) -> str:
        state = self.state
        parts = [state.status]
        if state.position is not None:
            parts.append(format_position(state.position))
        if state.held_by is not None:
            parts.append(f"held by {state.held_by}")
        parts += expected_times(state)
        if state.detail:
            parts.append(state.detail)
        if state.sets is not None:
            parts.append(format_sets_done(state.sets_done or 0, state.sets))
        if state.shots:
            parts.append(f"{state.shots_done}/{state.shots} shots")
        if state.error:
            parts.append(state.error)
        return f"job {self.id} on {self.target}: {', '.join(parts)}"

    def __repr__(self) -> str:
        return f"<Job {str(self).removeprefix('job ')}>"


def expected_times(state: JobState, elapsed_s: float = 0.0) -> list[str]:
    """``starts in ~40 s``, ``ends in ~2 min``: a job's two estimates as every text shows them
    (``elapsed_s``: seconds since ``state`` was read, for a display that counts down)."""
    if state.final:
        return []
    parts = []
    start = state.start_in_s
    if start is not None and state.status != JobStatus.RUNNING:
        parts.append(f"starts in ~{format_duration(start - elapsed_s)}")
    if state.end_in_s is not None:
        parts.append(f"ends in ~{format_duration(state.end_in_s - elapsed_s)}")
    return parts


@dataclass(frozen=True)
class Result:
    """Measured bitstring counts, and the context that makes them comparable."""

    counts: dict[str, int]
    job_id: str
    target: str
    device: str | None = None
    calibration_age_s: float | None = None
    """Age of the device's calibration when the shots ran (scheduler targets)."""
    calibrations: tuple[CalibrationRange, ...] = ()
    """The calibrations the shots ran under, one per range of shots (scheduler targets)."""
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    qpu_seconds: float | None = None
    """Device time the job used: its shots × the device's time per shot, as the scheduler
    accounts it (and charges quotas and fair share with). None where unknown: the emulator
    target (no QPU ran it; ``run_s`` is how long it took), QRMI resources, a plain Warden."""
    engine: str | None = None
    """The emulator engine that produced the counts, where the target says (the emulators)."""
    approximation: str | None = None
    """How the counts are approximate (emu-mps's bond dimension, precision): shown with every
    view of the result. None: exact, or the target does not say."""
    sets: tuple[SetResult, ...] = ()
    """A sweep's results per set, in the order submitted (``counts`` is their sum); empty
    for a plain job."""
    _timeline: Callable[[], list[dict[str, Any]] | None] | None = field(
        default=None, repr=False, compare=False
    )

    @property
    def shots(self) -> int:
        return sum(self.counts.values())

    @property
    def probabilities(self) -> dict[str, float]:
        """Each bitstring's frequency, most frequent first."""
        return frequencies(self.counts)

    @property
    def queued_s(self) -> float | None:
        """Seconds from submission to the first shot."""
        return _seconds(self.created_at, self.started_at)

    @property
    def run_s(self) -> float | None:
        """Seconds from the first shot to the last (preemption pauses included)."""
        return _seconds(self.started_at, self.finished_at)

    def plot(self, ax: Axes | None = None) -> Axes:
        """A histogram of the probabilities, bitstrings in order; returns the Axes."""
        if ax is None:
            import matplotlib.pyplot as plt

            _, ax = plt.subplots(figsize=(max(4.0, 0.35 * len(self.counts)), 3))
        ranked = sorted(self.counts)
        total = self.shots or 1
        ax.bar(ranked, [self.counts[b] / total for b in ranked], color="#4c72b0")
        ax.set_xlabel("bitstring")
        ax.set_ylabel("probability")
        ax.set_title(f"job {self.job_id} on {self.target} · {self.shots} shots")
        ax.tick_params(axis="x", labelrotation=90 if len(ranked) > 8 else 0)
        return ax

    def timeline(self) -> list[dict[str, Any]] | None:
        """The job's timeline (:meth:`Job.timeline`), read from the target on each call."""
        return self._timeline() if self._timeline is not None else None

    def plot_timeline(self, ax: Axes | None = None) -> Axes:
        """The timeline drawn: the job's chunks, what ran while it waited, calibrations and
        holds, in seconds since it was queued; ValueError where the target keeps none."""
        entries = self.timeline()
        if entries is None:
            raise ValueError(f"target {self.target} keeps no timeline of job {self.job_id}")
        return plot_timeline(entries, f"job {self.job_id} on {self.target}", ax)

    def _ranked(self) -> list[tuple[str, int]]:
        return ranked_counts(self.counts)

    def _facts(self) -> list[str]:
        facts = [f"{self.shots} shots"]
        if self.sets:
            facts.append(f"a sweep of {len(self.sets)} sets (.sets)")
        if self.engine:
            exact = f"approximate: {self.approximation}" if self.approximation else "exact"
            facts.append(f"engine {self.engine} ({exact})")
        if len(self.calibrations) == 1:
            facts.append(self.calibrations[0].label)
        elif self.calibrations:
            facts.append(f"{len(self.calibrations)} calibrations (.calibrations)")
        elif self.calibration_age_s is not None:
            facts.append(f"calibration age {format_duration(self.calibration_age_s)}")
        if self.queued_s is not None:
            facts.append(f"queued {self.queued_s:.2f} s")
        if self.run_s is not None:
            facts.append(f"ran {self.run_s:.2f} s")
        return facts

    def _title(self) -> str:
        device = f" ({self.device})" if self.device else ""
        return f"Result of job {self.job_id} on {self.target}{device}"

    def __str__(self) -> str:
        lines = [self._title(), "  " + " · ".join(self._facts())]
        if len(self.calibrations) > 1:
            lines += [f"  {calibration}" for calibration in self.calibrations]
        ranked = self._ranked()
        width = max((len(b) for b, _ in ranked[:SHOWN_OUTCOMES]), default=0)
        for bits, count in ranked[:SHOWN_OUTCOMES]:
            share = count / (self.shots or 1)
            lines.append(f"  {bits:<{width}}  {'█' * round(share * 30):<30}  {share:.3f} ({count})")
        if len(ranked) > SHOWN_OUTCOMES:
            lines.append(f"  … {len(ranked) - SHOWN_OUTCOMES} more outcomes in .counts")
        return "\n".join(lines)

    def __repr__(self) -> str:
        top = " ".join(f"{b}:{c}" for b, c in self._ranked()[:4])
        more = " …" if len(self.counts) > 4 else ""
        approximate = " (approximate)" if self.approximation else ""
        return (
            f"<Result job {self.job_id} on {self.target}{approximate}: {self.shots} shots, "
            f"{top}{more}>"
        )

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self) if cycle else str(self))

    def _repr_html_(self) -> str:
        rows = []
        ranked = self._ranked()
        for bits, count in ranked[:SHOWN_OUTCOMES]:
            share = count / (self.shots or 1)
            rows.append(
                f"<tr><td><code>{html.escape(bits)}</code></td>"
                f'<td style="min-width:12em"><div style="background:#4c72b0;height:0.8em;'
                f'width:{share * 100:.1f}%"></div></td>'
                f"<td>{share:.3f}</td><td>{count}</td></tr>"
            )
        if len(ranked) > SHOWN_OUTCOMES:
            rows.append(
                f'<tr><td colspan="4">… {len(ranked) - SHOWN_OUTCOMES} more outcomes in '
                "<code>.counts</code></td></tr>"
            )
        return (
            f'<div class="qhpc-result"><strong>{html.escape(self._title())}</strong><br>'
            f"<small>{html.escape(' · '.join(self._facts()))}</small>"
            f"{self._calibrations_html()}"
            "<table><thead><tr><th>bitstring</th><th></th><th>probability</th><th>count</th>"
            f"</tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
        )

    def _calibrations_html(self) -> str:
        if len(self.calibrations) < 2:
            return ""
        items = "".join(f"<li>{html.escape(str(c))}</li>" for c in self.calibrations)
        return f'<ul class="qhpc-calibrations" style="margin:0">{items}</ul>'


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    return None if start is None or end is None else (end - start).total_seconds()
