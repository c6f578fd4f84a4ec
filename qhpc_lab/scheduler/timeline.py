"""Job timelines: what happened to a job and around it while it waited ("why did my job wait").

The dispatcher reports chunks, calibrations and holds (maintenance, draining, the device DOWN)
here, into one log of what the QPU did; a job's timeline is read from it on request: its own
chunks and, while it waited, the class of each job that ran instead (never whose job), and the
calibrations and holds it sat through. Consecutive chunks of one class that a job waited behind
merge into one entry. Recording costs the same however long the queue is (nothing is written per
waiting job). The log lives in memory and keeps the most recent ``max_events``: after a restart
a job's timeline starts again; its queued and final entries always come from the store.
"""

from __future__ import annotations

import bisect
import collections
import time
from collections.abc import Callable
from typing import Any

from qhpc_lab.scheduler.store import JobRow
from qhpc_lab.vocabulary import HOLDS
from qhpc_lab.wire.times import iso_time


class Timelines:
    def __init__(self, max_events: int = 200_000, clock: Callable[[], float] = time.time) -> None:
        self._max_events = max_events
        self._clock = clock
        """Where a hold still on ends when a job's timeline is read: the scheduler's clock."""
        self._starts: list[float] = []
        """Start times of ``_chunks``: chunks run one after the other, so they come in order."""
        self._chunks: list[dict[str, Any]] = []
        self._spans: collections.deque[dict[str, Any]] = collections.deque(maxlen=10_000)
        """Calibrations and holds: rare, and a hold is logged at its end with an early start."""
        self._holds: dict[str, float] = {}

    def chunk(
        self,
        job_id: int,
        job_class: str,
        started_at: float,
        finished_at: float,
        shots: int,
        calibration_age_s: float,
    ) -> None:
        """A chunk of ``job_id`` (of ``job_class``) ran from ``started_at`` to ``finished_at``."""
        self._starts.append(started_at)
        self._chunks.append(
            {
                "event": "chunk",
                "at": started_at,
                "until": finished_at,
                "job_id": job_id,
                "job_class": job_class,
                "shots": shots,
                "calibration_age_s": round(calibration_age_s, 3),
            }
        )
        if len(self._chunks) > self._max_events:
            drop = self._max_events // 10
            del self._starts[:drop], self._chunks[:drop]

    def calibration(self, started_at: float, finished_at: float) -> None:
        self._spans.append({"event": "calibration", "at": started_at, "until": finished_at})

    def hold(self, kind: str, on: bool, at: float) -> None:
        """A hold (one of HOLDS) began or ended."""
        if kind not in HOLDS:
            raise ValueError(f"unknown hold {kind!r}; use one of {HOLDS}")
        if on:
            self._holds.setdefault(kind, at)
            return
        since = self._holds.pop(kind, None)
        if since is not None:
            self._spans.append({"event": kind, "at": since, "until": at})

    def view(self, job: JobRow, now: float | None = None) -> list[dict[str, Any]]:
        """A job's timeline: queued, what happened while it was active in time order, then its
        final state. A hold still on is shown up to ``now``.

        Times are Unix seconds (``at``, and ``until`` for spans), like ``GET /device``'s.
        """
        end = job.finished_at if job.finished_at is not None else now or self._clock()
        entries: list[dict[str, Any]] = [
            {"event": "queued", "at": job.created_at, "job_class": job.job_class}
        ]
        # the chunk running when the job arrived started before it: one step back
        first = max(0, bisect.bisect_left(self._starts, job.created_at) - 1)
        last = bisect.bisect_left(self._starts, end)
        spans = self._chunks[first:last] + [e for e in self._spans if e["at"] < end]
        spans += [
            {"event": kind, "at": since, "until": end, "ongoing": True}
            for kind, since in self._holds.items()
            if since < end
        ]
        for event in sorted(spans, key=lambda e: e["at"]):
            if event["until"] <= job.created_at:
                continue
            if event["event"] != "chunk":
                entries.append(dict(event))
            elif event["job_id"] == job.id:
                own = {k: v for k, v in event.items() if k not in ("job_id", "job_class")}
                entries.append(own)
            else:
                last = entries[-1]
                if last["event"] == "waited_behind" and last["by_class"] == event["job_class"]:
                    last["until"] = event["until"]
                    last["chunks"] += 1
                    last["shots"] += event["shots"]
                    continue
                entries.append(
                    {
                        "event": "waited_behind",
                        "at": event["at"],
                        "until": event["until"],
                        "by_class": event["job_class"],
                        "chunks": 1,
                        "shots": event["shots"],
                    }
                )
        if job.finished_at is not None:
            entries.append(
                {
                    "event": "finished",
                    "at": job.finished_at,
                    "status": job.status,
                    "error": job.error,
                }
            )
        return entries


def story(job: JobRow, entries: list[dict[str, Any]]) -> str:
    """The timeline as the text ``GET /jobs/{id}/logs`` serves (what QRMI shows its users):
    a summary line, then one line per entry, times in UTC; the job's own consecutive chunks
    are one line, so a long job's story stays as long as its interruptions."""
    lines = [
        f"job {job.id} ({job.format}, {job.shots} shots, class {job.job_class}): "
        f"{job.status}, {job.shots_done}/{job.shots} shots done"
    ]
    runs: list[dict[str, Any]] = []
    for entry in entries:
        if entry["event"] == "chunk" and runs and runs[-1]["event"] == "chunk":
            run = runs[-1]
            run["until"], run["shots"], run["chunks"] = (
                entry["until"],
                run["shots"] + entry["shots"],
                run["chunks"] + 1,
            )
            run["calibration_age_s"] = (run["calibration_age_s"][0], entry["calibration_age_s"])
        elif entry["event"] == "chunk":
            age = entry["calibration_age_s"]
            runs.append({**entry, "chunks": 1, "calibration_age_s": (age, age)})
        else:
            runs.append(entry)
    lines += [
        f"{iso_time(entry['at'], sep=' ', timespec='milliseconds')}  {_told(entry)}"
        for entry in runs
    ]
    return "\n".join(lines)


def _told(entry: dict[str, Any]) -> str:
    kind = entry["event"]
    lasted = f"{entry['until'] - entry['at']:.2f} s" if "until" in entry else ""
    if kind == "queued":
        return f"queued as {entry['job_class']}"
    if kind == "chunk":
        chunks = "1 chunk" if entry["chunks"] == 1 else f"{entry['chunks']} chunks"
        first, last = entry["calibration_age_s"]
        ages = f"{first:.1f} s" if first == last else f"{first:.1f}–{last:.1f} s"
        return f"ran {entry['shots']} shots in {chunks} over {lasted} (calibration age {ages})"
    if kind == "waited_behind":
        chunks = "chunk" if entry["chunks"] == 1 else "chunks"
        return (
            f"waited {lasted} while {entry['chunks']} {entry['by_class']} {chunks} "
            f"({entry['shots']} shots) ran"
        )
    if kind == "calibration":
        return f"waited {lasted} for a calibration"
    if kind in HOLDS:
        return f"held {lasted} by {kind}" + (", still on" if entry.get("ongoing") else "")
    if kind == "finished":
        return f"finished {entry['status']}" + (f": {entry['error']}" if entry["error"] else "")
    return kind
