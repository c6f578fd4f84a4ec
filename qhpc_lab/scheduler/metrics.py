"""The scheduler's Prometheus metrics, on a registry of its own (never the process-global one).

Two kinds of figures live here. Events (a submission, a chunk, a calibration, a request) are
counted as they happen through the methods of :class:`Metrics`; state (queue depth, device
state, calibration age, sessions) is read when Prometheus scrapes, from a :class:`Snapshot`
the ``/metrics`` route takes. Every label has a fixed or bounded set of values: job classes,
device states, job statuses, route templates, HTTP methods and codes, and the reason sets
below; no per-user or per-job label. docs/operations.md lists the metrics, the alerts built
on them (``deploy/prometheus/qhpc-rules.yml``) and the dashboard.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Collection, Iterable, Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from qhpc_lab.qpu import DeviceState
from qhpc_lab.scheduler import quotas
from qhpc_lab.scheduler.policy import JOB_CLASSES
from qhpc_lab.vocabulary import ACTIVE_STATUSES as ACTIVE
from qhpc_lab.vocabulary import FINAL_STATUSES as FINAL
from qhpc_lab.vocabulary import JobStatus

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
"""The text format Prometheus 2.x and 3.x both scrape."""

WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 24 * 3600)
"""Submission to first shot: milliseconds on an idle QPU, hours for production behind a queue."""

CHUNK_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
"""One chunk's wall time, emulation of a first chunk included (profiles use 0.05 s to 60 s)."""

GROUP_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
"""Submissions per transaction (group commit, :mod:`qhpc_lab.scheduler.group_commit`)."""
REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
"""API request latency to the response's first byte."""

STALL_REASONS = (
    "store_unavailable",
    "dispatcher_error",
    "driver_unavailable",
    "crashed",
    "stopped",
)
"""Why the dispatcher is not dispatching: the values of ``qhpc_dispatcher_stall_reason``."""

ERROR_REASONS = (
    "execution_failed",
    "worker_died",
    "wall_time_budget",
    "memory_budget",
    "qpu_time_budget",
    "retry_budget",
    "other",
)
"""Why a job ended in ERROR: the values of ``qhpc_job_errors_total{reason}``; an unknown reason
is counted as ``other`` so that the label set stays bounded."""

HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED_ROUTE = "<unmatched>"
"""The route label of requests that matched no route (404s of arbitrary paths)."""


@dataclass(frozen=True)
class Snapshot:
    """The scheduler's state at scrape time, as the ``/metrics`` route reads it."""

    queue_depth: Mapping[str, int]
    jobs_by_status: Mapping[str, int]
    device_state: str
    calibration_age_s: float
    calibration_interval_s: float
    calibration_duration_s: float
    accessible: bool
    draining: bool
    sessions_open: int
    emulator_worker_up: bool | None = None
    """None when the driver has no emulator worker (the gauge is then left out)."""
    maintenance_ends_at: float | None = None
    """Unix time the current maintenance window is declared to end, if one is."""
    reservation: tuple[float, float] | None = None
    """The reservation in force, else the next (start, end, Unix times); None: none."""


class Metrics:
    """One daemon's metrics: the event methods the scheduler calls and the scrape rendering."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        # -- jobs
        self._submissions = Counter(
            "qhpc_submissions_total", "Accepted job submissions.", ["job_class"], registry=r
        )
        self._rejected = Counter(
            "qhpc_rejected_submissions_total", "Refused job submissions.", registry=r
        )
        self._quota_refusals = Counter(
            "qhpc_quota_refusals_total",
            "Submissions refused by a quota, by its subject kind and unit.",
            ["kind", "unit"],
            registry=r,
        )
        self._groups = Histogram(
            "qhpc_submission_group_size",
            "Submissions written in one transaction (group commit).",
            buckets=GROUP_BUCKETS,
            registry=r,
        )
        self._finished = Counter(
            "qhpc_jobs_finished_total", "Jobs reaching a final state.", ["status"], registry=r
        )
        self._errors = Counter(
            "qhpc_job_errors_total", "Jobs ended in ERROR, by reason.", ["reason"], registry=r
        )
        self._wait = Histogram(
            "qhpc_job_wait_seconds",
            "Submission to first shot.",
            ["job_class"],
            buckets=WAIT_BUCKETS,
            registry=r,
        )
        self._preemptions = Counter(
            "qhpc_preemptions_total",
            "A started job set aside between two of its chunks for another job.",
            ["preempted_class", "by_class"],
            registry=r,
        )
        # -- the QPU
        self._chunk = Histogram(
            "qhpc_chunk_duration_seconds",
            "Wall time of one chunk of shots.",
            ["job_class"],
            buckets=CHUNK_BUCKETS,
            registry=r,
        )
        self._busy = Counter(
            "qhpc_qpu_busy_seconds_total", "Seconds the QPU ran shots.", ["job_class"], registry=r
        )
        self._shots = Counter("qhpc_shots_total", "Shots executed.", registry=r)
        self._calibrations = Counter(
            "qhpc_calibrations_total", "Calibrations performed.", registry=r
        )
        # -- the daemon
        self._dispatcher_up = Gauge(
            "qhpc_dispatcher_up", "1 while the dispatcher runs, 0 when it stalled.", registry=r
        )
        self._stall_reason = Gauge(
            "qhpc_dispatcher_stall_reason",
            "1 for the reason the dispatcher stalled (all 0 while it runs).",
            ["reason"],
            registry=r,
        )
        self._store_errors = Counter(
            "qhpc_store_errors_total", "Failed operations on the job store.", registry=r
        )
        self._subscribers = Gauge("qhpc_event_subscribers", "Open /events streams.", registry=r)
        self._requests = Counter(
            "qhpc_http_requests_total",
            "API requests by route template and status code.",
            ["method", "route", "code"],
            registry=r,
        )
        self._latency = Histogram(
            "qhpc_http_request_duration_seconds",
            "API request latency to the response's first byte, by route template.",
            ["method", "route"],
            buckets=REQUEST_BUCKETS,
            registry=r,
        )
        # -- state read at scrape time
        self._queue_depth = Gauge(
            "qhpc_queue_depth", "Jobs waiting or running, by class.", ["job_class"], registry=r
        )
        self._jobs = Gauge("qhpc_jobs", "Jobs in the store by status.", ["status"], registry=r)
        self._device_state = Gauge(
            "qhpc_device_state", "1 for the device's current state.", ["state"], registry=r
        )
        self._calibration_age = Gauge(
            "qhpc_calibration_age_seconds", "Seconds since the last calibration.", registry=r
        )
        self._calibration_interval = Gauge(
            "qhpc_calibration_interval_seconds",
            "The device profile's time between calibrations.",
            registry=r,
        )
        self._calibration_duration = Gauge(
            "qhpc_calibration_duration_seconds",
            "The device profile's time one calibration takes.",
            registry=r,
        )
        self._accessible = Gauge(
            "qhpc_accessible", "1 while submissions are accepted (POST /accessible).", registry=r
        )
        self._draining = Gauge("qhpc_draining", "1 while an operator drains the QPU.", registry=r)
        self._sessions = Gauge("qhpc_sessions_open", "Active (unrevoked) sessions.", registry=r)
        self._worker_up = _OptionalGauge(
            "qhpc_emulator_worker_up", "1 while the emulator worker process lives.", r
        )
        self._maintenance_end = _OptionalGauge(
            "qhpc_maintenance_window_end_timestamp_seconds",
            "Declared end of the current maintenance window (Unix time); absent without one.",
            r,
        )
        self._reservation_start = _OptionalGauge(
            "qhpc_reservation_start_timestamp_seconds",
            "Start of the reservation in force, else of the next (Unix time); absent without one.",
            r,
        )
        self._reservation_end = _OptionalGauge(
            "qhpc_reservation_end_timestamp_seconds",
            "End of the reservation in force, else of the next (Unix time); absent without one.",
            r,
        )
        for job_class in JOB_CLASSES:
            self._submissions.labels(job_class)
            self._wait.labels(job_class)
            self._chunk.labels(job_class)
            self._busy.labels(job_class)
            for by_class in JOB_CLASSES:
                self._preemptions.labels(job_class, by_class)
        for status in FINAL:
            self._finished.labels(status)
        for reason in ERROR_REASONS:
            self._errors.labels(reason)
        for kind in quotas.SUBJECT_KINDS:
            for unit in quotas.UNITS:
                self._quota_refusals.labels(kind, unit)
        self._last_chunk: tuple[int, str] | None = None
        self._request_children: dict[tuple[str, str, int], tuple[Histogram, Counter]] = {}
        self.dispatcher_stalled("stopped")

    # -- jobs ---------------------------------------------------------------------------------

    def submitted(self, job_class: str) -> None:
        self._submissions.labels(job_class).inc()

    def rejected(self) -> None:
        self._rejected.inc()

    def quota_refused(self, kind: str, unit: str) -> None:
        """A submission a quota refused (counted in rejected too)."""
        self._rejected.inc()
        self._quota_refusals.labels(kind, unit).inc()

    def submissions_written(self, group: int) -> None:
        """One transaction wrote ``group`` submissions (accepted or refused)."""
        self._groups.observe(group)

    def job_finished(self, status: str, reason: str | None = None) -> None:
        """A job reached ``status`` (DONE, ERROR, CANCELED); an ERROR says why (ERROR_REASONS)."""
        self._finished.labels(status).inc()
        if status == JobStatus.ERROR:
            self._errors.labels(reason if reason in ERROR_REASONS else "other").inc()

    def job_started(self, job_class: str, waited_s: float) -> None:
        """A job's first shot: it waited ``waited_s`` since submission."""
        self._wait.labels(job_class).observe(max(0.0, waited_s))

    # -- the QPU ------------------------------------------------------------------------------

    def chunk_started(self, job_id: int, job_class: str, active: Collection[int]) -> None:
        """A chunk of ``job_id`` starts; ``active`` are the ids of unfinished jobs.

        When the job whose chunk ran last is still unfinished and is not this one, it was
        preempted by this job's class.
        """
        last = self._last_chunk
        if last is not None and last[0] != job_id and last[0] in active:
            self._preemptions.labels(last[1], job_class).inc()
        self._last_chunk = (job_id, job_class)

    def chunk_ran(self, job_class: str, seconds: float, shots: int) -> None:
        self._chunk.labels(job_class).observe(seconds)
        self._busy.labels(job_class).inc(seconds)
        self._shots.inc(shots)

    def calibrated(self) -> None:
        self._calibrations.inc()

    # -- the daemon ---------------------------------------------------------------------------

    def dispatcher_running(self) -> None:
        self._dispatcher_up.set(1)
        for reason in STALL_REASONS:
            self._stall_reason.labels(reason).set(0)

    def dispatcher_stalled(self, reason: str) -> None:
        """The dispatcher stopped dispatching, for one of STALL_REASONS."""
        if reason not in STALL_REASONS:
            raise ValueError(f"unknown stall reason {reason!r}; use one of {STALL_REASONS}")
        self._dispatcher_up.set(0)
        for known in STALL_REASONS:
            self._stall_reason.labels(known).set(int(known == reason))

    def dispatcher_ended(self, task: asyncio.Task[None]) -> None:
        """A done-callback for the dispatcher task: stopped when cancelled, else crashed."""
        self.dispatcher_stalled("stopped" if task.cancelled() else "crashed")

    def store_error(self) -> None:
        self._store_errors.inc()

    async def track_subscriber(self, stream: AsyncIterator[str]) -> AsyncIterator[str]:
        """``stream`` unchanged, counted in ``qhpc_event_subscribers`` while it is open."""
        self._subscribers.inc()
        try:
            async for item in stream:
                yield item
        finally:
            self._subscribers.dec()

    def request_done(self, method: str, route: str, code: int, seconds: float) -> None:
        method = method if method in HTTP_METHODS else "OTHER"
        children = self._request_children.get((method, route, code))
        if children is None:  # labels() costs more than the request's own bookkeeping
            children = self._request_children[method, route, code] = (
                self._latency.labels(method, route),
                self._requests.labels(method, route, str(code)),
            )
        latency, requests = children
        latency.observe(seconds)
        requests.inc()

    # -- scraping -----------------------------------------------------------------------------

    def render(self, snapshot: Snapshot) -> bytes:
        """The text exposition, with the scrape-time gauges set from ``snapshot``."""
        for job_class in {*JOB_CLASSES, *snapshot.queue_depth}:
            self._queue_depth.labels(job_class).set(snapshot.queue_depth.get(job_class, 0))
        for status in {*ACTIVE, *FINAL, *snapshot.jobs_by_status}:
            self._jobs.labels(status).set(snapshot.jobs_by_status.get(status, 0))
        _one_hot(self._device_state, DeviceState, snapshot.device_state)
        self._calibration_age.set(snapshot.calibration_age_s)
        self._calibration_interval.set(snapshot.calibration_interval_s)
        self._calibration_duration.set(snapshot.calibration_duration_s)
        self._accessible.set(int(snapshot.accessible))
        self._draining.set(int(snapshot.draining))
        self._sessions.set(snapshot.sessions_open)
        worker_up = snapshot.emulator_worker_up
        self._worker_up.value = None if worker_up is None else int(worker_up)
        self._maintenance_end.value = snapshot.maintenance_ends_at
        window = snapshot.reservation
        self._reservation_start.value = None if window is None else window[0]
        self._reservation_end.value = None if window is None else window[1]
        return generate_latest(_WithoutCreated(self.registry))


def _one_hot(gauge: Gauge, values: Iterable[str], current: str) -> None:
    for value in values:
        gauge.labels(value).set(int(value == current))


class _WithoutCreated(Collector):
    """A registry's families less their ``_created`` samples, which the 0.0.4 text format
    would expose as one extra gauge per counter and histogram series, read by nothing here."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterable[Metric]:
        for family in self.registry.collect():
            family.samples = [s for s in family.samples if not s.name.endswith("_created")]
            yield family


class _OptionalGauge(Collector):
    """An unlabelled gauge that is left out of the exposition while its value is None."""

    def __init__(self, name: str, documentation: str, registry: CollectorRegistry) -> None:
        self.name = name
        self.documentation = documentation
        self.value: float | None = None
        registry.register(self)

    def describe(self) -> list[GaugeMetricFamily]:
        return [GaugeMetricFamily(self.name, self.documentation)]

    def collect(self) -> list[GaugeMetricFamily]:
        if self.value is None:
            return []
        return [GaugeMetricFamily(self.name, self.documentation, value=self.value)]


class RequestMetrics:
    """ASGI middleware timing every HTTP request to its response's first byte, by route template.

    The route label is the matched template (``/jobs/{job_id}``), never the raw path, so that
    job ids do not become label values; an event stream is timed to its first byte, not its end.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        responded = False

        def record(code: int) -> None:
            route = getattr(scope.get("route"), "path", UNMATCHED_ROUTE)
            self.metrics.request_done(scope["method"], route, code, time.perf_counter() - started)

        async def timed_send(message: Message) -> None:
            nonlocal responded
            if message["type"] == "http.response.start":
                responded = True
                record(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, timed_send)
        except Exception:
            if not responded:  # Starlette's outermost middleware answers it with a 500
                record(500)
            raise
