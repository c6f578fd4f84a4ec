"""Request and response documents of the scheduler API (also the published OpenAPI schema).

Every text the API accepts, in a body, a query or a path, is :data:`Text`: valid Unicode
without NUL, the two things a database column refuses (SQLite cannot encode a lone surrogate,
PostgreSQL stores no NUL), so a bad character is a 422 naming the field, never a 500. Numbers
are bounded to what the store's columns hold (32-bit integers).
"""

from typing import Annotated, Any

from fastapi import Path, Query
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    FiniteFloat,
    StrictInt,
    StringConstraints,
)

MAX_SHOTS = 1_000_000
"""Shots one job may ask for; the device's own ``max_runs`` (rule ``max_runs``) is lower."""
MAX_QPU_SLOTS = 1024
"""QPU share one session may hold (the Slurm ``qpu:N`` count)."""
MAX_PRIORITY = 1_000_000
"""Bound on a class priority and on aging, so policy arithmetic stays in ordinary numbers."""
MAX_SECONDS = 10 * 365 * 24 * 3600
"""Bound on a duration (ten years): the policy turns durations into shot counts."""


def _storable(value: str) -> str:
    """Refuse what no database column holds: NUL characters and lone surrogates."""
    if "\x00" in value:
        raise ValueError("NUL characters are not allowed")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("invalid Unicode (a lone surrogate) is not allowed") from None
    return value


Text = Annotated[str, AfterValidator(_storable)]
"""Any text the API accepts: valid Unicode without NUL (body fields, queries, paths)."""

# A uid or a Slurm job id: the store keeps 64 characters (PostgreSQL refuses more).
Identifier = (
    Annotated[Text, StringConstraints(min_length=1, max_length=64)]
    | Annotated[StrictInt, Field(ge=0, lt=2**63)]
)

SessionId = Annotated[Text, Path(max_length=64, description="A session id (a UUID).")]
StatusFilter = Annotated[Text | None, Query(max_length=16, description="Only jobs in this status.")]
RevokeReason = Annotated[Text, Query(max_length=200)]
TimeBound = Annotated[FiniteFloat | None, Query(description="A Unix time.")]


class SessionIn(BaseModel):
    user_id: Identifier
    slurm_job_id: Identifier | None = None
    scheduler_job_id: Identifier | None = Field(None, description="Alias of slurm_job_id.")
    qpu_slots: StrictInt = Field(
        1, ge=1, le=MAX_QPU_SLOTS, description="QPU share of the Slurm job (qpu:N)."
    )


class SessionOut(BaseModel):
    id: str
    user_id: str
    slurm_job_id: str | None
    scheduler_job_id: str | None
    qpu_slots: int
    created_at: str
    revoked_at: str | None
    revoke_reason: str | None


class JobIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sequence: Text = Field(description="Program body: Pulser abstract repr (default) or QASM 3.")
    shots: StrictInt = Field(
        le=MAX_SHOTS,
        # Program refuses fewer than 1 (rule shots); the schema shows that floor too.
        json_schema_extra={"minimum": 1},
        description="An integer; the device may allow fewer (rule max_runs).",
    )
    format: Annotated[Text, StringConstraints(max_length=32)] = "pulser"
    job_class: Annotated[Text, StringConstraints(max_length=32)] | None = None
    name: Annotated[Text, StringConstraints(max_length=256)] | None = None
    variables: dict[Text, Any] | None = None
    max_calibration_age_s: FiniteFloat | None = Field(None, gt=0, le=MAX_SECONDS)


class JobOut(BaseModel):
    id: int
    user_id: str
    created_at: str
    status: str
    results: str | None = Field(description='JSON text: {"counter": {bitstring: count}}.')
    session_id: str | None
    slurm_job_id: str | None
    name: str | None
    format: str
    job_class: str
    shots: int
    shots_done: int
    position: int | None = Field(description="1 = next to run, 0 = running, null when final.")
    eta_s: float | None
    started_at: str | None
    finished_at: str | None
    qpu_seconds: float
    calibration_age_s: float | None
    error: str | None


class PolicyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    class_priority: (
        dict[
            Annotated[Text, StringConstraints(max_length=32)],
            Annotated[StrictInt, Field(ge=-MAX_PRIORITY, le=MAX_PRIORITY)],
        ]
        | None
    ) = None
    aging_per_chunk: FiniteFloat | None = Field(None, ge=0, le=MAX_PRIORITY)
    usage_half_life_s: FiniteFloat | None = Field(None, gt=0, le=MAX_SECONDS)
    min_calibration_age_s: FiniteFloat | None = Field(None, ge=0, le=MAX_SECONDS)
    default_job_class: Annotated[Text, StringConstraints(max_length=32)] | None = None


class AccessibleIn(BaseModel):
    is_accessible: bool
    message: Annotated[Text, StringConstraints(max_length=1000)] | None = None


class AccessibleOut(BaseModel):
    is_accessible: bool
    message: str


class SpecsOut(BaseModel):
    specs: str = Field(description="The Pulser device, as JSON text.")


class LogsOut(BaseModel):
    logs: str
