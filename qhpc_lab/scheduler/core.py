"""The scheduler's domain core: sessions, submission, cancellation and the dispatcher.

Plain Python with no web framework: the HTTP routes are thin wrappers over these methods, and
tests drive them in-process. Dispatch is event-driven: a submission, a cancellation or a state
change wakes the dispatcher at once, so an idle QPU starts a job within milliseconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from qhpc_lab.programs import Program, ProgramError, validate, warm_up
from qhpc_lab.qpu import DeviceState, QPUDriver
from qhpc_lab.scheduler import policy
from qhpc_lab.scheduler.config import SchedulerConfig
from qhpc_lab.scheduler.events import EventBus
from qhpc_lab.scheduler.metrics import Metrics
from qhpc_lab.scheduler.store import JobRow, SessionRow, Store
from qhpc_lab.scheduler.timeline import Timelines

log = logging.getLogger("qhpc.scheduler")


class SchedulerError(Exception):
    """A refusal the API turns into a 4xx: ``status`` and a message naming the rule."""

    def __init__(self, status: int, message: str, rule: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.rule = rule


class Scheduler:
    def __init__(
        self,
        config: SchedulerConfig,
        store: Store,
        driver: QPUDriver,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.store = store
        self.driver = driver
        self.clock = clock
        self.bus = EventBus()
        self.metrics = Metrics()
        self.timelines = Timelines()
        self.policy = policy.PolicyConfig(
            class_priority=dict(config.class_priority),
            aging_per_chunk=config.aging_per_chunk,
            usage_half_life_s=config.usage_half_life_s,
            min_calibration_age_s=config.min_calibration_age_s,
        )
        self.default_job_class = config.default_job_class
        saved = store.get_fact("policy")
        if saved:
            self._apply_policy(saved)
        self._usage = policy.NO_USAGE
        self._session_slots: dict[str, int] = {}
        self._queue: dict[int, policy.QueuedJob] = {}
        self._programs: dict[int, Program] = {}
        self._estimates: dict[int, tuple[int, float]] | None = None
        self._running: int | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._calibrate_requested = False
        accessible = store.get_fact("accessible")
        self.accessible: bool = True if accessible is None else bool(accessible)
        self.message: str = store.get_fact("message") or ""
        self.draining: bool = bool(store.get_fact("draining"))

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        self.driver.start()
        warm_up()
        requeued = self.store.requeue_running()
        if requeued:
            log.warning(
                "requeued %d jobs that were running when the scheduler stopped", len(requeued)
            )
        self._session_slots = {s.id: s.qpu_slots for s in self.store.list_sessions(active=True)}
        for row in self.store.active_jobs():
            self._enqueue(row)
        self._task = asyncio.create_task(self._dispatch_forever(), name="qhpc-dispatcher")
        self._task.add_done_callback(self.metrics.dispatcher_ended)
        self.metrics.dispatcher_running()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.bus.close()
        await self.driver.close()

    # -- device ---------------------------------------------------------------------------

    @property
    def device_state(self) -> DeviceState:
        if not self.accessible:
            return DeviceState.MAINTENANCE
        return self.driver.state

    def device_view(self) -> policy.DeviceView:
        profile = self.driver.profile
        return policy.DeviceView(
            state=self.device_state,
            calibrated_at=self.driver.calibrated_at,
            calibration_interval_s=profile.calibration_interval_s,
            calibration_duration_s=profile.calibration_duration_s,
            time_per_shot_s=profile.time_per_shot_s,
            chunk_shots=profile.chunk_shots,
            accepting=not self.draining,
        )

    def device_info(self) -> dict[str, Any]:
        now = self.clock()
        view = self.device_view()
        depth: dict[str, int] = {c: 0 for c in policy.JOB_CLASSES}
        for job in self._queue.values():
            depth[job.job_class] = depth.get(job.job_class, 0) + 1
        return {
            "name": self.driver.profile.spec.name,
            "profile": self.driver.profile.name,
            "state": view.state.value,
            "accessible": self.accessible,
            "draining": self.draining,
            "message": self.message or self.driver.notice,
            "calibrated_at": view.calibrated_at,
            "calibration_age_s": round(now - view.calibrated_at, 3),
            "next_calibration_at": view.next_calibration_at,
            "next_calibration_in_s": round(max(0.0, view.next_calibration_at - now), 3),
            "calibration_duration_s": view.calibration_duration_s,
            "time_per_shot_s": view.time_per_shot_s,
            "chunk_shots": view.chunk_shots,
            "queue_depth": depth,
            "running_job": self._running,
        }

    def set_accessible(self, accessible: bool, message: str | None = None) -> None:
        """Open or close submissions; reopening without a message clears the closing one."""
        self.accessible = accessible
        self.timelines.hold("maintenance", not accessible, self.clock(), self._queue)
        self.store.set_fact("accessible", accessible)
        if message is None and accessible:
            message = ""
        if message is not None:
            self.message = message
            self.store.set_fact("message", message)
        self._device_changed()

    def set_draining(self, draining: bool) -> None:
        """Drain: started jobs finish, queued ones wait until resumed."""
        self.draining = draining
        self.timelines.hold("draining", draining, self.clock(), self._queue)
        self.store.set_fact("draining", draining)
        self._device_changed()

    def _device_changed(self) -> None:
        self.bus.publish("device", self.device_info())
        self._queue_changed()

    # -- sessions -------------------------------------------------------------------------

    def open_session(self, user_id: str, slurm_job_id: str | None, qpu_slots: int) -> SessionRow:
        if qpu_slots < 1:
            raise SchedulerError(422, "qpu_slots must be at least 1", "qpu_slots")
        session = self.store.create_session(user_id, slurm_job_id, qpu_slots)
        self._session_slots[session.id] = session.qpu_slots
        return session

    def revoke_session(self, session_id: str, reason: str) -> SessionRow:
        if self.store.get_session(session_id) is None:
            raise SchedulerError(404, f"session {session_id} not found")
        session, canceled = self.store.revoke_session(session_id, reason)
        self._session_slots.pop(session_id, None)
        for job_id in canceled:
            self._dequeue(job_id)
            self.metrics.job_finished("CANCELED")
            job = self.store.get_job(job_id)
            if job is not None:
                self._publish_job(job)
        return session

    def check_session(self, session_id: str | None, user_id: str, admin: bool) -> SessionRow | None:
        if session_id is None:
            if self.config.sessions_required:
                raise SchedulerError(
                    403,
                    "an X-Warden-Session header is required (the Slurm job's session)",
                    "session",
                )
            return None
        session = self.store.get_session(session_id)
        if session is None:
            raise SchedulerError(403, f"session {session_id} does not exist", "session")
        if session.user_id != user_id and not admin:
            raise SchedulerError(403, f"session {session_id} belongs to another user", "session")
        if not session.active:
            raise SchedulerError(
                403, f"session {session_id} was revoked ({session.revoke_reason})", "session"
            )
        return session

    # -- jobs -----------------------------------------------------------------------------

    def submit(
        self,
        user_id: str,
        admin: bool,
        session_id: str | None,
        program: Program,
        job_class: str | None = None,
        max_calibration_age_s: float | None = None,
    ) -> JobRow:
        if not self.accessible:
            self.metrics.rejected()
            raise SchedulerError(
                503,
                f"the QPU is not accepting jobs: {self.message or 'maintenance'}",
                "accessible",
            )
        job_class = job_class or self.default_job_class
        if job_class not in policy.JOB_CLASSES:
            self.metrics.rejected()
            raise SchedulerError(
                422,
                f"unknown job_class {job_class!r}; use one of {', '.join(policy.JOB_CLASSES)}",
                "job_class",
            )
        session = self.check_session(session_id, user_id, admin)
        try:
            facts = validate(program, self.driver.profile.spec)
        except ProgramError as err:
            self.metrics.rejected()
            raise SchedulerError(422, str(err), err.rule) from None
        row = self.store.add_job(
            session_id=session.id if session else None,
            user_id=session.user_id if session else user_id,
            slurm_job_id=session.slurm_job_id if session else None,
            job_class=job_class,
            name=program.name,
            format=program.format,
            body=program.body,
            variables=program.variables,
            shots=program.shots,
            num_qubits=facts.num_qubits,
            max_calibration_age_s=max_calibration_age_s,
        )
        self.metrics.submitted(job_class)
        self._enqueue(row, program)
        self._publish_job(row)
        return row

    def get_job(self, job_id: int, user_id: str, admin: bool) -> JobRow:
        job = self.store.get_job(job_id)
        if job is None or (job.user_id != user_id and not admin):
            raise SchedulerError(404, f"job {job_id} not found")
        return job

    def list_jobs(self, user_id: str, admin: bool, status: str | None, limit: int) -> list[JobRow]:
        return self.store.list_jobs(None if admin else user_id, status, limit)

    def cancel(
        self, job_id: int, user_id: str, admin: bool, reason: str = "canceled by user"
    ) -> JobRow:
        job = self.get_job(job_id, user_id, admin)
        finished = self.store.finish(job_id, "CANCELED", reason)
        if finished is None:
            return job
        self._dequeue(job_id)
        self.metrics.job_finished("CANCELED")
        self._publish_job(finished)
        return finished

    def position(self, job_id: int) -> tuple[int | None, float | None]:
        """Queue position (1 = next, 0 = running) and ETA in seconds for an active job.

        Only a waiting job needs the whole queue's estimate; the running one ends after its
        remaining shots (every job event would otherwise walk the queue).
        """
        queued = self._queue.get(job_id)
        if queued is None:
            return None, None
        if job_id == self._running:
            return 0, round(queued.remaining * self.driver.profile.time_per_shot_s, 3)
        if self._estimates is None:
            self._estimates = policy.estimates(
                list(self._queue.values()),
                self.device_view(),
                self.clock(),
                self.policy,
                self._session_slots,
                self._usage,
            )
        position, eta = self._estimates.get(job_id, (None, None))
        running = self._estimates.get(self._running) if self._running is not None else None
        if position is not None and running is not None and running[0] < position:
            position -= 1  # the running job left its place in the order for 0: close the gap
        return position, None if eta is None else round(eta, 3)

    def job_view(self, job: JobRow) -> dict[str, Any]:
        """A job as the API shows it: Warden's fields first, then the extensions."""
        position, eta = self.position(job.id)
        return {
            "id": job.id,
            "user_id": job.user_id,
            "created_at": iso_time(job.created_at),
            "status": job.status,
            "results": job.results,
            "session_id": job.session_id,
            "slurm_job_id": job.slurm_job_id,
            "name": job.name,
            "format": job.format,
            "job_class": job.job_class,
            "shots": job.shots,
            "shots_done": job.shots_done,
            "position": position,
            "eta_s": eta,
            "started_at": iso_time(job.started_at),
            "finished_at": iso_time(job.finished_at),
            "qpu_seconds": round(job.qpu_seconds, 6),
            "calibration_age_s": job.calibration_age_s,
            "error": job.error,
        }

    def policy_settings(self) -> dict[str, Any]:
        return {
            "class_priority": dict(self.policy.class_priority),
            "aging_per_chunk": self.policy.aging_per_chunk,
            "usage_half_life_s": self.policy.usage_half_life_s,
            "min_calibration_age_s": self.policy.min_calibration_age_s,
            "default_job_class": self.default_job_class,
        }

    def set_policy(self, changes: dict[str, Any]) -> dict[str, Any]:
        """Change policy settings at run time; they are kept across restarts."""
        if changes.get("default_job_class", self.default_job_class) not in policy.JOB_CLASSES:
            raise SchedulerError(
                422,
                f"default_job_class must be one of {', '.join(policy.JOB_CLASSES)}",
                "default_job_class",
            )
        unknown = set(changes.get("class_priority") or {}) - set(policy.JOB_CLASSES)
        if unknown:
            raise SchedulerError(
                422, f"unknown job classes: {', '.join(sorted(unknown))}", "class_priority"
            )
        settings = {**self.policy_settings(), **changes}
        settings["class_priority"] = {
            **self.policy.class_priority,
            **(changes.get("class_priority") or {}),
        }
        self._apply_policy(settings)
        self.store.set_fact("policy", settings)
        self._queue_changed()
        return self.policy_settings()

    def _apply_policy(self, settings: dict[str, Any]) -> None:
        self.default_job_class = settings.get("default_job_class", self.default_job_class)
        self.policy = dataclasses.replace(
            self.policy,
            **{k: v for k, v in settings.items() if k != "default_job_class"},
        )

    def request_calibration(self) -> None:
        self._calibrate_requested = True
        self._wake.set()

    # -- queue bookkeeping ------------------------------------------------------------------

    def _enqueue(self, row: JobRow, program: Program | None = None) -> None:
        self._queue[row.id] = policy.QueuedJob(
            id=row.id,
            user_id=row.user_id,
            session_id=row.session_id,
            job_class=row.job_class,
            shots=row.shots,
            shots_done=row.shots_done,
            created_at=row.created_at,
            max_calibration_age_s=row.max_calibration_age_s,
        )
        self._programs[row.id] = program or Program(
            row.format, row.body, row.shots, row.name, row.variables
        )
        self._queue_changed()

    def _dequeue(self, job_id: int) -> None:
        self._queue.pop(job_id, None)
        self._programs.pop(job_id, None)
        self.driver.forget(str(job_id))
        self._queue_changed()

    def _queue_changed(self) -> None:
        self._estimates = None
        self._wake.set()

    def _publish_job(self, job: JobRow) -> None:
        self.bus.publish("job", self.job_view(job), user_id=job.user_id)

    # -- dispatcher ---------------------------------------------------------------------------

    async def _dispatch_forever(self) -> None:
        while True:
            self._wake.clear()
            now = self.clock()
            if self._calibrate_requested:
                decision: policy.Decision = policy.Calibrate()
            else:
                decision = policy.decide(
                    list(self._queue.values()),
                    self._session_slots,
                    self.device_view(),
                    now,
                    self.policy,
                    self._usage,
                )
            if isinstance(decision, policy.Calibrate):
                await self._calibrate()
            elif isinstance(decision, policy.RunChunk):
                await self._run_chunk(decision)
            else:
                timeout = None if decision.until is None else max(0.0, decision.until - now)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout)

    async def _calibrate(self) -> None:
        self._calibrate_requested = False
        started = self.clock()
        calibration = asyncio.create_task(self.driver.calibrate())
        await asyncio.sleep(0)
        self._device_changed()
        await calibration
        self.store.set_fact("calibrated_at", self.driver.calibrated_at)
        self.metrics.calibrated()
        self.timelines.calibration(started, self.clock(), self._queue)
        self._device_changed()

    async def _run_chunk(self, decision: policy.RunChunk) -> None:
        queued = self._queue[decision.job_id]
        program = self._programs[decision.job_id]
        self._running = queued.id
        self._estimates = None
        self.metrics.chunk_started(queued.id, queued.job_class, self._queue)
        started = self.store.mark_running(queued.id, self.clock())
        if started is not None:  # its first chunk, or its first since a restart
            if not queued.started:
                self.metrics.job_started(queued.job_class, started.started_at - queued.created_at)
            self._publish_job(started)
        try:
            outcome = await self.driver.run_chunk(
                str(queued.id), program, decision.shots, queued.remaining
            )
        except Exception as err:  # an emulator failure ends this job, not the daemon
            log.exception("job %s failed", queued.id)
            self._running = None
            failed = self.store.finish(queued.id, "ERROR", f"execution failed: {err}")
            self._dequeue(queued.id)
            if failed is not None:
                self.metrics.job_finished("ERROR", "execution_failed")
                self._publish_job(failed)
            return
        self._running = None
        self._usage = policy.record_chunk(
            self._usage, queued, outcome.started_at, outcome.finished_at, self.policy
        )
        busy = outcome.finished_at - outcome.started_at
        self.metrics.chunk_ran(queued.job_class, busy, decision.shots)
        self.timelines.chunk(
            queued.id,
            queued.job_class,
            outcome.started_at,
            outcome.finished_at,
            decision.shots,
            outcome.calibration_age_s,
            self._queue,
        )
        row = self.store.record_chunk(
            queued.id, outcome.counts, decision.shots, busy, outcome.calibration_age_s
        )
        if row is None or row.status != "RUNNING":
            self._dequeue(queued.id)
            if row is not None:
                self.metrics.job_finished(row.status)
                self._publish_job(row)
            return
        self._queue[queued.id] = dataclasses.replace(queued, shots_done=row.shots_done)
        self._queue_changed()
        self._publish_job(row)


def iso_time(timestamp: float | None) -> str | None:
    """RFC 3339 in UTC, the form Warden clients parse."""
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).isoformat().replace("+00:00", "Z")
