"""The documents the scheduler serves, defined once: the daemon's response models (its OpenAPI
schema, under these names), what the kernel's client reads, what the Jupyter server extension
relays to the browser (the fields marked :data:`RELAYED`) and the sidebar's TypeScript types
(generated from these classes, :mod:`qhpc_lab.wire.typescript`).

Fields the client reads are strict (an integer is never a float or a numeric string), so an
answer in another form fails in one place. A time is :data:`Time`: RFC 3339 text on the wire,
a ``datetime`` once read.
"""

from __future__ import annotations

import functools
import json
import operator
import types
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    Field,
    PlainSerializer,
    StrictBool,
    StrictInt,
    StrictStr,
    WithJsonSchema,
    create_model,
)

from qhpc_lab.vocabulary import (
    DEVICE_STATES,
    HOLDS,
    JOB_STATUSES,
    OWNER_KINDS,
    QUOTA_KINDS,
    QUOTA_UNITS,
)
from qhpc_lab.wire.times import iso_time

Document = TypeVar("Document", bound=BaseModel)


class Relayed:
    """Marks a field the Jupyter server extension passes on to the browser: what a document
    may show in a web page (never results, session ids or anything not marked)."""

    def __repr__(self) -> str:
        return "RELAYED"


RELAYED = Relayed()


def _from_unix(value: Any) -> Any:
    """A Unix time (how the store keeps one) as a UTC date-time; anything else as it is."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, UTC)
    return value


Time = Annotated[
    datetime,
    BeforeValidator(_from_unix),
    PlainSerializer(lambda moment: iso_time(moment), return_type=str, when_used="json"),
    WithJsonSchema({"type": "string"}),
]
"""A date-time: RFC 3339 in UTC on the wire (:func:`~qhpc_lab.wire.times.iso_time`), made
from a Unix time or read from its text."""


def _rounded(digits: int) -> AfterValidator:
    """A number kept to ``digits`` decimals: what a document shows of a float sum."""
    return AfterValidator(lambda value: round(value, digits))


Milliseconds = Annotated[float, _rounded(3)]
Microseconds = Annotated[float, _rounded(6)]

JobStatusName = Literal[tuple(map(str, JOB_STATUSES))]  # type: ignore[valid-type] (values)
DeviceStateName = Literal[tuple(map(str, DEVICE_STATES))]  # type: ignore[valid-type]
Hold = Literal[HOLDS]  # type: ignore[valid-type]
QuotaKind = Literal[QUOTA_KINDS]  # type: ignore[valid-type]
QuotaUnit = Literal[QUOTA_UNITS]  # type: ignore[valid-type]
OwnerKind = Literal[OWNER_KINDS]  # type: ignore[valid-type]


# -- a job --------------------------------------------------------------------------------------


class CalibrationRangeOut(BaseModel):
    """Consecutive shots of a job that ran under one calibration."""

    id: StrictInt = Field(
        description="The calibration's number: it counts the device's calibrations."
    )
    calibrated_at: Time
    shots_from: StrictInt = Field(description="First shot of the range (1-based).")
    shots_to: StrictInt = Field(description="Last shot of the range (inclusive).")
    age_s_first: Milliseconds = Field(
        description="Calibration age when the range's first shot began."
    )
    age_s_last: Milliseconds = Field(
        description="Calibration age when the range's last shot ended."
    )
    drift: dict[StrictStr, float] = Field(description="The calibration's drift parameters.")


class JobOut(BaseModel):
    id: Annotated[StrictInt, RELAYED]
    user_id: StrictStr
    created_at: Annotated[Time, RELAYED]
    status: Annotated[JobStatusName, RELAYED]
    results: StrictStr | None = Field(description='JSON text: {"counter": {bitstring: count}}.')
    session_id: StrictStr | None
    slurm_job_id: StrictStr | None
    name: Annotated[StrictStr | None, RELAYED]
    format: Annotated[StrictStr, RELAYED]
    job_class: Annotated[StrictStr, RELAYED]
    shots: Annotated[StrictInt, RELAYED]
    shots_done: Annotated[StrictInt, RELAYED]
    position: Annotated[StrictInt | None, RELAYED] = Field(
        description="1 = next to run, 0 = running, null when final."
    )
    eta_s: Annotated[float | None, RELAYED] = Field(
        description="Seconds until it is expected to end (its start: this less its shots left "
        "× the device's time_per_shot_s; 0 once started); null when final or held."
    )
    held_by: Annotated[Hold | None, RELAYED] = Field(
        description="What holds it while it waits (a timeline hold: maintenance runs nothing, "
        "draining runs only started jobs, down: the QPU says DOWN, which also stalls the "
        "running job's chunk); it has no end estimate (eta_s) meanwhile."
    )
    started_at: Annotated[Time | None, RELAYED]
    finished_at: Annotated[Time | None, RELAYED]
    qpu_seconds: Microseconds = Field(description="Device time: shots × time per shot.")
    emulator_seconds: Microseconds = Field(description="The emulator's own wall time.")
    calibration_age_s: Annotated[float | None, RELAYED]
    calibrations: list[CalibrationRangeOut] = Field(
        description="The calibrations its shots ran under, per shot range, in shot order."
    )
    single_calibration: StrictBool
    loop: StrictStr | None = Field(
        description="The hybrid loop it belongs to (docs/policy.md rule 9)."
    )
    think_time_s: float | None = Field(description="The loop's expected pause after it.")
    error: Annotated[StrictStr | None, RELAYED]
    sets: Annotated[StrictInt | None, RELAYED] = Field(
        None,
        description="A sweep's number of (shots, variables) sets, its shots theirs in all; "
        "null for a plain job. Its results per set: GET /jobs/{id}/sets.",
    )
    sets_done: Annotated[StrictInt | None, RELAYED] = Field(
        None, description="A sweep's sets run to their end (in order); null for a plain job."
    )


JOB_QUEUE_FIELDS = ("position", "eta_s", "held_by")
"""The job document's fields a view works out from the queue; each other field is the job's
own attribute of the same name (the store's ``JobRow``)."""
WARDEN_JOB_FIELDS = ("id", "status")
"""What even a plain Warden's job has (with ``user_id``, ``created_at`` and ``results``, which
it may leave out as well): the client reads every other field as optional."""


def job_document(
    job: object, position: int | None, eta_s: float | None, held_by: str | None
) -> dict[str, Any]:
    """The job document of ``job`` (:class:`JobOut`, in JSON values): its attributes named as
    the document's fields (times as Unix times), and where it stands in the queue."""
    own = {name: getattr(job, name) for name in JobOut.model_fields if name not in JOB_QUEUE_FIELDS}
    queue = {"position": position, "eta_s": eta_s, "held_by": held_by}
    return JobOut.model_validate({**own, **queue}).model_dump(mode="json")


class SweepSetOut(BaseModel):
    """One set of a sweep: what it asked for and its outcomes so far."""

    index: StrictInt = Field(description="Its place in the sweep (0-based, as submitted).")
    shots: StrictInt
    variables: dict[StrictStr, Any] = Field(
        description="Every variable the program declares, as this set binds it."
    )
    shots_done: StrictInt
    counter: dict[StrictStr, StrictInt] = Field(description="Its outcomes: {bitstring: count}.")


class SweepSetsOut(BaseModel):
    """A sweep's results per set (``GET /jobs/{id}/sets``); empty for a plain job."""

    job_id: StrictInt
    status: JobStatusName
    sets: list[SweepSetOut]


class JobResults(BaseModel):
    """A job's ``results`` text: ``{"counter": {bitstring: count}}`` (other keys ignored)."""

    counter: dict[Annotated[str, Field(pattern=r"^[01]+$")], Annotated[StrictInt, Field(ge=0)]]


# -- the device ---------------------------------------------------------------------------------

Formats = Annotated[
    list[StrictStr],
    Field(
        description="Program formats the device runs (an analog QPU: pulser); POST /jobs "
        "refuses others (422, rule format)."
    ),
]


class DispatcherOut(BaseModel):
    ok: bool
    reason: str | None = Field(description="store_unavailable or dispatcher_error while stalled.")
    detail: str | None
    since: str | None


class RunningOut(BaseModel):
    job_class: Annotated[StrictStr, RELAYED]


class ReservationOut(BaseModel):
    id: int
    owner_kind: Annotated[OwnerKind, RELAYED]
    owner: Annotated[str, RELAYED]
    starts_at: Annotated[float, RELAYED] = Field(description="Unix time.")
    ends_at: Annotated[float, RELAYED] = Field(description="Unix time.")
    active: bool = Field(description="The window holds now: only its owner's work runs.")
    created_at: float
    created_by: str | None


class LoopHoldOut(BaseModel):
    loop: str | None = Field(description="The loop's id: only to its owner or an administrator.")
    until: float = Field(description="Held at most until then (epoch seconds).")


class DeviceOut(BaseModel):
    name: StrictStr
    profile: str
    formats: Formats
    state: Annotated[DeviceStateName, RELAYED]
    accessible: StrictBool
    draining: Annotated[bool, RELAYED]
    message: Annotated[StrictStr, RELAYED]
    calibrated_at: float
    calibration_id: int = Field(description="The calibration in force: it counts calibrations.")
    calibration_age_s: Annotated[float, RELAYED]
    next_calibration_at: float | None
    next_calibration_in_s: Annotated[float | None, RELAYED]
    calibration_duration_s: Annotated[float, RELAYED]
    time_per_shot_s: Annotated[float, RELAYED] = Field(
        description="Device time per shot: what a waiting job's start estimate takes off its "
        "end estimate (eta_s) for each shot it has left."
    )
    chunk_shots: int
    cell_job_class: StrictStr = Field(
        description="The class a %%qpu cell's job gets when the cell names none (a site "
        "setting, docs/policy.md)."
    )
    queue_depth: Annotated[dict[str, StrictInt], RELAYED] = Field(
        description="Active jobs (waiting or running) per class."
    )
    running: Annotated[RunningOut | None, RELAYED]
    running_job: Annotated[int | None, RELAYED] = Field(
        description="Only to its owner or an administrator."
    )
    dispatcher: DispatcherOut
    next_reservation: Annotated[ReservationOut | None, RELAYED] = Field(
        description="The reservation in force, else the next to start (docs/policy.md rule 8)."
    )
    held_for_loop: LoopHoldOut | None = Field(
        description="The hybrid loop the QPU is held for between two of its jobs, if any."
    )


class DeviceStateOut(BaseModel):
    state: DeviceStateName
    message: str


class AccessibleOut(BaseModel):
    is_accessible: StrictBool
    message: StrictStr
    qpu_slots_total: int | None = Field(None, description="Left out when slots are not managed.")
    qpu_slots_used: int | None = None
    qpu_slots_available: int | None = None


class SpecsOut(BaseModel):
    specs: StrictStr = Field(description="The Pulser device, as JSON text.")
    formats: Formats


# -- the queue event ----------------------------------------------------------------------------


class QueuePlaceOut(BaseModel):
    """One of the caller's active jobs in a queue event."""

    position: Annotated[StrictInt, RELAYED] = Field(description="0 = running, 1 = next.")
    eta_s: Annotated[float | None, RELAYED]
    held_by: Annotated[Hold | None, RELAYED]


class QueueRunningOut(BaseModel):
    """The running job, anyone's: its class, and its id and end estimate when it is the
    caller's."""

    job_class: Annotated[StrictStr, RELAYED]
    mine: Annotated[StrictBool, RELAYED]
    job_id: Annotated[StrictInt | None, RELAYED]
    eta_s: Annotated[float | None, RELAYED]


class QueueEventOut(BaseModel):
    """The queue event of GET /events, personal to its reader: other users' jobs are counted,
    never named."""

    revision: Annotated[StrictInt, RELAYED]
    waiting: Annotated[StrictInt, RELAYED] = Field(
        description="Jobs waiting, every user's; the running job is not counted."
    )
    depth: Annotated[dict[str, StrictInt], RELAYED] = Field(description="Waiting jobs per class.")
    running: Annotated[QueueRunningOut | None, RELAYED]
    jobs: Annotated[dict[str, QueuePlaceOut], RELAYED] = Field(
        description="The reader's active jobs by id, nearest first."
    )
    jobs_omitted: Annotated[StrictInt, RELAYED] = Field(
        description="The reader's active jobs past the listed ones."
    )


class EstimateOut(BaseModel):
    position: StrictInt = Field(description="Where the job would stand in line now (1 = next).")
    done_in_s: float | None = Field(
        description="Seconds until it would end: the queue ahead, calibrations and its own "
        "run; null while a hold (held_by) keeps new jobs waiting."
    )
    run_s: float = Field(description="Its own shots' time on the device.")
    held_by: Hold | None
    calibration_age_s: float
    queue: QueueEventOut = Field(
        description="The queue as the caller's queue event shows it (GET /events): its "
        "length and the caller's own jobs' places, nothing of other users' jobs."
    )


# -- quotas, sessions, a job's log and timeline -------------------------------------------------


class QuotaOut(BaseModel):
    kind: Annotated[QuotaKind, RELAYED]
    subject: Annotated[StrictStr, RELAYED]
    unit: Annotated[QuotaUnit, RELAYED]
    budget: Annotated[float, RELAYED]
    period: Annotated[StrictStr, RELAYED]
    used: Annotated[float, RELAYED] = Field(
        description="Charged in this period: what ended jobs used, what active ones used plus "
        "what their shots left would cost."
    )
    remaining: float
    period_start: Time
    resets_at: Annotated[Time, RELAYED]


class QuotasOut(BaseModel):
    quotas: list[QuotaOut]


class SessionOut(BaseModel):
    id: str
    user_id: str
    slurm_job_id: str | None
    scheduler_job_id: str | None = Field(description="Warden's name of slurm_job_id.")
    qpu_slots: int
    created_at: Time
    revoked_at: Time | None
    revoke_reason: str | None
    revocation_reason: str | None = Field(
        description="Warden's name of revoke_reason: idle_timeout or max_lifetime_expired when "
        "a deadline revoked it."
    )
    idle_expires_at: Time | None = Field(
        description="Revoked after this once none of its jobs is active; each job submitted "
        "in it moves it on. Null: no idle deadline."
    )
    expires_at: Time | None = Field(description="Revoked at this time. Null: no lifetime limit.")
    slurm_account: str | None = Field(None, description="The Slurm job's account, if known.")


class LogsOut(BaseModel):
    logs: StrictStr


class TimelineOut(BaseModel):
    job_id: int
    status: str
    entries: list[dict[str, Any]] = Field(description="docs/operations.md lists the events.")


# -- the error document -------------------------------------------------------------------------


class ErrorOut(BaseModel):
    """The body of every 4xx and 5xx answer."""

    detail: str = Field(description="What was refused and why, naming the field or setting.")
    rule: str | None = Field(
        description="The rule or setting that refused it (e.g. max_payload_bytes, session, "
        "request); null for routing errors (unknown path or method)."
    )


class QuotaRefusalOut(ErrorOut):
    """A 403: with rule ``quota``, the quota's numbers beside the message (docs/policy.md)."""

    kind: QuotaKind | None = Field(None, description="Whom the quota budgets.")
    subject: str | None = Field(None, description="The user id or Slurm account.")
    unit: QuotaUnit | None = None
    period: str | None = None
    budget: float | None = None
    used: float | None = Field(None, description="Charged in this period before this job.")
    requested: float | None = Field(None, description="What this job would be charged.")
    resets_at: str | None = Field(None, description="When the period ends (RFC 3339, UTC).")


def read_error(body: str | bytes) -> ErrorOut | None:
    """A refusal's body as our error document (Warden's too: ``detail``, maybe ``rule``);
    None when it is not a JSON object. A ``detail`` that is not text (FastAPI's own list of
    validation errors) is kept as its JSON; an absent one is empty."""
    try:
        document = json.loads(body)
    except ValueError:
        return None
    if not isinstance(document, dict):
        return None
    detail, rule = document.get("detail"), document.get("rule")
    return ErrorOut(
        detail=detail if isinstance(detail, str) else "" if detail is None else json.dumps(detail),
        rule=rule if isinstance(rule, str) else None,
    )


# -- reading and relaying documents -------------------------------------------------------------


@functools.cache
def tolerant(document: type[Document], required: tuple[str, ...] = ()) -> type[Document]:
    """``document`` as a client reads it: every field but ``required`` may be absent (None),
    for a plain Warden or an older scheduler; what is there must have the field's type, but a
    word from a closed list (a hold, a device state, a quota kind) may be one this release does
    not know yet: a newer scheduler's answer is read, not refused. A job's status stays closed:
    a client that cannot tell whether a job has ended must say so."""
    fields: dict[str, Any] = {}
    for name, info in document.model_fields.items():
        annotation = _open_words(info.annotation)
        if info.metadata:
            annotation = Annotated[(annotation, *info.metadata)]  # type: ignore[valid-type]
        fields[name] = (annotation, ...) if name in required else (annotation | None, None)
    return create_model(  # type: ignore[call-overload,no-any-return]
        f"Tolerant{document.__name__}", __base__=document, **fields
    )


def _open_words(annotation: Any) -> Any:
    """``annotation`` with each ``Literal`` of words but job statuses read as any text, and
    each document it holds read :func:`tolerant`-ly."""
    origin = get_origin(annotation)
    if origin is Literal and annotation is not JobStatusName:
        return str if all(isinstance(word, str) for word in get_args(annotation)) else annotation
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return tolerant(annotation)
    if origin is Annotated:
        inner, *metadata = get_args(annotation)
        return Annotated[(_open_words(inner), *metadata)]  # type: ignore[valid-type]
    if origin in (Union, types.UnionType):
        return functools.reduce(operator.or_, map(_open_words, get_args(annotation)))
    if origin is list:
        return list[_open_words(get_args(annotation)[0])]  # type: ignore[misc]
    if origin is dict:
        key, value = get_args(annotation)
        return dict[key, _open_words(value)]  # type: ignore[valid-type]
    return annotation


def relayed_fields(document: type[BaseModel]) -> tuple[str, ...]:
    """The fields of ``document`` marked :data:`RELAYED`, in order."""
    return tuple(name for name, info in document.model_fields.items() if RELAYED in info.metadata)


def _held(annotation: Any) -> tuple[type[BaseModel] | None, bool]:
    """The document a field of ``annotation`` holds (itself or null, or a ``dict`` of them),
    and whether it holds many."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, False
    if get_origin(annotation) is dict:
        return _held(get_args(annotation)[1])[0], True
    for option in get_args(annotation):
        if option is not type(None) and get_origin(annotation) is not Literal:
            held = _held(option)
            if held[0] is not None:
                return held
    return None, False


def relay(document: type[BaseModel], data: Mapping[str, Any]) -> dict[str, Any]:
    """What the browser may see of ``data``, a ``document``: its :data:`RELAYED` fields that
    are there, and theirs in each document they hold (nothing else, whatever the server adds)."""
    view: dict[str, Any] = {}
    for name in relayed_fields(document):
        if name not in data:
            continue
        value = data[name]
        inner, many = _held(document.model_fields[name].annotation)
        if inner is not None and isinstance(value, Mapping):
            if many:
                value = {k: relay(inner, v) for k, v in value.items() if isinstance(v, Mapping)}
            else:
                value = relay(inner, value)
        view[name] = value
    return view
