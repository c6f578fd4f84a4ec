"""The one SSE reader against a scripted server on a real socket: reconnection after a drop,
``Last-Event-ID`` resumption, the server's ``reset``, a silent stream, a refusal, and a feed
shared by several subscribers over one connection."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest

from qhpc_lab.eventstream import (
    Backoff,
    EventStream,
    Feed,
    StreamEvent,
    StreamRefused,
    StreamState,
    comment,
    encode,
)

pytestmark = pytest.mark.anyio

FAST = Backoff(first_s=0.01, max_s=0.05, jitter=0)
Script = Callable[[asyncio.StreamWriter, asyncio.Event], Awaitable[None]]
"""What the server does on one connection: it writes to the writer; the event is set when the
test is done with the server (a script that holds its connection open waits for it)."""


class ScriptedServer:
    """HTTP/1.1 on 127.0.0.1: connection k answers ``scripts[k]`` (the last one repeats) and
    records the request's headers."""

    def __init__(self, scripts: list[Script], status: int = 200) -> None:
        self.scripts = scripts
        self.status = status
        self.requests: list[dict[str, str]] = []
        self.url = ""
        self.released = asyncio.Event()
        """Set when the test leaves :meth:`running`: connections held open may end."""

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[ScriptedServer]:
        server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        try:
            yield self
        finally:
            self.released.set()
            server.close()
            await server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode().split("\r\n")[1:]
        self.requests.append(
            {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in head if line)}
        )
        script = self.scripts[min(len(self.requests), len(self.scripts)) - 1]
        if self.status != 200:
            body = b'{"detail": "not for you"}'
            writer.write(
                f"HTTP/1.1 {self.status} No\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
        else:
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                b"Cache-Control: no-cache\r\nConnection: close\r\n\r\n"
            )
            with contextlib.suppress(ConnectionError):
                await writer.drain()
                await script(writer, self.released)
        with contextlib.suppress(ConnectionError):
            writer.close()


def event(kind: str, number: int | None, **data: object) -> bytes:
    return encode(StreamEvent(kind, dict(data), None if number is None else str(number)))


def sends(*chunks: bytes, hold_open: bool = False) -> Script:
    """Write ``chunks``, then end the stream, or with ``hold_open`` keep the connection open
    and silent until the test is done."""

    async def script(writer: asyncio.StreamWriter, released: asyncio.Event) -> None:
        for chunk in chunks:
            writer.write(chunk)
            await writer.drain()
        if hold_open:
            await released.wait()

    return script


async def take(stream: EventStream, count: int, timeout: float = 10) -> list[StreamEvent]:
    events: list[StreamEvent] = []
    async with asyncio.timeout(timeout), contextlib.aclosing(aiter(stream)) as items:
        async for item in items:
            events.append(item)
            if len(events) == count:
                return events
    return events


async def test_reconnects_after_a_drop_and_resumes_from_the_last_id():
    server = ScriptedServer(
        [
            sends(event("job", 1, id=7), event("queue", 2, waiting=3)),
            sends(event("queue", 3, waiting=2), hold_open=True),
        ]
    )
    states: list[StreamState] = []
    async with server.running(), httpx.AsyncClient(base_url=server.url) as http:
        stream = EventStream(http, "/events", backoff=FAST, on_state=states.append)
        events = await take(stream, 4)
    assert [(e.kind, e.id) for e in events] == [
        ("reset", None),  # a first connection resumes nothing: the reader re-reads
        ("job", "1"),
        ("queue", "2"),
        ("queue", "3"),  # no reset: the reconnection resumed after id 2
    ]
    assert events[2].data == {"waiting": 3}
    assert "last-event-id" not in server.requests[0]
    assert server.requests[1]["last-event-id"] == "2"
    assert [s.phase for s in states] == ["connected", "reconnecting", "connected"]
    assert states[1].reason == "the server ended the stream" and states[1].retry_in_s == 0.01
    assert str(states[1]) == "reconnecting in 0.0 s (the server ended the stream)"


async def test_a_server_that_cannot_resume_says_reset():
    server = ScriptedServer(
        [
            sends(event("job", 5, id=1)),
            sends(event("reset", None), event("device", 90, state="ONLINE"), hold_open=True),
        ]
    )
    async with server.running(), httpx.AsyncClient(base_url=server.url) as http:
        events = await take(EventStream(http, "/events", backoff=FAST), 4)
    assert [(e.kind, e.id) for e in events] == [
        ("reset", None),
        ("job", "5"),
        ("reset", None),  # the server's, once: the reader adds none when it resumed
        ("device", "90"),
    ]
    assert server.requests[1]["last-event-id"] == "5"


async def test_a_silent_stream_is_dead_but_heartbeats_keep_it_alive():
    beats = [comment("heartbeat")] * 4
    server = ScriptedServer(
        [
            sends(event("job", 1, id=1), hold_open=True),  # then silence
            sends(*beats),  # written at once, then slowly below
            sends(event("job", 3, id=3), hold_open=True),
        ]
    )

    async def heartbeats(writer: asyncio.StreamWriter, released: asyncio.Event) -> None:
        for _ in range(4):
            writer.write(comment("heartbeat"))
            await writer.drain()
            await asyncio.sleep(0.2)  # under the 0.5 s timeout each time: alive for 0.8 s
        writer.write(event("job", 2, id=2))
        await writer.drain()

    server.scripts[1] = heartbeats
    states: list[StreamState] = []
    async with server.running(), httpx.AsyncClient(base_url=server.url) as http:
        stream = EventStream(
            http, "/events", heartbeat_timeout_s=0.5, backoff=FAST, on_state=states.append
        )
        events = await take(stream, 4)
    assert [(e.kind, e.id) for e in events] == [
        ("reset", None),
        ("job", "1"),
        ("job", "2"),
        ("job", "3"),
    ]
    reasons = [s.reason for s in states if s.phase == "reconnecting"]
    assert reasons == ["silent for 0.5 s", "the server ended the stream"]


async def test_a_refusal_fails_for_good_with_the_reason():
    server = ScriptedServer([sends()], status=403)
    states: list[StreamState] = []
    async with server.running(), httpx.AsyncClient(base_url=server.url) as http:
        stream = EventStream(http, "/events", backoff=FAST, on_state=states.append)
        with pytest.raises(StreamRefused, match="403: not for you"):
            await take(stream, 1)
    assert len(server.requests) == 1
    assert str(states[-1]) == "failed: GET /events answered 403: not for you"


async def test_a_feed_shares_one_connection_and_brings_late_subscribers_up_to_date():
    server = ScriptedServer(
        [sends(event("queue", 1, waiting=4), event("device", 2, state="ONLINE"), hold_open=True)]
    )
    async with server.running(), httpx.AsyncClient(base_url=server.url) as http:
        feed = Feed(lambda on_state: EventStream(http, "/events", on_state=on_state))
        async with feed.subscribe() as first:
            seen = [await first.get() for _ in range(5)]
            assert [getattr(i, "kind", getattr(i, "phase", None)) for i in seen] == [
                "connecting",
                "connected",
                "reset",
                "queue",
                "device",
            ]
            async with feed.subscribe() as late:
                replay = [late.get_nowait() for _ in range(3)]
                assert replay[0] == StreamState("connected")
                assert [i.kind for i in replay[1:]] == ["device", "queue"]
                assert feed.latest("queue").data == {"waiting": 4}
        assert feed.latest("queue") is None  # closed with its last subscriber
    assert len(server.requests) == 1
