"""Rows in the scheduler's store, made as the scheduler makes them."""

from __future__ import annotations

from qhpc_lab.scheduler.store import JobRow, Store
from tests.support.identities import USER


def add_job(store: Store, user: str = USER, shots: int = 250, **values: object) -> JobRow:
    """A job as the scheduler would add it (validated program, default class)."""
    fields: dict[str, object] = dict(
        session_id=None,
        user_id=user,
        slurm_job_id=None,
        job_class="production",
        name=None,
        format="pulser",
        body="{}",
        variables={},
        shots=shots,
        num_qubits=2,
        max_calibration_age_s=None,
    )
    fields.update(values)
    return store.add_job(**fields)
