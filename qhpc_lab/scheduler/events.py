"""Fan-out of job and device changes to server-sent-event subscribers, without polling."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Event:
    kind: str
    data: dict[str, Any]
    user_id: str | None
    """Owner of a job event; None for events everybody may see (device, queue)."""

    def sse(self) -> str:
        return f"event: {self.kind}\ndata: {json.dumps(self.data)}\n\n"


class EventBus:
    def __init__(self, backlog: int = 1000) -> None:
        self._subscribers: set[asyncio.Queue[Event | None]] = set()
        self._backlog = backlog

    def publish(self, kind: str, data: dict[str, Any], user_id: str | None = None) -> None:
        event = Event(kind, data, user_id)
        for queue in list(self._subscribers):
            try:
                queue.put_nowait(event)
            except asyncio.QueueFull:
                # A subscriber that stopped reading is ended (it may reconnect) rather than
                # slowing the daemon or silently missing events.
                self._subscribers.discard(queue)
                while not queue.empty():
                    queue.get_nowait()
                queue.put_nowait(None)

    async def subscribe(
        self, user_id: str | None, admin: bool, heartbeat_s: float = 15.0
    ) -> AsyncIterator[str]:
        """SSE text for one subscriber: their own job events and all public ones."""
        queue: asyncio.Queue[Event | None] = asyncio.Queue(self._backlog)
        self._subscribers.add(queue)
        try:
            yield ": connected\n\n"
            while True:
                try:
                    event = await asyncio.wait_for(queue.get(), heartbeat_s)
                except TimeoutError:
                    yield ": heartbeat\n\n"
                    continue
                if event is None:
                    return
                if admin or event.user_id is None or event.user_id == user_id:
                    yield event.sse()
        finally:
            self._subscribers.discard(queue)

    def close(self) -> None:
        for queue in list(self._subscribers):
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(None)
        self._subscribers.clear()
