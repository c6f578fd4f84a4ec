"""The scheduler's metrics: Prometheus conventions, bounded labels, one registry per daemon, and
that the figures move with what the daemon does (tests/test_prometheus.py scrapes them for real).
"""

from __future__ import annotations

import asyncio
import contextlib

import httpx
import prometheus_client
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from qhpc_lab.scheduler.metrics import (
    ERROR_REASONS,
    STALL_REASONS,
    UNMATCHED_ROUTE,
    Metrics,
    RequestMetrics,
    Snapshot,
)
from tests.support.in_process import Clients, development_overtakes_production

FAMILIES = {
    "qhpc_submissions": "counter",
    "qhpc_rejected_submissions": "counter",
    "qhpc_quota_refusals": "counter",
    "qhpc_jobs_finished": "counter",
    "qhpc_job_errors": "counter",
    "qhpc_job_wait_seconds": "histogram",
    "qhpc_preemptions": "counter",
    "qhpc_chunk_duration_seconds": "histogram",
    "qhpc_qpu_busy_seconds": "counter",
    "qhpc_shots": "counter",
    "qhpc_calibrations": "counter",
    "qhpc_dispatcher_up": "gauge",
    "qhpc_dispatcher_stall_reason": "gauge",
    "qhpc_store_errors": "counter",
    "qhpc_event_subscribers": "gauge",
    "qhpc_http_requests": "counter",
    "qhpc_http_request_duration_seconds": "histogram",
    "qhpc_queue_depth": "gauge",
    "qhpc_jobs": "gauge",
    "qhpc_device_state": "gauge",
    "qhpc_calibration_age_seconds": "gauge",
    "qhpc_calibration_interval_seconds": "gauge",
    "qhpc_calibration_duration_seconds": "gauge",
    "qhpc_accessible": "gauge",
    "qhpc_draining": "gauge",
    "qhpc_sessions_open": "gauge",
    "qhpc_emulator_worker_up": "gauge",
    "qhpc_submission_group_size": "histogram",
}
"""Every family a running daemon exposes (without a maintenance window), by parsed name."""

HISTOGRAM_UNITS = ("_seconds", "_size")
"""A histogram's name ends with its unit: seconds, or ``_size`` for a count of things."""

BOUNDED_LABELS = {
    "job_class",
    "status",
    "reason",
    "preempted_class",
    "by_class",
    "state",
    "method",
    "route",
    "code",
    "kind",  # a quota's subject kind (user, account), never the subject itself
    "unit",
    "le",
}


def parse(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Samples of an exposition, by (sample name, labels), read with the client's own parser."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def scrape(client: httpx.AsyncClient) -> dict:
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    return parse(response.text)


def snapshot(**changes: object) -> Snapshot:
    values: dict[str, object] = dict(
        queue_depth={"production": 2},
        jobs_by_status={"PENDING": 2},
        device_state="ONLINE",
        calibration_age_s=10.0,
        calibration_interval_s=3600.0,
        calibration_duration_s=1.0,
        accessible=True,
        draining=False,
        sessions_open=0,
    )
    values.update(changes)
    return Snapshot(**values)  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_exposition_follows_prometheus_conventions(api: Clients) -> None:
    await api.user.get("/jobs")
    text = (await api.anonymous.get("/metrics")).text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert {n: f.type for n, f in families.items() if n in FAMILIES} == FAMILIES
    assert set(families) - set(FAMILIES) == set(), "a family this test does not know"
    for name, family in families.items():
        assert family.documentation, name
        if family.type == "counter":
            assert f"# TYPE {name}_total counter" in text
        if family.type == "histogram":
            assert name.endswith(HISTOGRAM_UNITS), name
            buckets = [s for s in family.samples if s.name == f"{name}_bucket"]
            assert buckets and {s.labels["le"] for s in buckets} >= {"+Inf"}, name
        for sample in family.samples:
            assert set(sample.labels) <= BOUNDED_LABELS, sample
    samples = parse(text)
    for job_class in ("development", "test", "production"):
        assert ("qhpc_job_wait_seconds_count", frozenset({("job_class", job_class)})) in samples
        assert value(samples, "qhpc_queue_depth", job_class=job_class) == 0
    assert value(samples, "qhpc_device_state", state="ONLINE") == 1
    assert (
        sum(value(samples, "qhpc_device_state", state=s) for s in ("OFFLINE", "MAINTENANCE")) == 0
    )
    assert value(samples, "qhpc_dispatcher_up") == 1
    assert value(samples, "qhpc_emulator_worker_up") == 1
    interval = api.scheduler.driver.profile.calibration_interval_s
    assert value(samples, "qhpc_calibration_interval_seconds") == interval


def test_each_daemon_has_its_own_registry() -> None:
    first, second = Metrics(), Metrics()
    first.submitted("production")
    assert value(parse(first.render(snapshot()).decode()), "qhpc_submissions_total",
                 job_class="production") == 1  # fmt: skip
    assert value(parse(second.render(snapshot()).decode()), "qhpc_submissions_total",
                 job_class="production") == 0  # fmt: skip
    global_names = {f.name for f in prometheus_client.REGISTRY.collect()}
    assert not {n for n in global_names if n.startswith("qhpc_")}


@pytest.mark.anyio
async def test_request_latency_is_labelled_by_route_template(api: Clients) -> None:
    before = await scrape(api.anonymous)
    for _ in range(2):
        assert (await api.user.get("/jobs/987654")).status_code == 404
    assert (await api.user.get("/no/such/path/987654")).status_code == 404
    after = await scrape(api.anonymous)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    route = {"method": "GET", "route": "/jobs/{job_id}"}
    assert delta("qhpc_http_requests_total", **route, code="404") == 2
    assert delta("qhpc_http_request_duration_seconds_count", **route) == 2
    unmatched = {"method": "GET", "route": UNMATCHED_ROUTE, "code": "404"}
    assert delta("qhpc_http_requests_total", **unmatched) == 1
    assert not [labels for _, labels in after if any("987654" in v for _, v in labels)]


@pytest.mark.anyio
async def test_an_unhandled_error_counts_as_a_500_of_its_route() -> None:
    metrics = Metrics()
    app = FastAPI()
    app.add_middleware(RequestMetrics, metrics=metrics)

    @app.get("/boom/{part}")
    async def boom(part: str) -> None:
        raise RuntimeError(part)

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        assert (await client.get("/boom/x")).status_code == 500
    samples = parse(metrics.render(snapshot()).decode())
    labels = {"method": "GET", "route": "/boom/{part}", "code": "500"}
    assert value(samples, "qhpc_http_requests_total", **labels) == 1


@pytest.mark.anyio
async def test_preemption_wait_and_chunks_per_class(api: Clients, sequence_json: str) -> None:
    chunk = api.scheduler.driver.profile.chunk_shots
    _production, _development = await development_overtakes_production(
        api, sequence_json, production_chunks=20
    )
    samples = await scrape(api.anonymous)
    pair = {"preempted_class": "production", "by_class": "development"}
    assert value(samples, "qhpc_preemptions_total", **pair) == 1
    assert value(samples, "qhpc_preemptions_total", preempted_class="development",
                 by_class="production") == 0  # fmt: skip
    for job_class in ("production", "development"):
        assert value(samples, "qhpc_job_wait_seconds_count", job_class=job_class) == 1
        assert value(samples, "qhpc_qpu_busy_seconds_total", job_class=job_class) > 0
    assert value(samples, "qhpc_chunk_duration_seconds_count", job_class="production") >= 20
    assert value(samples, "qhpc_chunk_duration_seconds_count", job_class="development") == 1
    assert value(samples, "qhpc_shots_total") == 21 * chunk
    assert value(samples, "qhpc_jobs_finished_total", status="DONE") == 2
    assert value(samples, "qhpc_jobs", status="DONE") == 2


@pytest.mark.anyio
async def test_scrape_time_state_follows_the_daemon(api: Clients) -> None:
    session = (await api.admin.post("/sessions", json={"user_id": "1000"})).json()
    await api.admin.post("/admin/drain")
    samples = await scrape(api.anonymous)
    assert value(samples, "qhpc_sessions_open") == 1
    assert value(samples, "qhpc_draining") == 1
    await api.admin.post("/admin/resume")
    await api.admin.delete(f"/sessions/{session['id']}")
    closed = {"is_accessible": False, "message": "laser service"}
    assert (await api.admin.post("/accessible", json=closed)).status_code == 200
    samples = await scrape(api.anonymous)
    assert value(samples, "qhpc_sessions_open") == 0
    assert value(samples, "qhpc_draining") == 0
    assert value(samples, "qhpc_accessible") == 0
    assert value(samples, "qhpc_device_state", state="MAINTENANCE") == 1
    assert value(samples, "qhpc_device_state", state="ONLINE") == 0


def test_dispatcher_stall_reasons_and_error_reasons_are_bounded() -> None:
    metrics = Metrics()

    def samples() -> dict:
        return parse(metrics.render(snapshot(emulator_worker_up=None)).decode())

    assert value(samples(), "qhpc_dispatcher_up") == 0, "stopped until the scheduler starts"
    assert value(samples(), "qhpc_dispatcher_stall_reason", reason="stopped") == 1
    metrics.dispatcher_running()
    assert value(samples(), "qhpc_dispatcher_up") == 1
    assert (
        sum(value(samples(), "qhpc_dispatcher_stall_reason", reason=r) for r in STALL_REASONS) == 0
    )
    metrics.dispatcher_stalled("store_unavailable")
    now = samples()
    assert value(now, "qhpc_dispatcher_up") == 0
    assert {r: value(now, "qhpc_dispatcher_stall_reason", reason=r) for r in STALL_REASONS} == {
        r: float(r == "store_unavailable") for r in STALL_REASONS
    }
    with pytest.raises(ValueError, match="unknown stall reason"):
        metrics.dispatcher_stalled("gremlins")
    metrics.job_finished("ERROR", "wall_time_budget")
    metrics.job_finished("ERROR", "a reason nobody listed")
    metrics.store_error()
    now = samples()
    assert value(now, "qhpc_jobs_finished_total", status="ERROR") == 2
    assert value(now, "qhpc_job_errors_total", reason="wall_time_budget") == 1
    assert value(now, "qhpc_job_errors_total", reason="other") == 1
    assert {labels for name, labels in now if name == "qhpc_job_errors_total"} == {
        frozenset({("reason", r)}) for r in ERROR_REASONS
    }
    assert value(now, "qhpc_store_errors_total") == 1
    assert ("qhpc_emulator_worker_up", frozenset()) not in now, "no worker, no gauge"
    ended = parse(metrics.render(snapshot(maintenance_ends_at=1.5e9)).decode())
    assert value(ended, "qhpc_maintenance_window_end_timestamp_seconds") == 1.5e9
    reserved = parse(metrics.render(snapshot(reservation=(1.5e9, 1.6e9))).decode())
    assert value(reserved, "qhpc_reservation_start_timestamp_seconds") == 1.5e9
    assert value(reserved, "qhpc_reservation_end_timestamp_seconds") == 1.6e9
    assert ("qhpc_reservation_start_timestamp_seconds", frozenset()) not in ended


@pytest.mark.anyio
async def test_a_dispatcher_task_that_dies_reports_why() -> None:
    metrics = Metrics()

    async def crash() -> None:
        raise RuntimeError("bug")

    crashed = asyncio.create_task(crash())
    crashed.add_done_callback(metrics.dispatcher_ended)
    with contextlib.suppress(RuntimeError):
        await crashed
    await asyncio.sleep(0)  # done-callbacks run on the next loop iteration
    now = parse(metrics.render(snapshot()).decode())
    assert value(now, "qhpc_dispatcher_stall_reason", reason="crashed") == 1
    cancelled = asyncio.create_task(asyncio.sleep(60))
    cancelled.add_done_callback(metrics.dispatcher_ended)
    cancelled.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await cancelled
    await asyncio.sleep(0)
    now = parse(metrics.render(snapshot()).decode())
    assert value(now, "qhpc_dispatcher_stall_reason", reason="stopped") == 1


@pytest.mark.anyio
async def test_event_subscribers_are_counted_while_their_stream_is_open() -> None:
    metrics = Metrics()

    async def stream():
        yield ": connected\n\n"
        await asyncio.sleep(60)
        yield "never"

    def subscribers() -> float:
        return value(parse(metrics.render(snapshot()).decode()), "qhpc_event_subscribers")

    tracked = metrics.track_subscriber(stream())
    assert await anext(tracked) == ": connected\n\n"
    assert subscribers() == 1
    await tracked.aclose()
    assert subscribers() == 0
