"""Fan-out of job, device and queue changes to event-stream subscribers, without polling.

Every event carries an increasing id, unique across restarts: a daemon numbers its events from
the time it started (:func:`first_event_id`), past every id an earlier run gave. Job and
device events are kept in a bounded backlog, so a client that reconnects with
``Last-Event-ID`` gets what it missed; one whose id is not in the backlog (it fell behind it,
or the id is an earlier run's) gets a ``reset`` (re-read what you show). Queue events are
personal (each user sees their own jobs' positions and anonymous aggregates) and are not kept:
a subscriber always gets the current queue on connect and whenever it changes (coalesced by
the scheduler). The wire
form and the event kinds are in :mod:`qhpc_lab.eventstream` and docs/scheduler.md.

HA replicas (:mod:`qhpc_lab.scheduler.journal`) number job events by the shared journal
instead, and replay what a reconnecting client missed from it (``replay``): an id means the
same on every replica. Their device events carry no id (they are this replica's view, and
a reconnection sends the device anyway).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import itertools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from qhpc_lab.eventstream import StreamEvent

log = logging.getLogger("qhpc.scheduler")

EVENTS_PER_MS = 1000
"""Event ids a daemon may use per millisecond it has run before its successor's ids could
meet its own: a million events a second, sustained since its start."""

QUEUE_JOBS_LIMIT = 200
"""A user's active jobs listed in one queue event, nearest first; the rest are counted."""


def first_event_id(now: float | None = None) -> int:
    """The first event id of a daemon starting at ``now`` (the wall clock, whatever the
    scheduler's clock says): later than every id of an earlier run, and an exact integer in
    JavaScript (under 2**53) until the year 2255."""
    started = time.time() if now is None else now
    return int(started * 1000) * EVENTS_PER_MS


class Replayed(NamedTuple):
    """An event a replay (HA) sends a reconnecting subscriber: its journal id, kind, data and
    owner (None: everybody may see it)."""

    id: int
    kind: str
    data: dict[str, Any]
    user_id: str | None


Replay = Callable[[int], Awaitable[list[Replayed]]]
"""What a subscriber that saw event N missed (HA: read from the shared journal)."""


@dataclass(frozen=True)
class _Published:
    id: int | None
    kind: str
    data: dict[str, Any]
    user_id: str | None
    """Owner of a job event; None for events everybody may see (device)."""

    def visible_to(self, user_id: str | None, admin: bool) -> bool:
        return admin or self.user_id is None or self.user_id == user_id

    def stream_event(self) -> StreamEvent:
        return StreamEvent(self.kind, self.data, None if self.id is None else str(self.id))


@dataclass(frozen=True)
class QueueSnapshot:
    """The queue at one instant: aggregates for everyone, positions per owner."""

    depth: dict[str, int]
    """Waiting jobs (status PENDING: started ones not counted) per class."""
    running_job: int | None
    running_class: str | None
    running_user: str | None
    positions: dict[str, dict[int, tuple[int, float | None]]] = field(default_factory=dict)
    """user id → job id → (position, seconds to its end); position 0 is a started job (status
    RUNNING)."""
    held: dict[int, str] = field(default_factory=dict)
    """Active jobs a hold keeps from running (``down``, ``maintenance``, ``draining``), by id."""
    revision: int = 0

    def for_user(self, user_id: str | None) -> dict[str, Any]:
        """The ``queue`` event one user receives: nothing of another user's jobs but counts."""
        own = self.positions.get(user_id or "", {})
        nearest = sorted(own.items(), key=lambda item: item[1][0])[:QUEUE_JOBS_LIMIT]
        running = None
        if self.running_job is not None:
            mine = self.running_user == user_id
            eta = own.get(self.running_job, (0, None))[1] if mine else None
            running = {
                "job_class": self.running_class,
                "mine": mine,
                "job_id": self.running_job if mine else None,
                "eta_s": eta,
            }
        return {
            "revision": self.revision,
            "waiting": sum(self.depth.values()),
            "depth": dict(self.depth),
            "running": running,
            "jobs": {
                str(job_id): {"position": p, "eta_s": eta, "held_by": self.held.get(job_id)}
                for job_id, (p, eta) in nearest
            },
            "jobs_omitted": max(0, len(own) - QUEUE_JOBS_LIMIT),
        }


class _Subscriber:
    """One stream's pending events and the one wake-up its writer waits on.

    A publish appends and sets ``ready``, whose waiter resumes in the event loop's next turn:
    the event is on the socket before work scheduled after the publish (the QPU driver's
    chunk) runs. Waiting on a queue's ``get`` and a change flag at once instead cost two tasks
    per event and two more turns of the loop before the write."""

    def __init__(self, user_id: str | None, admin: bool, backlog: int) -> None:
        self.user_id = user_id
        self.admin = admin
        self.backlog = backlog
        self.events: collections.deque[_Published | None] = collections.deque()
        """Job and device events not yet sent; None ends the stream (:meth:`EventBus._drop`)."""
        self.queue_changed = False
        self.ready = asyncio.Event()

    def put(self, event: _Published | None) -> None:
        self.events.append(event)
        self.ready.set()

    def mark_queue_changed(self) -> None:
        self.queue_changed = True
        self.ready.set()


class EventBus:
    def __init__(
        self,
        queue_now: Callable[[], QueueSnapshot] | None = None,
        backlog: int = 1000,
        replay: Replay | None = None,
    ) -> None:
        self._queue_now = queue_now
        self._replay = replay
        """Builds the queue as it is now, for a subscriber that connects while none is kept."""
        self._subscribers: set[_Subscriber] = set()
        self._backlog = backlog
        self._recent: collections.deque[_Published] = collections.deque(maxlen=backlog)
        first = 1 if replay is not None else first_event_id()  # replicas: the journal numbers
        self._ids = itertools.count(first)
        self._last_id = first - 1
        self._revisions = itertools.count(1)
        """The queue's revisions where event ids come from the journal (replicas)."""
        self._queue: QueueSnapshot | None = None

    @property
    def listening(self) -> bool:
        return bool(self._subscribers)

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def publish(
        self,
        kind: str,
        data: dict[str, Any],
        user_id: str | None = None,
        event_id: int | None = None,
    ) -> None:
        """Send an event to every subscriber; ``event_id``: its journal id (replicas, where
        an event without one is sent unnumbered and not kept)."""
        if self._replay is None:
            event = _Published(self._next_id(), kind, data, user_id)
            self._recent.append(event)
        else:
            event = _Published(event_id, kind, data, user_id)
            self._last_id = max(self._last_id, event_id or 0)
        for subscriber in list(self._subscribers):
            if len(subscriber.events) < subscriber.backlog:
                subscriber.put(event)
            else:
                # A subscriber that stopped reading is ended (it may reconnect and resume)
                # rather than slowing the daemon or silently missing events.
                self._drop(subscriber)

    def publish_queue(self, snapshot: QueueSnapshot) -> None:
        """The latest queue replaces the previous one; each subscriber is told it changed."""
        revision = self._next_id() if self._replay is None else next(self._revisions)
        self._queue = dataclasses.replace(snapshot, revision=revision)
        for subscriber in self._subscribers:
            subscriber.mark_queue_changed()

    def forget_queue(self) -> None:
        """The queue changed while nobody listened: the next subscriber gets a fresh one."""
        self._queue = None

    def _next_id(self) -> int:
        self._last_id = next(self._ids)
        return self._last_id

    def _drop(self, subscriber: _Subscriber) -> None:
        self._subscribers.discard(subscriber)
        subscriber.events.clear()
        subscriber.put(None)

    async def _replayed(
        self, last_event_id: str | None, subscriber: _Subscriber
    ) -> list[StreamEvent]:
        """What a reconnecting subscriber missed, from the journal (replicas)."""
        if self._replay is None or last_event_id is None or not last_event_id.strip().isdigit():
            return []
        return [
            StreamEvent(e.kind, e.data, str(e.id))
            for e in await self._replay(int(last_event_id))
            if _Published(e.id, e.kind, e.data, e.user_id).visible_to(
                subscriber.user_id, subscriber.admin
            )
        ]

    def _missed(self, last_event_id: str | None, subscriber: _Subscriber) -> list[StreamEvent]:
        """What a reconnecting subscriber missed, or a ``reset`` when its last id is not in the
        backlog: older than what is kept (it fell behind, or the id is an earlier run's),
        or newer than anything sent (an id this daemon never gave)."""
        if self._replay is not None or last_event_id is None:
            return []
        if not last_event_id.strip().isdigit():
            return [StreamEvent("reset", {}, str(self._last_id))]
        last = int(last_event_id)
        if last == self._last_id:
            return []
        oldest = self._recent[0].id if self._recent else self._last_id + 1
        if last + 1 < oldest or last > self._last_id:
            return [StreamEvent("reset", {}, str(self._last_id))]
        return [
            e.stream_event()
            for e in self._recent
            if e.id > last and e.visible_to(subscriber.user_id, subscriber.admin)
        ]

    async def subscribe(
        self,
        user_id: str | None,
        admin: bool,
        last_event_id: str | None = None,
        device: dict[str, Any] | None = None,
    ) -> AsyncIterator[StreamEvent]:
        """One subscriber's events: what it missed, the device and queue now, then changes."""
        subscriber = _Subscriber(user_id, admin, self._backlog)
        self._subscribers.add(subscriber)
        try:
            if self._replay is not None:
                try:
                    replayed = await self._replayed(last_event_id, subscriber)
                except Exception as err:  # the journal unreadable (the database away)
                    log.warning("event stream ended: cannot replay from the journal: %s", err)
                    return  # the client reconnects later and resumes from the same id
                for event in replayed:
                    yield event
            for event in self._missed(last_event_id, subscriber):
                yield event
            if device is not None:  # no id: resuming after it must not skip undelivered events
                yield StreamEvent("device", device)
            subscriber.queue_changed = True
            while True:
                if subscriber.events:
                    event = subscriber.events.popleft()
                    if event is None:  # dropped, or the bus closed
                        return
                    if event.visible_to(user_id, admin):
                        yield event.stream_event()
                elif subscriber.queue_changed:  # only once the job events before it are sent
                    subscriber.queue_changed = False
                    if self._queue is None and self._queue_now is not None:
                        self.publish_queue(self._queue_now())
                        subscriber.queue_changed = False  # the snapshot sent just below
                    if self._queue is not None:
                        yield StreamEvent(
                            "queue", self._queue.for_user(user_id), str(self._last_id)
                        )
                else:
                    subscriber.ready.clear()
                    await subscriber.ready.wait()
        finally:
            self._subscribers.discard(subscriber)

    def close(self) -> None:
        for subscriber in list(self._subscribers):
            self._drop(subscriber)
        self._subscribers.clear()
