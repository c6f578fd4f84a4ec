"""OpenTelemetry traces of a job's life, from the kernel's submit to the daemon's result.

Off by default: until :func:`configure` is given an OTLP endpoint, the OpenTelemetry API hands
out no-op spans, so tracing costs a function call. With an endpoint (``QHPC_OTLP_ENDPOINT`` for
kernels, ``--otlp-endpoint`` / ``otlp_endpoint`` for the daemon), spans go in batches to an
OTLP/HTTP collector. The kernel's submit span travels to the daemon in the W3C ``traceparent``
header, so one trace shows the submit, the validation, the wait in the queue, every chunk and
the result. Span names and attributes are listed in docs/operations.md ("Traces").
"""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping

from opentelemetry import context, propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

TRACER_NAME = "qhpc_lab"
ENDPOINT_VARIABLE = "QHPC_OTLP_ENDPOINT"
"""The kernel's setting: an OTLP/HTTP traces endpoint, e.g. http://collector:4318/v1/traces."""


def tracer() -> trace.Tracer:
    """The one tracer of qhpc-lab (a no-op until a provider is configured)."""
    return trace.get_tracer(TRACER_NAME)


def configure(
    service_name: str,
    endpoint: str | None = None,
    *,
    processor: SpanProcessor | None = None,
) -> TracerProvider | None:
    """Send this process's spans to ``endpoint`` (OTLP/HTTP), or to ``processor`` (tests:
    an in-memory exporter behind a simple processor). Neither given: tracing stays off and
    nothing is configured. Returns the provider so its owner can shut it down (flush)."""
    if processor is None:
        if not endpoint:
            return None
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        processor = BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint))
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    provider.add_span_processor(processor)
    trace.set_tracer_provider(provider)
    return provider


def configure_from_environment(service_name: str) -> TracerProvider | None:
    """The kernel side: trace when ``QHPC_OTLP_ENDPOINT`` is set, once per process."""
    endpoint = os.environ.get(ENDPOINT_VARIABLE)
    if not endpoint or isinstance(trace.get_tracer_provider(), TracerProvider):
        return None
    return configure(service_name, endpoint)


def inject(headers: MutableMapping[str, str]) -> MutableMapping[str, str]:
    """Add the current span's ``traceparent`` (and ``tracestate``) to outgoing headers."""
    propagate.inject(headers)
    return headers


def extract(headers: Mapping[str, str]) -> context.Context:
    """The caller's trace context from incoming headers (an empty one when absent)."""
    return propagate.extract(headers)
