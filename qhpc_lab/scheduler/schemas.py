"""Request and response documents of the scheduler API (also the published OpenAPI schema).

The documents other parts read too (a job, the device, a quota, a session...) are defined in
:mod:`qhpc_lab.wire` and re-exported here under the same names; this module adds the requests
and the documents only the daemon's own routes serve.

Every text the API accepts, in a body, a query or a path, is :data:`Text`: valid Unicode
without NUL, the two things a database column refuses (SQLite cannot encode a lone surrogate,
PostgreSQL stores no NUL), so a bad character is a 422 naming the field, never a 500. Numbers
are bounded to what the store's columns hold (32-bit integers).
"""

import dataclasses
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import Path, Query
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    FiniteFloat,
    StrictBool,
    StrictFloat,
    StrictInt,
    StringConstraints,
    WithJsonSchema,
    create_model,
)

from qhpc_lab.scheduler.policy import MAX_SECONDS, PolicyConfig
from qhpc_lab.scheduler.quotas import MAX_BUDGET, PERIOD_PATTERN

# The documents other parts read too, re-exported under their published names.
from qhpc_lab.wire.documents import AccessibleOut as AccessibleOut
from qhpc_lab.wire.documents import CalibrationRangeOut as CalibrationRangeOut
from qhpc_lab.wire.documents import DeviceOut as DeviceOut
from qhpc_lab.wire.documents import DeviceStateOut as DeviceStateOut
from qhpc_lab.wire.documents import DispatcherOut as DispatcherOut
from qhpc_lab.wire.documents import EstimateOut as EstimateOut
from qhpc_lab.wire.documents import Formats as Formats
from qhpc_lab.wire.documents import JobOut as JobOut
from qhpc_lab.wire.documents import LogsOut as LogsOut
from qhpc_lab.wire.documents import LoopHoldOut as LoopHoldOut
from qhpc_lab.wire.documents import OwnerKind as OwnerKind
from qhpc_lab.wire.documents import QuotaKind as QuotaKind
from qhpc_lab.wire.documents import QuotaOut as QuotaOut
from qhpc_lab.wire.documents import QuotasOut as QuotasOut
from qhpc_lab.wire.documents import QuotaUnit as QuotaUnit
from qhpc_lab.wire.documents import ReservationOut as ReservationOut
from qhpc_lab.wire.documents import RunningOut as RunningOut
from qhpc_lab.wire.documents import SessionOut as SessionOut
from qhpc_lab.wire.documents import SpecsOut as SpecsOut
from qhpc_lab.wire.documents import SweepSetsOut as SweepSetsOut
from qhpc_lab.wire.documents import TimelineOut as TimelineOut

MAX_SHOTS = 1_000_000
"""Shots one job may ask for; the device's own ``max_runs`` (rule ``max_runs``) is lower."""
MAX_SWEEP_SETS = 100_000
"""Sets one request may carry; the site's ``max_sweep_sets`` (default 10 000) is lower."""
MAX_QPU_SLOTS = 1024
"""QPU share one session may hold (the Slurm ``qpu:N`` count)."""


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

Name = Annotated[Text, StringConstraints(max_length=32)]
"""A format or job-class name."""
LoopId = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
]
"""A hybrid loop's id, chosen by its client (docs/policy.md rule 9)."""
SessionId = Annotated[Text, Path(max_length=64, description="A session id (a UUID).")]
StatusFilter = Annotated[Text | None, Query(max_length=16, description="Only jobs in this status.")]
RevokeReason = Annotated[Text, Query(max_length=200)]
IdFilter = Annotated[
    Text | None, Query(max_length=64, description="Only sessions of this user or Slurm job.")
]
TimeBound = Annotated[FiniteFloat | None, Query(description="A Unix time.")]
Number = Annotated[StrictFloat, Field(allow_inf_nan=False)]
"""A finite JSON number in a body: an integer or a float, never a boolean or a numeric string
(what the OpenAPI document's ``type: number`` says)."""
EndBound = Annotated[
    datetime | None,
    Query(description="An RFC 3339 date-time (UTC when no offset) or Unix time."),
    WithJsonSchema({"anyOf": [{"type": "string", "format": "date-time"}, {"type": "number"}]}),
]
"""Declared as what it accepts: a date-time or a number (a Unix time)."""
IdList = Annotated[
    tuple[Annotated[Text, StringConstraints(min_length=1, max_length=64)], ...],
    Query(max_length=100, description="Any of these (repeat the parameter)."),
]
"""Repeated query parameters, absent = no filter (default ``()``). Not nullable: a query has
no null, and one value on the wire is a one-item list, so an ``array or null`` schema would
call it invalid."""
JobIdList = Annotated[tuple[Annotated[int, Field(ge=1, lt=2**31)], ...], Query(max_length=100)]
StatusList = Annotated[
    tuple[Annotated[Text, StringConstraints(max_length=16)], ...], Query(max_length=10)
]
PageLimit = Annotated[int, Query(ge=1, le=100, description="Rows per page (Warden's 100 at most).")]
PageOffset = Annotated[int, Query(ge=0, lt=2**31, description="Rows to skip.")]


class SessionIn(BaseModel):
    user_id: Identifier
    slurm_job_id: Identifier | None = None
    scheduler_job_id: Identifier | None = Field(None, description="Alias of slurm_job_id.")
    qpu_slots: StrictInt = Field(
        1, ge=1, le=MAX_QPU_SLOTS, description="QPU share of the Slurm job (qpu:N)."
    )
    slurm_account: Identifier | None = Field(
        None,
        description="The Slurm job's account: reservations can be for it, its account quotas "
        "apply to the session.",
    )


class SweepSetIn(BaseModel):
    """One point of a sweep: its shots (default: the job's ``shots``) and its variables."""

    model_config = ConfigDict(extra="forbid")
    shots: StrictInt | None = Field(None, ge=1, le=MAX_SHOTS)
    variables: dict[Text, Any] = Field(default_factory=dict)


class JobIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sequence: Text | dict[Text, Any] = Field(
        description="Program body: Pulser abstract repr (default) or QASM 3 text, or a CUDA-Q "
        "analog (AHS) program as a JSON object or its text, run as the equivalent Pulser program. "
        "The device runs the formats /qpu/specs names (an analog QPU: pulser only)."
    )
    shots: StrictInt = Field(
        le=MAX_SHOTS,
        # Program refuses fewer than 1 (rule shots); the schema shows that floor too.
        json_schema_extra={"minimum": 1},
        description="An integer; the device may allow fewer (rule max_runs).",
    )
    format: Name = "pulser"
    job_class: Name | None = None
    name: Annotated[Text, StringConstraints(max_length=256)] | None = None
    variables: dict[Text, Any] | None = None
    max_calibration_age_s: Number | None = Field(None, gt=0, le=MAX_SECONDS)
    single_calibration: StrictBool = Field(
        False,
        description="All shots under one calibration: a calibration meanwhile restarts the job; "
        "one that cannot fit in a calibration interval is refused (docs/policy.md).",
    )
    loop: LoopId | None = Field(
        None,
        description="The hybrid loop the job belongs to: between two of its "
        "jobs the QPU may be held for it (docs/policy.md rule 9). Not a Warden session.",
    )
    think_time_s: Number | None = Field(
        None,
        ge=0,
        le=MAX_SECONDS,
        description="The loop's expected pause after this job before its next one; the QPU is "
        "held at most this long (and at most the policy's loop_hold_max_s).",
    )
    sweep: list[SweepSetIn] | None = Field(
        None,
        max_length=MAX_SWEEP_SETS,
        description="A sweep (an extension of Warden's API): the program runs once per set, "
        "with the set's variables over the job's, its shots or the job's. One job, one queue "
        "place, its shots the sets' in all; results per set at GET /jobs/{id}/sets "
        "(docs/scheduler.md, Sweeps).",
    )


def _setting_type(kind: str, domain: dict[str, Any]) -> Any:
    """The API type of a policy setting declared ``kind`` with ``domain`` (policy.py)."""
    bounds = Field(**{k: domain[k] for k in ("ge", "gt", "le") if k in domain})
    extra = {"enum": list(domain["choices"])} if "choices" in domain else None
    types = {
        "float": Annotated[Number, bounds],
        "int": Annotated[StrictInt, bounds],
        "str": Annotated[Name, Field(json_schema_extra=extra)],
        "Mapping[str, int]": dict[Name, Annotated[StrictInt, bounds]],
    }
    if kind not in types:
        raise TypeError(f"no API type for a policy setting of type {kind}")
    return types[kind]


def _policy_document(name: str, partial: bool) -> type[BaseModel]:
    """The policy settings as an API document, field for field from :class:`PolicyConfig`;
    ``partial``: every field optional, as a PUT changes only the keys it gives."""
    fields: dict[str, Any] = {}
    for spec in dataclasses.fields(PolicyConfig):
        kind = _setting_type(str(spec.type), dict(spec.metadata))
        description = spec.metadata["help"]
        fields[spec.name] = (
            (kind | None, Field(None, description=description))
            if partial
            else (kind, Field(description=description))
        )
    return create_model(name, __config__=ConfigDict(extra="forbid"), **fields)


PolicyIn = _policy_document("PolicyIn", partial=True)
PolicyOut = _policy_document("PolicyOut", partial=False)


class AccessibleIn(BaseModel):
    is_accessible: bool
    message: Annotated[Text, StringConstraints(max_length=1000)] | None = None


class QpuSlotsOut(BaseModel):
    qpu_slots_total: int
    qpu_slots_used: int = Field(description="Slots the open sessions hold.")
    qpu_slots_available: int


class CapacityOut(BaseModel):
    available_slots: int
    max_slots: int


class ResourceStatusOut(BaseModel):
    """QRMI's ``ResourceStatus`` (qiskit-community/qrmi's ``status()``), as served for a
    pasqal-local resource; unreported fields are null as in QRMI."""

    status: Literal["online", "offline", "paused"] = Field(
        description="offline: closed by an administrator; paused: draining or calibrating."
    )
    status_reason: str | None = Field(
        description="maintenance, draining, calibration or down (the device says DOWN)."
    )
    healthy: bool = Field(description="Whether the dispatcher makes progress (GET /health).")
    busy: bool = Field(description="A job is running or waiting: a new one will not start now.")
    capacity: CapacityOut | None = Field(description="QPU slots; null when not managed.")
    pending_job_count: int = Field(description="Jobs waiting (not running).")
    queue_position: int | None = Field(
        description="The job_id asked about: 1 = next to run, 0 = running, null when final."
    )


class CurrentJobOut(BaseModel):
    id: int
    session_id: str | None
    user_id: str
    started_at: str | None
    backend_id: str | None = Field(description="Always null: the QPU has no job ids of its own.")


class OpenSessionOut(BaseModel):
    id: str
    user_id: str
    created_at: str
    slurm_job_id: str | None


class StatusOut(BaseModel):
    pending_jobs_count: int
    current_job: CurrentJobOut | None
    open_sessions: list[OpenSessionOut]


class PaginationOut(BaseModel):
    total: int
    start: int
    end: int


class SessionsSummaryOut(BaseModel):
    count: int
    total_duration: int = Field(description="Seconds.")


class JobStatsOut(BaseModel):
    count: int
    execution_time: int = Field(description="Seconds, first shot to end.")
    wait_time: int = Field(description="Seconds, submission to first shot.")
    shots: int


class JobsSummaryOut(JobStatsOut):
    per_status: dict[str, JobStatsOut]


class UserAccountingOut(BaseModel):
    user_id: str
    sessions: SessionsSummaryOut
    jobs: JobsSummaryOut


class UsersAccountingOut(BaseModel):
    data: list[UserAccountingOut]
    pagination: PaginationOut


class SessionAccountingOut(BaseModel):
    id: str
    user_id: str
    created_at: str
    revoked_at: str | None
    slurm_job_id: str | None
    total_duration: int
    jobs_count: int


class SessionsAccountingOut(BaseModel):
    data: list[SessionAccountingOut]
    pagination: PaginationOut


class JobAccountingOut(BaseModel):
    id: int
    user_id: str
    session_id: str | None
    slurm_job_id: str | None
    status: str
    shots: int
    execution_time: int
    wait_time: int
    shots_done: int = Field(description="Shots that ran (a canceled job's finished chunks).")
    qpu_seconds: float = Field(description="Device time: shots × time per shot.")


class JobsAccountingOut(BaseModel):
    data: list[JobAccountingOut]
    pagination: PaginationOut


class ReplicaOut(BaseModel):
    name: str = Field(description="host:pid, as the dispatch lease names its holder.")
    leading: bool = Field(description="Whether this replica dispatches now.")
    epoch: int | None = Field(description="The lease epoch it dispatches under.")
    since: str | None


class HealthOut(BaseModel):
    status: Literal["ok", "stalled"]
    dispatcher: DispatcherOut
    replica: ReplicaOut | None = Field(
        None, description="HA replicas only (docs/operations.md): this replica and its role."
    )
    device: DeviceStateOut | None = Field(
        None,
        description="The device as the scheduler sees it: a QPU that says DOWN is OFFLINE here "
        "while the daemon stays healthy (200); the message says why.",
    )


ReservationId = Annotated[int, Path(ge=1, lt=2**31, description="A reservation id.")]


class ReservationIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    owner_kind: OwnerKind = Field(
        description="Who the QPU is kept for: a user id, a Slurm account or a Slurm job id."
    )
    owner: Identifier
    starts_at: datetime = Field(
        description="RFC 3339 date-time (UTC when no offset) or Unix time; one in the past "
        "starts now."
    )
    ends_at: datetime = Field(description="Must be after starts_at and in the future.")


class AccountingRow(BaseModel):
    key: str | None = Field(description="The uid or Slurm job id; null: jobs without one.")
    jobs: int
    done: int
    shots: int
    qpu_seconds: float
    mean_wait_s: float | None
    max_wait_s: float | None


class AccountingOut(BaseModel):
    since: float | None
    until: float | None
    by: Literal["user", "slurm_job"]
    rows: list[AccountingRow]


QuotaSubject = Annotated[Text, StringConstraints(min_length=1, max_length=64)]


class QuotaIn(BaseModel):
    """A budget per period for one user or Slurm account (docs/policy.md, "Quotas")."""

    model_config = ConfigDict(extra="forbid")
    kind: QuotaKind
    subject: QuotaSubject = Field(description="The user id (uid) or Slurm account.")
    unit: QuotaUnit
    budget: Number = Field(ge=0, le=MAX_BUDGET)
    period: str = Field(
        "month",
        pattern=PERIOD_PATTERN,
        description="day, week or month (UTC calendar), or <N>s: N seconds from the Unix epoch.",
    )
