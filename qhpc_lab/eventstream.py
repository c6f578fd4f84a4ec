"""The scheduler's event stream (server-sent events): one codec for every side that speaks it.

The daemon encodes with :func:`encode`; the kernel's scheduler target, the Jupyter server
extension and ``qhpc admin`` read with the reader in this module. Event kinds and their data
are documented in docs/scheduler.md ("Event stream").
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sse_starlette import ServerSentEvent

EVENT_KINDS = ("job", "device", "queue", "reset")
"""``job``: one of the caller's jobs changed; ``device``: the QPU's state; ``queue``: positions,
ETAs and depth (coalesced); ``reset``: the server could not resume from ``Last-Event-ID``, so
the reader must re-read what it shows."""


@dataclass(frozen=True)
class StreamEvent:
    """One event as it crosses the wire."""

    kind: str
    data: dict[str, Any]
    id: str | None = None


def server_sent_event(event: StreamEvent) -> ServerSentEvent:
    """The event as sse-starlette sends it (the daemon's ``EventSourceResponse``)."""
    return ServerSentEvent(
        data=json.dumps(event.data, separators=(",", ":")), event=event.kind, id=event.id, sep="\n"
    )


def encode(event: StreamEvent) -> bytes:
    """The event in SSE wire form (the one encoder: the daemon and the server-extension relay)."""
    return server_sent_event(event).encode()
