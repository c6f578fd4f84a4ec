"""Job timelines: what happened to a job and around it while it waited ("why did my job wait").

The dispatcher reports chunks, calibrations and holds (maintenance, draining) here; each job's
timeline records its own chunks and, while it waited, the class of each job that ran instead
(never whose job), and the calibrations and holds it sat through. Consecutive chunks of one
class that a job waited behind merge into one entry. Timelines live in memory for the most recent
``max_jobs`` jobs: after a restart a job's timeline starts again, its queued and final
entries always come from the store.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Collection
from typing import Any

from qhpc_lab.scheduler.store import JobRow

HOLDS = ("maintenance", "draining")


class Timelines:
    def __init__(self, max_jobs: int = 10_000, max_entries: int = 1_000) -> None:
        self._jobs: OrderedDict[int, list[dict[str, Any]]] = OrderedDict()
        self._max_jobs = max_jobs
        self._max_entries = max_entries
        self._holds: dict[str, float] = {}

    def chunk(
        self,
        job_id: int,
        job_class: str,
        started_at: float,
        finished_at: float,
        shots: int,
        calibration_age_s: float,
        active: Collection[int],
    ) -> None:
        """A chunk of ``job_id`` ran; every other job in ``active`` waited behind ``job_class``."""
        self._add(
            job_id,
            {
                "event": "chunk",
                "at": started_at,
                "until": finished_at,
                "shots": shots,
                "calibration_age_s": round(calibration_age_s, 3),
            },
        )
        for waiting in active:
            if waiting == job_id:
                continue
            entries = self._jobs.get(waiting)
            last = entries[-1] if entries else None
            if last and last["event"] == "waited_behind" and last["by_class"] == job_class:
                last["until"] = finished_at
                last["chunks"] += 1
                last["shots"] += shots
                continue
            self._add(
                waiting,
                {
                    "event": "waited_behind",
                    "at": started_at,
                    "until": finished_at,
                    "by_class": job_class,
                    "chunks": 1,
                    "shots": shots,
                },
            )

    def calibration(self, started_at: float, finished_at: float, active: Collection[int]) -> None:
        """A calibration ran while every job in ``active`` waited."""
        for waiting in active:
            self._add(waiting, {"event": "calibration", "at": started_at, "until": finished_at})

    def hold(self, kind: str, on: bool, at: float, active: Collection[int]) -> None:
        """A hold (one of HOLDS) began or ended; at its end the jobs in ``active`` waited it out."""
        if kind not in HOLDS:
            raise ValueError(f"unknown hold {kind!r}; use one of {HOLDS}")
        if on:
            self._holds.setdefault(kind, at)
            return
        since = self._holds.pop(kind, None)
        if since is None:
            return
        for waiting in active:
            self._add(waiting, {"event": kind, "at": since, "until": at})

    def view(self, job: JobRow) -> list[dict[str, Any]]:
        """A job's timeline: queued, then what was recorded in the order it ended (a span, such
        as a drain that began before the job was queued, is recorded at its end), then its
        final state.

        Times are Unix seconds (``at``, and ``until`` for spans), like ``GET /device``'s.
        """
        entries = [{"event": "queued", "at": job.created_at, "job_class": job.job_class}]
        entries += [dict(e) for e in self._jobs.get(job.id, ())]
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

    def _add(self, job_id: int, entry: dict[str, Any]) -> None:
        entries = self._jobs.get(job_id)
        if entries is None:
            entries = self._jobs[job_id] = []
            while len(self._jobs) > self._max_jobs:
                self._jobs.popitem(last=False)
        if len(entries) < self._max_entries:
            entries.append(entry)
        elif entries[-1]["event"] != "truncated":
            entries.append({"event": "truncated", "at": entry["at"]})
