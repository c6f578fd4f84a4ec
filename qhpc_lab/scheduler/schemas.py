"""Request and response documents of the scheduler API (also the published OpenAPI schema)."""

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

# A uid or a Slurm job id: the store keeps 64 characters (PostgreSQL refuses more).
Identifier = (
    Annotated[str, StringConstraints(max_length=64)] | Annotated[int, Field(ge=0, lt=2**63)]
)


class SessionIn(BaseModel):
    user_id: Identifier
    slurm_job_id: Identifier | None = None
    scheduler_job_id: Identifier | None = Field(None, description="Alias of slurm_job_id.")
    qpu_slots: int = Field(1, ge=1, description="QPU share of the Slurm job (qpu:N).")


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
    sequence: str = Field(description="Program body: Pulser abstract repr (default) or QASM 3.")
    shots: int
    format: str = "pulser"
    job_class: str | None = None
    name: str | None = Field(None, max_length=256)
    variables: dict[str, Any] | None = None
    max_calibration_age_s: float | None = Field(None, gt=0)


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
    class_priority: dict[str, int] | None = None
    aging_per_chunk: float | None = Field(None, ge=0)
    usage_half_life_s: float | None = Field(None, gt=0)
    min_calibration_age_s: float | None = Field(None, ge=0)
    default_job_class: str | None = None


class AccessibleIn(BaseModel):
    is_accessible: bool
    message: str | None = None


class AccessibleOut(BaseModel):
    is_accessible: bool
    message: str


class SpecsOut(BaseModel):
    specs: str = Field(description="The Pulser device, as JSON text.")


class LogsOut(BaseModel):
    logs: str
