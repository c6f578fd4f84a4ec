"""The daemon's event fan-out (``qhpc_lab.scheduler.events.EventBus``) on its own, without a
daemon: the order in which a subscriber gets what is published, and a subscriber that stops
reading. The wire and the client's reader are tests/test_eventstream.py's."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from qhpc_lab.eventstream import StreamEvent
from qhpc_lab.scheduler.events import EventBus, QueueSnapshot

pytestmark = pytest.mark.anyio


async def _waiting(
    stream: AsyncIterator[StreamEvent], kinds: list[str] | None = None
) -> asyncio.Task[list[str]]:
    """A reader of ``stream`` (the event kinds, into ``kinds`` as they come, until the stream
    ends or a ``job`` event with ``"last"``), started and parked on the stream's wait."""
    kinds = [] if kinds is None else kinds

    async def read() -> list[str]:
        async with contextlib.aclosing(stream):
            async for event in stream:
                kinds.append(event.kind)
                if event.kind == "job" and event.data.get("last"):
                    break
        return kinds

    reader = asyncio.create_task(read())
    for _ in range(3):
        await asyncio.sleep(0)
    return reader


async def test_a_published_event_is_sent_before_work_scheduled_after_it() -> None:
    """The dispatcher publishes RUNNING, then starts the QPU driver's chunk: the stream writes
    the event in the loop's next turn, ahead of the driver's start."""
    bus = EventBus()
    seen: list[str] = []
    reader = await _waiting(bus.subscribe("alice", admin=False), seen)

    async def driver_starts() -> None:
        seen.append("driver")

    bus.publish("job", {"id": 1, "status": "RUNNING", "last": True}, user_id="alice")
    driver = asyncio.create_task(driver_starts())
    await asyncio.gather(reader, driver)
    assert seen.index("job") < seen.index("driver"), seen


async def test_job_events_go_before_the_queue_event_and_others_jobs_are_not_seen() -> None:
    bus = EventBus(queue_now=lambda: QueueSnapshot({}, None, None, None))
    reader = await _waiting(bus.subscribe("alice", admin=False))
    bus.publish_queue(QueueSnapshot({"interactive": 1}, None, None, None))
    bus.publish("job", {"id": 2, "status": "PENDING"}, user_id="bob")
    bus.publish("job", {"id": 1, "status": "PENDING"}, user_id="alice")
    bus.publish("device", {"state": "ONLINE"})
    bus.publish("job", {"id": 1, "status": "RUNNING", "last": True}, user_id="alice")
    kinds = await reader
    assert kinds[-3:] == ["job", "device", "job"]  # bob's job is not alice's to see
    assert "queue" not in kinds[kinds.index("job") :]  # the changed queue waits for the jobs


async def test_a_subscriber_that_stops_reading_is_ended_and_the_others_go_on() -> None:
    """Past its backlog a stalled subscriber's stream ends (its client reconnects with
    Last-Event-ID); the daemon neither blocks nor slows the subscribers that read."""
    bus = EventBus(backlog=3)
    stalled = bus.subscribe("alice", admin=False, device={"state": "ONLINE"})
    assert (await anext(stalled)).kind == "device"  # then it reads no more
    reader = await _waiting(bus.subscribe("alice", admin=False))
    for number in range(5):
        bus.publish("job", {"id": number, "last": number == 4}, user_id="alice")
        await asyncio.sleep(0)  # the reader reads as it goes; the stalled one does not
    assert (await reader).count("job") == 5
    assert bus.subscribers == 0
    assert [event async for event in stalled] == []


async def test_a_new_subscriber_gets_the_queue_once() -> None:
    """The first subscriber makes the queue's snapshot itself; that is one queue event, not a
    second copy of the same snapshot marked as a change."""
    bus = EventBus(queue_now=lambda: QueueSnapshot({"interactive": 1}, None, None, None))
    stream = bus.subscribe("alice", admin=False)
    assert (await anext(stream)).kind == "queue"
    following = asyncio.ensure_future(anext(stream))
    for _ in range(3):
        await asyncio.sleep(0)
    assert not following.done(), following.result()  # nothing changed: nothing to send
    bus.publish("job", {"id": 1, "status": "PENDING"}, user_id="alice")
    assert (await following).kind == "job"
    await stream.aclose()
