"""The daemon's spans of a job: one ``qhpc.job`` span from the submission to the final
state, continuing the caller's trace (``traceparent``), with children ``qhpc.validate``,
``qhpc.queued`` (until the first chunk), one ``qhpc.chunk`` per chunk and ``qhpc.result``.

Spans are kept in memory only while tracing is on (:mod:`qhpc_lab.tracing`): with no tracer
provider, or for a job not sampled, every span is a non-recording one, nothing is stored and
no attribute is built. A job accepted before a
restart finishes without spans (its trace context is not persisted). Times are the
scheduler's clock, in the nanoseconds OpenTelemetry wants.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from fastapi.telemetry import TelemetryConfig
from opentelemetry import context, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from qhpc_lab import tracing
from qhpc_lab.programs import Program
from qhpc_lab.scheduler.store import JobRow
from qhpc_lab.vocabulary import FINAL_STATUSES, JobStatus

FRAMEWORK_TELEMETRY_OFF: TelemetryConfig = {
    "tracing": False,
    "metrics": False,
    "logs": False,
    "auto_configure": False,
}
"""FastAPI's own OpenTelemetry instrumentation, off: it turns itself on once a tracer provider
is set and then costs every request (polls and health checks included), sampled or not, a
server span and one span per dependency, endpoint and serialisation; the job's spans below are
the daemon's traces, and ``otlp_endpoint`` their one setting."""


def _ns(seconds: float) -> int:
    return int(seconds * 1e9)


@dataclass
class _JobTrace:
    job: Span
    queued: Span | None

    @property
    def context(self) -> context.Context:
        return trace.set_span_in_context(self.job)


class Submission:
    """One ``POST /jobs`` being traced: its validation, then (if accepted) its job span."""

    def __init__(self, traces: JobTraces, job: Span) -> None:
        self._traces = traces
        self.job = job
        self.job_id: int | None = None

    @contextlib.contextmanager
    def validating(self) -> Iterator[None]:
        if not self.job.is_recording():
            yield
            return
        with self._traces.tracer.start_as_current_span(
            "qhpc.validate",
            context=trace.set_span_in_context(self.job),
            start_time=_ns(self._traces.clock()),
        ):
            yield

    def accepted(self, row: JobRow) -> None:
        """The job is queued: from now on its spans hang off its id."""
        self.job_id = row.id
        if not self.job.is_recording():
            return
        self.job.set_attribute("qhpc.job_id", row.id)
        queued = self._traces.tracer.start_span(
            "qhpc.queued",
            context=trace.set_span_in_context(self.job),
            start_time=_ns(row.created_at),
        )
        self._traces.live[row.id] = _JobTrace(self.job, queued)


class JobTraces:
    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.tracer = tracing.tracer()
        self.live: dict[int, _JobTrace] = {}

    @contextlib.contextmanager
    def submission(
        self, parent: context.Context | None, user_id: str, program: Program, job_class: str
    ) -> Iterator[Submission]:
        """Trace a submission; a refusal raised inside ends its span with the error."""
        job = self.tracer.start_span(
            "qhpc.job",
            context=parent,
            kind=SpanKind.SERVER,
            start_time=_ns(self.clock()),
        )
        if job.is_recording():
            job.set_attributes(
                {
                    "qhpc.user_id": user_id,
                    "qhpc.format": program.format,
                    "qhpc.shots": program.shots,
                    "qhpc.job_class": job_class,
                }
            )
        submission = Submission(self, job)
        try:
            yield submission
        except BaseException as err:
            if job.is_recording():
                job.set_status(Status(StatusCode.ERROR, str(err)))
                job.end(_ns(self.clock()))
            raise
        if submission.job_id is None:  # a retried submission: the first one's trace goes on
            job.end(_ns(self.clock()))

    def chunk(
        self,
        job_id: int,
        started_at: float,
        finished_at: float,
        shots: int,
        calibration_age_s: float,
    ) -> None:
        live = self.live.get(job_id)
        if live is None:
            return
        if live.queued is not None:
            live.queued.end(_ns(started_at))
            live.queued = None
        span = self.tracer.start_span(
            "qhpc.chunk",
            context=live.context,
            start_time=_ns(started_at),
            attributes={"qhpc.shots": shots, "qhpc.calibration_age_s": calibration_age_s},
        )
        span.end(_ns(finished_at))

    def changed(self, row: JobRow) -> None:
        """A job's new state: a final one ends its trace with a ``qhpc.result`` span."""
        if row.status not in FINAL_STATUSES:
            return
        live = self.live.pop(row.id, None)
        if live is None:
            return
        now = _ns(row.finished_at if row.finished_at is not None else self.clock())
        if live.queued is not None:
            live.queued.end(now)
        result = self.tracer.start_span(
            "qhpc.result",
            context=live.context,
            start_time=now,
            attributes={"qhpc.status": row.status, "qhpc.shots_done": row.shots_done},
        )
        result.end(now)
        if row.status != JobStatus.DONE:
            live.job.set_status(Status(StatusCode.ERROR, row.error or row.status))
        live.job.set_attribute("qhpc.status", row.status)
        live.job.end(now)
