"""What the store hands out and takes: rows as dataclasses, and the errors that carry them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from qhpc_lab.scheduler.limits import QueueLimit
from qhpc_lab.vocabulary import JobStatus


@dataclass
class JobRow:
    """A job as stored; the API and the dispatcher both read this."""

    id: int
    session_id: str | None
    user_id: str
    slurm_job_id: str | None
    status: str
    job_class: str
    name: str | None
    format: str
    body: str
    variables: dict[str, Any]
    shots: int
    shots_done: int
    max_calibration_age_s: float | None
    counts: dict[str, int]
    """The shots' outcomes so far, merged chunk by chunk: the job's one copy of its result."""
    error: str | None
    qpu_seconds: float
    emulator_seconds: float
    idempotency_key: str | None
    calibration_age_s: float | None
    calibrations: list[dict[str, Any]]
    """The calibrations its shots ran under, one per range of shots (:func:`merge_calibration`)."""
    single_calibration: bool
    """All its shots must come from one calibration (docs/policy.md)."""
    loop: str | None
    """The hybrid loop it belongs to (docs/policy.md rule 9)."""
    think_time_s: float | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    slurm_account: str | None = None
    """The Slurm account it is charged to: its session's, else its user's latest session's."""
    sets: int | None = None
    """A sweep's number of sets (its shots are theirs in all); None for a plain job."""
    sets_done: int | None = None
    """A sweep's sets run to their end (they run in order)."""

    @property
    def results(self) -> str | None:
        """Warden's ``results`` (JSON text ``{"counter": ...}``), once the job is DONE."""
        return json.dumps({"counter": self.counts}) if self.status == JobStatus.DONE else None

    @classmethod
    def from_row(cls, row: Any) -> JobRow:
        data = dict(row._mapping)
        data["variables"] = json.loads(data["variables"]) if data["variables"] else {}
        data["counts"] = json.loads(data["counts"]) if data["counts"] else {}
        data["calibrations"] = json.loads(data["calibrations"]) if data["calibrations"] else []
        data["single_calibration"] = bool(data["single_calibration"])
        return cls(**data)


@dataclass(frozen=True)
class SweepSetRow:
    """One set of a sweep: its shots and variables, and its outcomes so far."""

    index: int
    shots: int
    variables: dict[str, Any]
    shots_done: int
    counts: dict[str, int]

    @classmethod
    def from_row(cls, row: Any) -> SweepSetRow:
        return cls(
            row.idx,
            row.shots,
            json.loads(row.variables),
            row.shots_done,
            json.loads(row.counts) if row.counts else {},
        )


@dataclass(frozen=True)
class JobChange:
    """A job as one write left it: what the HA event journal records."""

    id: int
    status: str
    shots_done: int


@dataclass
class SessionRow:
    id: str
    user_id: str
    slurm_job_id: str | None
    qpu_slots: int
    created_at: float
    revoked_at: float | None
    revoke_reason: str | None
    idle_expires_at: float | None = None
    """Warden's idle deadline: revoked after it unless a job of the session is still active."""
    expires_at: float | None = None
    """Warden's maximum-lifetime deadline: revoked after it, its queued jobs canceled."""
    slurm_account: str | None = None
    """The Slurm job's account, when the prolog says it: who a reservation can be for and
    what account quotas budget."""

    @property
    def active(self) -> bool:
        return self.revoked_at is None


@dataclass(frozen=True)
class ReservationRow:
    id: int
    owner_kind: str
    owner: str
    starts_at: float
    ends_at: float
    created_at: float
    created_by: str | None


@dataclass(frozen=True)
class QuotaAdmission:
    """What :meth:`Store.add_job` needs to check a job against its quotas and queue caps."""

    account: str | None
    """The Slurm account the job is charged to (its session's), or None."""
    time_per_shot_s: float
    """The device's, for :func:`~qhpc_lab.scheduler.quotas.cost` in QPU-seconds."""
    limits: tuple[QueueLimit, ...] = ()
    """The caps on what its user and session may hold queued, counted in the transaction."""


@dataclass(frozen=True)
class NewJob:
    """One submission of a group (:meth:`Store.add_jobs`): what :meth:`Store.add_job` takes."""

    admission: QuotaAdmission | None
    values: dict[str, Any]
    """The job's columns, as ``add_job``'s keyword arguments."""
    sweep: list[tuple[int, str]] | None = None


class ReservationOverlap(Exception):
    """A reservation whose window overlaps ``existing`` (the QPU is reserved whole)."""

    def __init__(self, existing: ReservationRow) -> None:
        super().__init__(f"overlaps reservation {existing.id}")
        self.existing = existing


class DuplicateJob(Exception):
    """A submission whose idempotency key the user already used: ``job`` is the first one."""

    def __init__(self, job: JobRow) -> None:
        super().__init__(f"job {job.id} has this idempotency key")
        self.job = job
