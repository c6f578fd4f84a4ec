"""The scheduler's event stream (server-sent events): one codec for every side that speaks it.

The daemon encodes with :func:`encode`; the kernel's scheduler target, the Jupyter server
extension and ``qhpc admin`` read with :class:`EventStream` (one connection, reconnected with
back-off and resumed with ``Last-Event-ID``), shared between many readers by :class:`Feed`.
Event kinds and their data are documented in docs/scheduler.md ("Event stream").
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import httpx
from httpx_sse import SSEError, aconnect_sse
from sse_starlette import ServerSentEvent

from qhpc_lab.wire.documents import read_error

log = logging.getLogger("qhpc.eventstream")

EVENT_KINDS = ("job", "device", "queue", "reset")
"""``job``: one of the caller's jobs changed; ``device``: the QPU's state; ``queue``: positions,
end estimates and depth (coalesced); ``reset``: the server could not resume from
``Last-Event-ID``, so the reader must re-read what it shows."""

HEARTBEAT_S = 15
"""How often a server comments on a quiet stream (``: heartbeat``): the daemon and the Jupyter
server extension both, which keeps proxies from closing it and finds dead readers."""
HEARTBEAT_TIMEOUT_S = 3.0 * HEARTBEAT_S
"""A stream silent for three heartbeats is dead."""
CONNECT_TIMEOUT_S = 5.0
SUBSCRIBER_BACKLOG = 10_000
"""Items a slow subscriber may fall behind by before it is told to re-read (a ``reset``)."""


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


def comment(text: str) -> bytes:
    """A comment line (``: heartbeat``): keeps proxies from closing a quiet stream."""
    return ServerSentEvent(comment=text, sep="\n").encode()


@dataclass(frozen=True)
class StreamState:
    """Where a reader's connection stands, for the screens that say so."""

    phase: Literal["connecting", "connected", "reconnecting", "failed"]
    reason: str = ""
    """Why the last connection ended (reconnecting) or was refused for good (failed)."""
    retry_in_s: float | None = None

    def __str__(self) -> str:
        if self.phase == "reconnecting":
            return f"reconnecting in {self.retry_in_s:.1f} s ({self.reason})"
        if self.phase == "failed":
            return f"failed: {self.reason}"
        return self.phase


class StreamRefused(Exception):
    """The server refused the stream for good (a 4xx other than 408 and 429): no retry helps."""


@dataclass(frozen=True)
class Backoff:
    """Delays between reconnections: exponential with jitter, from ``first_s`` to ``max_s``."""

    first_s: float = 0.2
    max_s: float = 10.0
    factor: float = 2.0
    jitter: float = 0.2
    """A fraction of each delay drawn at random, so that readers do not reconnect in step."""

    def delay(self, attempt: int) -> float:
        base = min(self.max_s, self.first_s * self.factor**attempt)
        return base * (1 - self.jitter * random.random())


class EventStream:
    """Async iteration of one SSE URL's events, for as long as the caller iterates.

    A dropped, failing or silent stream (nothing, not even a heartbeat, for
    ``heartbeat_timeout_s``) is reopened after a :class:`Backoff` delay with ``Last-Event-ID``,
    so the server replays what was missed. Every connection that did not resume from an id
    starts with a ``reset`` event, like a server that could not resume: readers re-read what
    they show on ``reset`` and need no other rule. A permanent refusal ends the iteration with
    :class:`StreamRefused`. ``state`` (and ``on_state``) say where the connection stands.
    """

    def __init__(
        self,
        client: httpx.AsyncClient,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        heartbeat_timeout_s: float = HEARTBEAT_TIMEOUT_S,
        backoff: Backoff | None = None,
        on_state: Callable[[StreamState], None] | None = None,
    ) -> None:
        self._client = client
        self._url = url
        self._headers = dict(headers or {})
        self._timeout = httpx.Timeout(CONNECT_TIMEOUT_S, read=heartbeat_timeout_s)
        self._backoff = backoff or Backoff()
        self._on_state = on_state
        self.state = StreamState("connecting")
        self.last_id: str | None = None
        """The id of the last event received: where a reconnection resumes."""

    def _set(self, state: StreamState) -> None:
        self.state = state
        if self._on_state is not None:
            self._on_state(state)

    async def __aiter__(self) -> AsyncIterator[StreamEvent]:
        attempt = 0
        while True:
            try:
                async with contextlib.aclosing(self._connection()) as events:
                    async for event in events:
                        attempt = 0
                        yield event
                reason = "the server ended the stream"
            except StreamRefused as err:
                self._set(StreamState("failed", str(err)))
                raise
            except httpx.ReadTimeout:
                reason = f"silent for {self._timeout.read:g} s"
            except (httpx.HTTPError, SSEError, ValueError) as err:
                reason = str(err) or type(err).__name__
            delay = self._backoff.delay(attempt)
            attempt += 1
            self._set(StreamState("reconnecting", reason, round(delay, 3)))
            await asyncio.sleep(delay)

    async def _connection(self) -> AsyncIterator[StreamEvent]:
        headers = dict(self._headers)
        resuming = self.last_id is not None
        if resuming:
            headers["Last-Event-ID"] = str(self.last_id)
        async with aconnect_sse(
            self._client, "GET", self._url, headers=headers, timeout=self._timeout
        ) as source:
            response = source.response
            if response.status_code != 200:
                await response.aread()
                message = f"GET {self._url} answered {response.status_code}: {_detail(response)}"
                if 400 <= response.status_code < 500 and response.status_code not in (408, 429):
                    raise StreamRefused(message)
                raise httpx.HTTPStatusError(message, request=response.request, response=response)
            self._set(StreamState("connected"))
            if not resuming:
                yield StreamEvent("reset", {})
            async with contextlib.aclosing(source.aiter_sse()) as events:
                async for sse in events:
                    if sse.id:
                        self.last_id = sse.id
                    try:
                        data = json.loads(sse.data) if sse.data else {}
                    except ValueError:  # not this stream's form: said, skipped, read on
                        log.warning(
                            "%s sent a %r event that is not JSON: %.80r",
                            self._url,
                            sse.event,
                            sse.data,
                        )
                        continue
                    kind, id = sse.event, sse.id or None
                    yield StreamEvent(kind, data if isinstance(data, dict) else {}, id)


def _detail(response: httpx.Response) -> str:
    """Why the server refused the stream: its error document's detail, else its text."""
    error = read_error(response.content)
    return (error and error.detail) or response.text.strip() or response.reason_phrase


Item = StreamEvent | StreamState
"""What a :class:`Feed` subscriber receives: an event, or the connection's new state."""


class Subscription(asyncio.Queue[Item]):
    """One subscriber's items, in order."""

    async def connected(self) -> StreamState:
        """Wait until the stream is connected or refused for good (``failed``), and drop the
        ``reset`` that opens a fresh connection: for a reader that reads what it shows now."""
        while True:
            item = await self.get()
            if isinstance(item, StreamState) and item.phase in ("connected", "failed"):
                break
        if self._queue and self._queue[0] == StreamEvent("reset", {}):  # type: ignore[attr-defined]
            self.get_nowait()
        return item


class Feed:
    """One :class:`EventStream` shared by every subscriber, open while one subscribes.

    A subscriber gets, in order, the connection's state, the latest ``device`` and ``queue``
    events already received (so a late subscriber is current), then every event and state
    change. One that falls :data:`SUBSCRIBER_BACKLOG` items behind gets a ``reset`` instead.
    """

    REPLAYED = ("device", "queue")

    def __init__(self, open_stream: Callable[[Callable[[StreamState], None]], EventStream]):
        """``open_stream(on_state)``: a new EventStream reporting its state to ``on_state``."""
        self._open_stream = open_stream
        self._subscribers: set[Subscription] = set()
        self._latest: dict[str, StreamEvent] = {}
        self._task: asyncio.Task[None] | None = None
        self.state = StreamState("connecting")

    def latest(self, kind: str) -> StreamEvent | None:
        """The last ``device`` or ``queue`` event received while the feed was open."""
        return self._latest.get(kind)

    @contextlib.asynccontextmanager
    async def subscribe(self) -> AsyncIterator[Subscription]:
        queue = Subscription(SUBSCRIBER_BACKLOG)
        if self._task is None or self._task.done():
            self.state = StreamState("connecting")
            self._task = asyncio.create_task(self._run(), name="qhpc-event-feed")
        queue.put_nowait(self.state)
        for kind in self.REPLAYED:
            if kind in self._latest:
                queue.put_nowait(self._latest[kind])
        self._subscribers.add(queue)
        try:
            yield queue
        finally:
            self._subscribers.discard(queue)
            if not self._subscribers and self._task is not None:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError, StreamRefused):
                    await self._task
                self._task = None
                self._latest.clear()  # no longer kept current

    def _state_changed(self, state: StreamState) -> None:
        self.state = state
        self._fan_out(state)

    def _fan_out(self, item: Item) -> None:
        for queue in list(self._subscribers):
            try:
                queue.put_nowait(item)
            except asyncio.QueueFull:
                while not queue.empty():
                    queue.get_nowait()
                queue.put_nowait(StreamEvent("reset", {}))

    async def _run(self) -> None:
        stream = self._open_stream(self._state_changed)
        with contextlib.suppress(StreamRefused):  # subscribers saw the failed state
            async with contextlib.aclosing(aiter(stream)) as events:
                async for event in events:
                    if event.kind in self.REPLAYED:
                        self._latest[event.kind] = event
                    self._fan_out(event)
