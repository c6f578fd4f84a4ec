"""OpenTelemetry traces of a job's life, from the kernel's submit to the daemon's result.

Off by default: until :func:`configure` is given an OTLP endpoint, the OpenTelemetry API hands
out no-op spans, so tracing costs a function call. With an endpoint (``QHPC_OTLP_ENDPOINT`` for
kernels, ``--otlp-endpoint`` / ``otlp_endpoint`` for the daemon), spans go in batches to an
OTLP/HTTP collector. The kernel's submit span travels to the daemon in the W3C ``traceparent``
header, so one trace shows the submit, the validation, the wait in the queue, every chunk and
the result. Span names and attributes are listed in docs/operations.md ("Traces").

Cheap enough to leave on: a trace is sampled where it starts (the kernel's submit, or the
daemon's job for a caller that sends no ``traceparent``) at a ratio, and every later span
follows that decision, so a trace is whole or absent; an unsampled span records nothing.
Finished spans wait in a bounded queue for the exporter's thread, off the request path: when
the collector is slower than the daemon, spans are dropped rather than the daemon slowed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping
from typing import TYPE_CHECKING

from opentelemetry import context, propagate, trace

if TYPE_CHECKING:  # the SDK is imported when tracing is configured: the settings import this
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider

TRACER_NAME = "qhpc_lab"
ENDPOINT_VARIABLE = "QHPC_OTLP_ENDPOINT"
"""The kernel's setting: an OTLP/HTTP traces endpoint, e.g. http://collector:4318/v1/traces."""
SAMPLING_VARIABLE = "QHPC_TRACE_SAMPLING_RATIO"
"""The share of traces kept where they start, kernel and daemon alike (0 to 1)."""
DEFAULT_SAMPLING_RATIO = 0.1
"""One trace in ten: the daemon's throughput cost stays within 10 % (docs/benchmarks.md)."""


def tracer() -> trace.Tracer:
    """The one tracer of qhpc-lab (a no-op until a provider is configured)."""
    return trace.get_tracer(TRACER_NAME)


def configure(
    service_name: str,
    endpoint: str | None = None,
    *,
    processor: SpanProcessor | None = None,
    sampling_ratio: float = 1.0,
) -> TracerProvider | None:
    """Send this process's spans to ``endpoint`` (OTLP/HTTP), or to ``processor`` (tests:
    an in-memory exporter behind a simple processor). Neither given: tracing stays off and
    nothing is configured. A trace that starts here is kept with probability
    ``sampling_ratio``; one that continues a caller's follows the caller's decision. Returns
    the provider so its owner can shut it down (flush)."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    if processor is None:
        if not endpoint:
            return None
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        # Its queue holds OTEL_BSP_MAX_QUEUE_SIZE spans (2048), sent by its own thread in
        # batches of OTEL_BSP_MAX_EXPORT_BATCH_SIZE (512) every OTEL_BSP_SCHEDULE_DELAY ms.
        processor = BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint))
    provider = TracerProvider(
        resource=Resource.create({"service.name": service_name}),
        sampler=ParentBased(TraceIdRatioBased(sampling_ratio)),
    )
    provider.add_span_processor(processor)
    trace.set_tracer_provider(provider)
    return provider


def configure_from_environment(service_name: str) -> TracerProvider | None:
    """The kernel side: trace when ``QHPC_OTLP_ENDPOINT`` is set, once per process, keeping
    the share of submissions ``QHPC_TRACE_SAMPLING_RATIO`` says (the daemon's default)."""
    from opentelemetry.sdk.trace import TracerProvider

    endpoint = os.environ.get(ENDPOINT_VARIABLE)
    if not endpoint or isinstance(trace.get_tracer_provider(), TracerProvider):
        return None
    return configure(service_name, endpoint, sampling_ratio=sampling_ratio(os.environ))


def sampling_ratio(environ: Mapping[str, str]) -> float:
    """``QHPC_TRACE_SAMPLING_RATIO`` from ``environ``, or the default; ValueError naming the
    variable for a value that is not a number from 0 to 1."""
    text = environ.get(SAMPLING_VARIABLE, "")
    if not text:
        return DEFAULT_SAMPLING_RATIO
    try:
        ratio = float(text)
    except ValueError:
        ratio = -1.0
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"{SAMPLING_VARIABLE}={text!r}: give a number from 0 to 1")
    return ratio


def inject(headers: MutableMapping[str, str]) -> MutableMapping[str, str]:
    """Add the current span's ``traceparent`` (and ``tracestate``) to outgoing headers."""
    propagate.inject(headers)
    return headers


def extract(headers: Mapping[str, str]) -> context.Context:
    """The caller's trace context from incoming headers (an empty one when absent)."""
    return propagate.extract(headers)
