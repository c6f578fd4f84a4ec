"""Admission: whether a job may be queued, and what a would-be job is told (``/estimate``).

A submission passes, in order: its session (the route checks it before reading the program,
as Warden does), the QPU open (maintenance refuses it 503), the device's formats, the job
class, the single-calibration bound, the site's class limits, the queue caps per user, per
session and per class (429, :mod:`~qhpc_lab.scheduler.limits`; a submission being admitted
holds its place under them), the program's own check against the device, and last, in the
transaction that adds the job, the session still open, the quotas and, on HA replicas, the
queue caps counted again.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

from opentelemetry.context import Context

from qhpc_lab.programs import (
    Program,
    ProgramError,
    format_refusal,
    validate_async,
    with_declared_variables,
)
from qhpc_lab.programs.cudaq import cudaq_to_pulser, is_cudaq_analog
from qhpc_lab.scheduler import limits as limit_rules
from qhpc_lab.scheduler import policy
from qhpc_lab.scheduler.config import SchedulerConfig
from qhpc_lab.scheduler.device_state import DeviceStatus
from qhpc_lab.scheduler.gateway import StoreGateway
from qhpc_lab.scheduler.group_commit import JobWriter
from qhpc_lab.scheduler.job_book import JobBook
from qhpc_lab.scheduler.limits import AdmissionRefused, QueueLimit
from qhpc_lab.scheduler.logs import job_fields
from qhpc_lab.scheduler.metrics import Metrics
from qhpc_lab.scheduler.queue_state import QueueState
from qhpc_lab.scheduler.quotas import QuotaExceeded
from qhpc_lab.scheduler.refusal import SchedulerError
from qhpc_lab.scheduler.sessions import Sessions
from qhpc_lab.scheduler.store import DuplicateJob, JobRow, NewJob, QuotaAdmission
from qhpc_lab.scheduler.sweeps import SweepPlan, plan_sweep
from qhpc_lab.scheduler.traces import JobTraces
from qhpc_lab.scheduler.views import EstimateSnapshot
from qhpc_lab.wire.times import iso_time

log = logging.getLogger("qhpc.scheduler")

MAINTENANCE_RETRY_AFTER_S = 60
"""What a submission refused during maintenance is told to wait: an operator's work takes
minutes at least, and the message (GET /accessible) says until when."""


INLINE_PARSE_CHARS = 64 * 1024
"""Bodies up to this size have their declared variables read on the event loop: parsing one
costs tens of microseconds, a hop to a thread and back more than that under load."""


class Admission:
    """The submission's checks, then the job stored, queued and announced."""

    def __init__(
        self,
        config: SchedulerConfig,
        gateway: StoreGateway,
        device: DeviceStatus,
        queue: QueueState,
        sessions: Sessions,
        jobs: JobBook,
        metrics: Metrics,
        traces: JobTraces,
        clock: Callable[[], float],
    ) -> None:
        self._config = config
        self._gateway = gateway
        self._device = device
        self._queue = queue
        self._sessions = sessions
        self._jobs = jobs
        self._metrics = metrics
        self._traces = traces
        self._clock = clock
        self._writer = JobWriter(gateway, metrics)
        """Jobs are added in groups (group commit): those that arrive during a write go next."""
        self._admitting_jobs: Counter[str] = Counter()
        """Submissions past the caps' check and not yet queued, per cap (:meth:`_reserved`)."""
        self._admitting_shots: Counter[str] = Counter()

    def _refused(self, status: int, message: str, rule: str, **kwargs: Any) -> SchedulerError:
        """A refusal of a submission, counted."""
        self._metrics.rejected()
        return SchedulerError(status, message, rule, **kwargs)

    async def program(
        self,
        sequence: str | dict[str, Any],
        fmt: str,
        shots: int,
        name: str | None,
        variables: dict[str, Any],
    ) -> Program:
        """The program a submission's body carries: a CUDA-Q analog program (a JSON object,
        or its text) becomes the Pulser sequence it describes, on this device; a Pulser
        sequence's variables the job leaves out take the values its abstract representation
        carries (its defaults), and one it does not declare is refused."""
        try:
            if isinstance(sequence, dict) or is_cudaq_analog(sequence):
                if not is_cudaq_analog(sequence):
                    raise ProgramError(
                        "a JSON object sequence must be a CUDA-Q analog program", "body"
                    )
                spec = self._device.profile.spec
                sequence = await asyncio.to_thread(cudaq_to_pulser, sequence, spec)
                fmt = "pulser"
            program = Program(fmt, sequence, shots, name, variables)
            if len(program.body) <= INLINE_PARSE_CHARS:
                return with_declared_variables(program)
            return await asyncio.to_thread(with_declared_variables, program)
        except ProgramError as err:
            raise self._refused(422, str(err), err.rule) from None

    async def sweep(
        self, program: Program, sets: list[tuple[int, dict[str, Any]]]
    ) -> tuple[Program, SweepPlan]:
        """A sweep of ``program`` over ``sets`` (shots, variables): its plan, each set checked
        against the variables the program declares (422 naming the first bad set, rule
        ``sweep``), and the program as its job stores it, its shots the sets' in all."""
        config = self._config
        try:
            plan = await asyncio.to_thread(
                plan_sweep,
                program,
                sets,
                config.max_sweep_sets,
                config.max_sweep_shots,
                self._device.profile.spec.max_runs,
            )
        except ProgramError as err:
            raise self._refused(422, str(err), err.rule) from None
        return dataclasses.replace(program, shots=plan.total_shots), plan

    def job_class(self, job_class: str | None) -> str:
        """The class asked for, or the default; 422 for one the policy does not know."""
        job_class = job_class or self._queue.policy.default_job_class
        if job_class not in policy.JOB_CLASSES:
            raise SchedulerError(
                422,
                f"unknown job_class {job_class!r}; use one of {', '.join(policy.JOB_CLASSES)}",
                "job_class",
            )
        return job_class

    async def submit(
        self,
        user_id: str,
        admin: bool,
        session_id: str | None,
        program: Program,
        job_class: str | None = None,
        max_calibration_age_s: float | None = None,
        idempotency_key: str | None = None,
        trace_context: Context | None = None,
        single_calibration: bool = False,
        loop: str | None = None,
        think_time_s: float | None = None,
        sweep: SweepPlan | None = None,
    ) -> JobRow:
        """Accept a job; a retried submission with the same ``idempotency_key`` returns the
        first job instead of queueing a second one (the store's unique key decides).
        ``trace_context``: the caller's trace (``traceparent``), which the job's spans join.
        ``single_calibration``: all its shots under one calibration (docs/policy.md);
        ``loop``, ``think_time_s``: the hybrid loop it belongs to (docs/policy.md rule 9).
        ``sweep``: the plan of a sweep (:meth:`sweep`): one job, its program validated once,
        with its first set's variables."""
        if not self._device.accessible:
            raise self._refused(
                503,
                f"the QPU is not accepting jobs: {self._device.message or 'maintenance'}",
                "accessible",
                retry_after=MAINTENANCE_RETRY_AFTER_S,
            )
        profile = self._device.profile
        if refusal := format_refusal(program.format, profile.formats, profile.spec.name):
            raise self._refused(422, refusal, "format")
        try:
            job_class = self.job_class(job_class)
        except SchedulerError:
            self._metrics.rejected()
            raise
        if single_calibration:
            refusal = policy.single_calibration_refusal(
                program.shots, max_calibration_age_s, self._device.view(), self._queue.policy
            )
            if refusal is not None:
                raise self._refused(422, refusal, "single_calibration")
        with self._traces.submission(trace_context, user_id, program, job_class) as traced:
            session = await self._sessions.check(session_id, user_id, admin)
            owner = session.user_id if session else user_id
            limits: tuple[QueueLimit, ...] = ()
            if not admin:
                account = session.slurm_account if session else None
                self.check_class(job_class, owner, account, program.shots)
                limits = self.queue_limits(owner, session.id if session else None, job_class)
                self.check_limits(limits, program.shots)
            with self._reserved(limits, program.shots):
                try:
                    with traced.validating():
                        await validate_async(_checked(program, sweep), profile.spec)
                except ProgramError as err:
                    raise self._refused(422, str(err), err.rule) from None
                try:
                    row = await self._writer.add_job(
                        NewJob(
                            QuotaAdmission(
                                session.slurm_account if session else None,
                                profile.shot_share_s,
                                limits if self._config.ha else (),
                            ),
                            dict(
                                session_id=session.id if session else None,
                                user_id=owner,
                                slurm_job_id=session.slurm_job_id if session else None,
                                job_class=job_class,
                                name=program.name,
                                format=program.format,
                                body=program.body,
                                variables=program.variables,
                                shots=program.shots,
                                max_calibration_age_s=max_calibration_age_s,
                                single_calibration=single_calibration,
                                loop=loop,
                                think_time_s=think_time_s,
                                idempotency_key=idempotency_key,
                                created_at=self._clock(),
                            ),
                            None if sweep is None else sweep.rows(),
                        )
                    )
                except DuplicateJob as duplicate:  # a retry: the first job, not a second
                    return duplicate.job
                except AdmissionRefused as capped:  # a cap or the session, counted with the insert
                    raise self._refused(capped.status, str(capped), capped.rule) from None
                except QuotaExceeded as exceeded:
                    refused = exceeded.refusal
                    self._metrics.quota_refused(refused.quota.kind, refused.quota.unit)
                    fields = {**refused.fields(), "resets_at": iso_time(refused.resets_at)}
                    raise SchedulerError(403, refused.message, "quota", fields=fields) from None
                # Queued before anything else is awaited: a revocation that canceled the job in the
                # store since finds it in the queue, and takes it out.
                self._queue.enqueue(
                    row, program, self._sessions.slurm_account(row.session_id), sweep
                )
            traced.accepted(row)
        log.info(
            "job %s accepted: %s, %d shots, class %s",
            row.id,
            row.format,
            row.shots,
            row.job_class,
            extra=job_fields(row),
        )
        self._metrics.submitted(job_class)
        self._jobs.changed(row)
        if session is not None:
            await self._sessions.used(session)
        return row

    def check_class(self, job_class: str, user_id: str, account: str | None, shots: int) -> None:
        """The site's bounds on the class (``class_limits``): who may use it (403) and the
        shots of one job (422); its jobs per user are a queue cap (:meth:`queue_limits`)."""
        limit = self._config.class_limits.get(job_class)
        if limit is None:
            return
        rule = f"class_limits.{job_class}"
        if not limit.allows(user_id, account):
            who = f"user {user_id}" + (f" (Slurm account {account})" if account else "")
            raise self._refused(
                403,
                f"{who} may not submit {job_class} jobs: this site keeps the class for "
                f"{_named(limit.users, limit.accounts)}; choose another class",
                f"{rule}.users",
            )
        if limit.max_shots and shots > limit.max_shots:
            raise self._refused(
                422,
                f"a {job_class} job may ask for at most {limit.max_shots} shots on this site, "
                f"not {shots}: fewer shots, or another class",
                f"{rule}.max_shots",
            )

    def queue_limits(
        self, user_id: str, session_id: str | None, job_class: str
    ) -> tuple[QueueLimit, ...]:
        """The caps a job of ``user_id`` in ``session_id`` meets: the operator's per user and
        per session, and the class's per user (``class_limits``)."""
        config = self._config
        limits = [
            QueueLimit(
                "user", user_id, config.max_queued_jobs_per_user, config.max_queued_shots_per_user
            )
        ]
        if session_id is not None:
            limits.append(
                QueueLimit(
                    "session",
                    session_id,
                    config.max_queued_jobs_per_session,
                    config.max_queued_shots_per_session,
                )
            )
        class_limit = config.class_limits.get(job_class)
        if class_limit is not None:
            limits.append(
                QueueLimit("class", user_id, class_limit.max_queued_per_user, job_class=job_class)
            )
        return tuple(limit for limit in limits if limit.max_jobs or limit.max_shots)

    def check_limits(self, limits: tuple[QueueLimit, ...], shots: int) -> None:
        """The caps against the queue in memory and the submissions being admitted (429): a
        job over one is refused before its program is validated. HA replicas' store counts
        again as it queues the job (another replica's submissions are not in memory)."""
        for limit in limits:
            held_jobs, held_shots = self._queue.queued(limit.counter)
            held_jobs += self._admitting_jobs[limit.counter]
            held_shots += self._admitting_shots[limit.counter]
            refused = limit_rules.refusal(limit, held_jobs, held_shots, shots)
            if refused is not None:
                raise self._refused(refused.status, str(refused), refused.rule)

    @contextlib.contextmanager
    def _reserved(self, limits: tuple[QueueLimit, ...], shots: int) -> Iterator[None]:
        """A place under each cap, held while the job is validated and stored until it is in
        the queue: concurrent submissions to this daemon (one event loop) count it, so they
        never pass a cap together."""
        for limit in limits:
            self._admitting_jobs[limit.counter] += 1
            self._admitting_shots[limit.counter] += shots
        try:
            yield
        finally:
            for limit in limits:
                self._admitting_jobs[limit.counter] -= 1
                self._admitting_shots[limit.counter] -= shots

    def estimate(
        self,
        user_id: str | None,
        shots: int,
        job_class: str | None = None,
        max_calibration_age_s: float | None = None,
    ) -> EstimateSnapshot:
        """Where a job of ``shots`` submitted now would stand in ``user_id``'s fair-share
        account: its place (1 = next to start) and seconds until it ends, the queue ahead
        and its own run (calibrations included). For clients choosing among several QPUs."""
        job_class = self.job_class(job_class)
        place = self._queue.estimate(user_id, shots, job_class, max_calibration_age_s)
        view = self._device.view()
        return EstimateSnapshot(
            place=place,
            run_s=round(shots * view.shot_share_s, 3),
            calibration_age_s=round(self._clock() - view.calibrated_at, 3),
            queue=self._queue.snapshot().for_user(user_id),
        )


def _checked(program: Program, sweep: SweepPlan | None) -> Program:
    """What validation builds: the program, or a sweep's first set (every set binds the same
    declared variables; :func:`~qhpc_lab.scheduler.sweeps.plan_sweep` checked each)."""
    if sweep is None:
        return program
    return dataclasses.replace(program, shots=sweep.shots[0], variables=sweep.variables[0])


def _named(users: tuple[str, ...], accounts: tuple[str, ...]) -> str:
    """Who a class limit lets in, as a refusal says it."""
    parts = [f"uids {', '.join(users)}"] if users else []
    parts += [f"Slurm accounts {', '.join(accounts)}"] if accounts else []
    return " and ".join(parts)
