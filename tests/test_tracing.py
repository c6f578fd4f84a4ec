"""Traces: the kernel's submit span and the daemon's spans form one trace.

The kernel side records into the OpenTelemetry SDK's in-memory exporter; the daemon is a real
``qhpc scheduler serve`` process configured with an OTLP endpoint, and exports over OTLP/HTTP
to a small collector in this test that decodes the protobuf requests.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from qhpc_lab import tracing
from qhpc_lab.client import Client
from qhpc_lab.programs import Program
from tests.support.client_env import lab_env
from tests.support.daemons import daemon
from tests.support.polling import poll_until


class Collector:
    """An OTLP/HTTP traces endpoint on 127.0.0.1 that keeps every span it is sent."""

    def __init__(self) -> None:
        self.spans: list[Any] = []
        self.lock = threading.Lock()
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                request = ExportTraceServiceRequest.FromString(body)
                with collector.lock:
                    for resource in request.resource_spans:
                        for scope in resource.scope_spans:
                            collector.spans.extend(scope.spans)
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/v1/traces"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def named(self, name: str) -> list[Any]:
        with self.lock:
            return [span for span in self.spans if span.name == name]


@pytest.fixture
def collector() -> Iterator[Collector]:
    collector = Collector()
    collector.thread.start()
    try:
        yield collector
    finally:
        collector.server.shutdown()
        collector.server.server_close()


@pytest.fixture(scope="module")
def kernel_spans() -> InMemorySpanExporter:
    """The kernel's spans, in memory (a process has one tracer provider: set once)."""
    exporter = InMemorySpanExporter()
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        tracing.configure("qhpc-kernel-test", processor=SimpleSpanProcessor(exporter))
    else:
        trace.get_tracer_provider().add_span_processor(SimpleSpanProcessor(exporter))
    return exporter


def test_a_job_is_one_trace_from_the_kernel_submit_to_the_result(
    tmp_path: Path, collector: Collector, kernel_spans: InMemorySpanExporter, sequence_json: str
) -> None:
    """Tracing every job, the daemon sends the job's spans and nothing else: no span of
    FastAPI's own instrumentation for the submit or the client's polls."""
    fast_export = {"OTEL_BSP_SCHEDULE_DELAY": "100"}
    every_job = ("--otlp-endpoint", collector.url, "--trace-sampling-ratio", "1")
    with daemon(tmp_path, *every_job, env=fast_export) as handle:
        client = Client(environ={"HOME": str(tmp_path), **lab_env(handle.url)})
        try:
            program = Program(format="pulser", body=sequence_json, shots=250)
            job = client.submit(program, job_class="development")
            assert job.wait(120) == "DONE"
        finally:
            client.close()
        job_spans = poll_until(lambda: collector.named("qhpc.job"), "the daemon's job span")

    (submit,) = [s for s in kernel_spans.get_finished_spans() if s.name == "qhpc.submit"]
    assert submit.attributes["qhpc.job_id"] == int(job.id)
    (job_span,) = job_spans
    trace_id = submit.context.trace_id.to_bytes(16, "big")
    assert job_span.trace_id == trace_id, "the daemon did not continue the kernel's trace"
    assert job_span.parent_span_id == submit.context.span_id.to_bytes(8, "big")

    children = [s for s in collector.spans if s.parent_span_id == job_span.span_id]
    names = [s.name for s in sorted(children, key=lambda s: s.start_time_unix_nano)]
    assert names[0] == "qhpc.validate" and names[1] == "qhpc.queued", names
    chunks = [s for s in children if s.name == "qhpc.chunk"]
    assert len(chunks) >= 3, "250 shots on the test profile run in 100-shot chunks"
    shots = [a.value.int_value for s in chunks for a in s.attributes if a.key == "qhpc.shots"]
    assert sum(shots) == 250
    assert names[-1] == "qhpc.result"
    assert all(s.trace_id == trace_id for s in children)
    assert {s.name for s in collector.spans} == {"qhpc.job", *names}


def test_a_trace_is_kept_where_it_starts_and_followed_after(
    tmp_path: Path, collector: Collector, kernel_spans: InMemorySpanExporter, sequence_json: str
) -> None:
    """With a sampling ratio of 0 the daemon starts no trace of its own (a submission without
    ``traceparent``, or with an unsampled one, records nothing) and continues a kernel's
    sampled trace whole."""
    fast_export = {"OTEL_BSP_SCHEDULE_DELAY": "100"}
    with daemon(
        tmp_path, "--otlp-endpoint", collector.url, "--trace-sampling-ratio", "0", env=fast_export
    ) as handle:
        env = lab_env(handle.url)
        headers = {"Authorization": f"Bearer {env['QHPC_TOKEN']}"}
        unsampled_parent = {"traceparent": f"00-{'ab' * 16}-{'cd' * 8}-00"}
        body = {"sequence": sequence_json, "shots": 10}
        untraced = [
            httpx.post(f"{handle.url}/jobs", json=body, headers={**headers, **extra}).json()["id"]
            for extra in ({}, unsampled_parent)
        ]
        client = Client(environ={"HOME": str(tmp_path), **env})
        try:
            for job_id in untraced:
                assert client.job(job_id).wait(120) == "DONE"
            job = client.submit(Program(format="pulser", body=sequence_json, shots=10))
            assert job.wait(120) == "DONE"
        finally:
            client.close()
        (job_span,) = poll_until(lambda: collector.named("qhpc.job"), "the kernel's job traced")
    assert [a.value.int_value for a in job_span.attributes if a.key == "qhpc.job_id"] == [
        int(job.id)
    ]
    assert {span.trace_id for span in collector.spans} == {job_span.trace_id}
    with pytest.raises(ValueError, match="QHPC_TRACE_SAMPLING_RATIO='2': give a number"):
        tracing.sampling_ratio({"QHPC_TRACE_SAMPLING_RATIO": "2"})
