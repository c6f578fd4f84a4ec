"""Sweeps' sets: stored with their job, each one's outcomes merged chunk by chunk in the
transaction that advances the job (qhpc_lab.scheduler.sweeps)."""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa

from qhpc_lab.scheduler.store.repositories.base import Repository
from qhpc_lab.scheduler.store.rows import JobRow, SweepSetRow
from qhpc_lab.scheduler.store.schema import jobs, sweep_sets


def add_sets(conn: sa.Connection, job_id: int, sets: list[tuple[int, str]]) -> None:
    """Store a new sweep's sets (shots, variables as JSON text), in order."""
    conn.execute(
        sweep_sets.insert(),
        [
            {"job_id": job_id, "idx": i, "shots": n, "variables": v, "shots_done": 0}
            for i, (n, v) in enumerate(sets)
        ],
    )


def merge_set(
    conn: sa.Connection, job: JobRow, shots: int, counts: dict[str, int]
) -> dict[str, Any]:
    """Merge a chunk of ``shots`` (its ``counts``) into the set ``job`` is at (its
    ``sets_done``-th); the job's values to write with it (``sets_done`` once the set is
    complete). A chunk never spans two sets: the dispatcher cuts it at the set's end."""
    index = job.sets_done or 0
    row = conn.execute(
        sa.select(sweep_sets.c.shots, sweep_sets.c.shots_done, sweep_sets.c.counts).where(
            sweep_sets.c.job_id == job.id, sweep_sets.c.idx == index
        )
    ).one()
    done = row.shots_done + shots
    if done > row.shots:
        raise ValueError(
            f"job {job.id}: a chunk of {shots} shots passes the end of set {index} "
            f"({row.shots_done} of {row.shots} done)"
        )
    merged = json.loads(row.counts) if row.counts else {}
    for bits, n in counts.items():
        merged[bits] = merged.get(bits, 0) + n
    conn.execute(
        sweep_sets.update()
        .where(sweep_sets.c.job_id == job.id, sweep_sets.c.idx == index)
        .values(shots_done=done, counts=json.dumps(merged))
    )
    return {"sets_done": index + 1} if done == row.shots else {}


def restart_sets(conn: sa.Connection, job_id: int) -> None:
    """Discard every set's outcomes: the sweep runs again from its first set."""
    conn.execute(
        sweep_sets.update().where(sweep_sets.c.job_id == job_id).values(shots_done=0, counts=None)
    )
    conn.execute(jobs.update().where(jobs.c.id == job_id).values(sets_done=0))


class SweepRepository(Repository):
    def sweep_sets(
        self, job_id: int, after_index: int = -1, limit: int | None = None
    ) -> list[SweepSetRow]:
        """A sweep's sets in order (empty for a plain job): those after ``after_index``, at
        most ``limit`` of them (a page of ``GET /jobs/{id}/sets``)."""
        query = (
            sa.select(sweep_sets)
            .where(sweep_sets.c.job_id == job_id, sweep_sets.c.idx > after_index)
            .order_by(sweep_sets.c.idx)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return [SweepSetRow.from_row(r) for r in conn.execute(query)]
