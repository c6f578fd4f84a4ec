"""Live panels (ipywidgets) for the ``%qpu`` magics: a job panel and a targets panel.

A :class:`JobPanel` follows its job with asyncio tasks on the kernel's own event loop — one
reads :meth:`Job.watch` (the scheduler's ``event: job``, and the job's place in line from
``event: queue``), one :meth:`Job.watch_device` (``event: device``: state, calibration; the
queue's length from ``event: queue``), one ticks each second to count the expected start and end
down and the calibration age up, with no I/O. So widgets are touched only from the kernel's
thread, no thread or polling loop is made per job, and the tasks end with the job. They run
whenever the kernel's loop does: while it is idle, and while a cell *awaits* — the magics have
the kernel await ``%%qpu`` cells, so a panel updates, and its cancel button works, while the
cell waits for its result (ipykernel ≥ 7 serves widget messages during an awaiting cell).

Every panel's display carries a ``text/plain`` form too (and the result's HTML once the job
ends, re-sent then), which frontends without widgets — nbconvert, consoles — show instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import time
from collections.abc import Coroutine
from typing import Any

import ipywidgets as widgets
from IPython.display import DisplayHandle, display

from qhpc_lab.client import (
    CalibrationRange,
    Client,
    ClientError,
    Job,
    JobState,
    Result,
    TargetInfo,
    expected_times,
    waited_summary,
)
from qhpc_lab.vocabulary import (
    DeviceState,
    JobStatus,
    format_duration,
    format_position,
    format_sets_done,
)

TICK_S = 1.0
"""How often a panel redraws its clocks (start and end estimates, calibration age) between
events."""
STATUS_COLOURS = {
    JobStatus.PENDING: "#9a6700",
    JobStatus.RUNNING: "#0969da",
    JobStatus.DONE: "#1a7f37",
    JobStatus.ERROR: "#cf222e",
    JobStatus.CANCELED: "#6e7781",
}


class _Panel(widgets.VBox):
    """A VBox shown once with a display id, whose tasks run on the loop it was shown from."""

    def __init__(self, children: list[widgets.Widget]) -> None:
        super().__init__(children)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._handle: DisplayHandle | None = None

    def show(self) -> None:
        """Display the panel and start following, from the running loop (the kernel's)."""
        self._loop = asyncio.get_running_loop()
        self._handle = display(self, display_id=True)
        self._started()

    def _started(self) -> None:
        """Start the panel's tasks (subclasses)."""

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        assert self._loop is not None, "show() the panel first"
        task = self._loop.create_task(coroutine)
        self._tasks.add(task)  # the loop keeps only weak references to tasks
        task.add_done_callback(self._tasks.discard)

    def _redisplay(self) -> None:
        """Send the display again: frontends without widgets then show the new text."""
        if self._handle is not None:
            self._handle.update(self)

    def text(self) -> str:
        """The panel as plain text."""
        raise NotImplementedError

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        data = super()._repr_mimebundle_(**kwargs) or {}
        data["text/plain"] = self.text()
        return data


def _progress(state: JobState) -> tuple[int, int | None, str]:
    """What the panel's bar counts, and its words: a sweep's sets done of its sets, else
    shots."""
    if state.sets is not None:
        done = state.sets_done or 0
        return done, state.sets, format_sets_done(done, state.sets)
    return state.shots_done, state.shots, f"{state.shots_done}/{state.shots or '?'} shots"


class JobPanel(_Panel):
    """A job, live: state, place in the queue (2nd of 3 waiting), when it is expected to start
    and to end, device state and calibration age, shots
    done, a cancel button, and the result's histogram when it is done."""

    def __init__(self, job: Job) -> None:
        # Few widgets: each is a comm and two or three models the kernel opens one by one.
        self._job = job
        self._status = widgets.HTML()
        self._progress = widgets.IntProgress(
            min=0, max=1, style={"description_width": "initial"}, layout={"width": "24em"}
        )
        self._cancel = widgets.Button(
            description="Cancel", icon="stop", tooltip="cancel this job", layout={"width": "auto"}
        )
        self._cancel.on_click(self._on_cancel)
        self._outcome = widgets.HTML()
        progress = widgets.HBox([self._progress, self._cancel])
        super().__init__([self._status, progress, self._outcome])
        self.add_class("qhpc-job-panel")
        self._state = job.state
        self._state_at = time.monotonic()
        self._info: TargetInfo | None = None
        self._info_at = 0.0
        self._result: Result | None = None
        self._waited: str | None = None
        """Why the finished job waited (its timeline in one line), where the target says."""
        self._note = ""
        self._error: Exception | None = None
        self._finished: asyncio.Future[None] | None = None
        self._render()

    def _started(self) -> None:
        assert self._loop is not None
        self._finished = self._loop.create_future()
        self._spawn(self._follow_job())
        self._spawn(self._follow_device())
        self._spawn(self._tick())

    async def wait(self) -> Result:
        """The job's Result once the panel shows its end; JobError if it ended without one,
        the ClientError that lost track of it otherwise. Cancelling this waits no longer but
        leaves the panel following the job."""
        assert self._finished is not None, "show() the panel first"
        await asyncio.shield(self._finished)
        if self._error is not None:
            raise self._error
        return await self._job

    async def _follow_job(self) -> None:
        assert self._finished is not None
        try:
            async for state in self._job.watch():
                self._state, self._state_at = state, time.monotonic()
                self._render()
            if self._state.status == JobStatus.DONE:
                self._result = await self._job
            if self._state.final:
                with contextlib.suppress(ClientError):  # the story is a bonus, not the result
                    self._waited = waited_summary(await self._job.atimeline() or [])
        except Exception as err:  # shown, never lost in a background task
            self._error = err
            self._note = f"lost track of the job: {err}"
        finally:
            for task in list(self._tasks):
                if task is not asyncio.current_task():
                    task.cancel()
            self._render()
            self._redisplay()
            if not self._finished.done():
                self._finished.set_result(None)

    async def _follow_device(self) -> None:
        try:
            async for info in self._job.watch_device():
                self._info, self._info_at = info, time.monotonic()
                self._render()
        except Exception as err:  # the job goes on; only the device line is lost
            self._info = None
            self._note = f"device unknown: {err}"
            self._render()

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            self._render()

    def _on_cancel(self, _button: widgets.Button) -> None:
        """A click, handled on the kernel's thread: cancel without blocking it."""
        self._cancel.disabled = True
        self._cancel.description = "Canceling…"
        self._spawn(self._cancel_job())

    async def _cancel_job(self) -> None:
        try:
            await self._job.acancel()
        except ClientError as err:
            self._note = f"cancel failed: {err}"
            self._cancel.description = "Cancel"
        self._render()

    # -- drawing ----------------------------------------------------------------------------

    def _render(self) -> None:
        state = self._state
        colour = STATUS_COLOURS.get(state.status, "inherit")
        lines = [
            f"<b>Job {html.escape(self._job.id)}</b> on {html.escape(self._job.target)} · "
            f'<b style="color:{colour}">{state.status}</b>',
            *(
                html.escape(" · ".join(facts))
                for facts in (self._queue_facts(), self._device_facts())
                if facts
            ),
            *(html.escape(str(calibration)) for calibration in self._shown_calibrations()),
        ]
        self._status.value = "<br>".join(lines)
        done, total, words = _progress(state)
        self._progress.max = max(total or 1, 1)
        self._progress.value = min(done, self._progress.max)
        self._progress.bar_style = {JobStatus.DONE: "success", JobStatus.ERROR: "danger"}.get(
            state.status, ""
        )
        self._progress.description = words
        if state.final:
            self._cancel.disabled = True
            self._cancel.description = "Cancel"
        outcome = self._result._repr_html_() if self._result is not None else ""
        problems = [p for p in (state.error, self._note) if p]
        if problems:
            outcome += "".join(f"<div>{html.escape(p)}</div>" for p in problems)
        self._outcome.value = outcome

    def _shown_calibrations(self) -> tuple[CalibrationRange, ...]:
        """The calibrations its shots ran under, until the result below names them."""
        return () if self._result is not None else self._state.calibrations

    def _queue_facts(self) -> list[str]:
        state = self._state
        if state.final:
            result = self._result
            told = [fact for fact in (state.detail, self._waited) if fact]
            if result is None or result.queued_s is None or result.run_s is None:
                return told
            return [f"queued {result.queued_s:.2f} s", f"ran {result.run_s:.2f} s", *told]
        facts = []
        if state.status == JobStatus.RUNNING or state.position == 0:
            facts.append(format_position(0))
        elif state.position is not None:
            queued = self._info.queued if self._info is not None else None
            facts.append(format_position(state.position, queued))
        if state.held_by is not None:
            facts.append(f"held by {state.held_by}")
        if state.detail:  # a batch job's reason and expected start, or its node
            facts.append(state.detail)
        facts += expected_times(state, time.monotonic() - self._state_at)
        return facts

    def _device_facts(self) -> list[str]:
        if self._state.final and self._result is not None:
            # the result below says the calibration age when the shots ran
            return [f"device {self._result.device}"] if self._result.device else []
        info = self._info
        if info is None:
            return []
        if not info.reachable:
            return [f"device unreachable: {info.message}"]
        facts = [f"device {info.device or '?'}", info.state or "state unknown"]
        if info.calibration_age_s is not None and info.state != DeviceState.CALIBRATING:
            age = info.calibration_age_s + time.monotonic() - self._info_at
            facts.append(f"calibrated {format_duration(age)} ago")
        if info.down and info.message:  # why: maintenance, or the QPU says DOWN since when
            facts.append(info.message)
        return facts

    def text(self) -> str:
        lines = [str(self._job)]
        device = self._device_facts()
        if device and not self._state.final:
            lines.append("  " + " · ".join(device))
        lines += [f"  {calibration}" for calibration in self._shown_calibrations()]
        if self._note:
            lines.append(f"  {self._note}")
        if self._result is not None:
            lines.append(str(self._result))
        return "\n".join(lines)

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        data = super()._repr_mimebundle_(**kwargs)
        if self._result is not None:
            data["text/html"] = self._result._repr_html_()
        return data


class TargetsPanel(_Panel):
    """``%qpu targets``: every target with its device state and calibration; Refresh probes
    them again without blocking the kernel."""

    def __init__(self, infos: list[TargetInfo], client: Client) -> None:
        self._infos = infos
        self._client = client
        self._table = widgets.HTML()
        self._refresh = widgets.Button(
            description="Refresh", icon="refresh", layout={"width": "auto"}
        )
        self._refresh.on_click(self._on_refresh)
        self._note = widgets.HTML()
        super().__init__([self._table, widgets.HBox([self._refresh, self._note])])
        self.add_class("qhpc-targets-panel")
        self._render()

    def _on_refresh(self, _button: widgets.Button) -> None:
        self._refresh.disabled = True
        self._note.value = "probing…"
        self._spawn(self._reprobe())

    async def _reprobe(self) -> None:
        try:
            self._infos = await self._client.atargets()
            self._note.value = ""
        except ClientError as err:
            self._note.value = html.escape(str(err))
        finally:
            self._refresh.disabled = False
        self._render()

    def _render(self) -> None:
        rows = []
        for info in self._infos:
            mark = "★" if info.selected else ""
            if info.reachable:
                state = html.escape(info.state or "state unknown")
                calibrated = (
                    f"{format_duration(info.calibration_age_s)} ago"
                    if info.calibration_age_s is not None
                    else ""
                )
                details = [html.escape(info.device or "?"), state, calibrated]
            else:
                details = ["", '<b style="color:#cf222e">unreachable</b>', ""]
            cells = [mark, f"<code>{html.escape(info.name)}</code>", html.escape(info.type)]
            cells += [*details, html.escape(info.message)]
            rows.append("<tr>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>")
        head = "".join(
            f"<th>{h}</th>"
            for h in ("", "target", "type", "device", "state", "calibrated", "notice")
        )
        self._table.value = (
            f'<table class="qhpc-targets"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table>"
            "<small>★ where <code>%%qpu</code> cells go; <code>%qpu use NAME</code> changes it"
            "</small>"
        )

    def text(self) -> str:
        return "\n".join(str(info) for info in self._infos)


def panel_for(obj: object, client: Client) -> _Panel | None:
    """The live panel for what the magics show, when there is one (a Job, a target list)."""
    if isinstance(obj, Job):
        return JobPanel(obj)
    if isinstance(obj, list) and obj and all(isinstance(item, TargetInfo) for item in obj):
        return TargetsPanel(obj, client)
    return None
