"""The wire contract (qhpc_lab.wire): a job document made from a stored job, a document read
as the client reads it, what the server extension relays, the error document and the times."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from qhpc_lab.scheduler import schemas
from qhpc_lab.wire import documents, qrmi
from qhpc_lab.wire.documents import (
    WARDEN_JOB_FIELDS,
    DeviceOut,
    JobOut,
    QueueEventOut,
    job_document,
    read_error,
    relay,
    relayed_fields,
    tolerant,
)
from qhpc_lab.wire.times import iso_time, unix_time

CREATED = 1765116152.123456  # 2025-12-07T14:02:32.123456Z


@dataclass
class StoredJob:
    """What the store keeps of a job, under the document's names (as ``JobRow`` does)."""

    id: int = 7
    user_id: str = "1000"
    status: str = "DONE"
    results: str | None = '{"counter": {"01": 3}}'
    session_id: str | None = "a-session"
    slurm_job_id: str | None = "42"
    name: str | None = "bell"
    format: str = "pulser"
    job_class: str = "development"
    shots: int = 3
    shots_done: int = 3
    created_at: float = CREATED
    started_at: float | None = CREATED + 1
    finished_at: float | None = CREATED + 2.5
    qpu_seconds: float = 0.30000000000000004
    emulator_seconds: float = 0.1234567
    calibration_age_s: float | None = 12.5
    calibrations: list[dict[str, Any]] = field(
        default_factory=lambda: [
            {
                "id": 2,
                "calibrated_at": CREATED - 12.5,
                "shots_from": 1,
                "shots_to": 3,
                "age_s_first": 12.51234,
                "age_s_last": 13.0004,
                "drift": {"readout_error": 0.01},
            }
        ]
    )
    single_calibration: bool = False
    loop: str | None = None
    think_time_s: float | None = None
    error: str | None = None
    sets: int | None = None
    sets_done: int | None = None


def test_a_job_document_is_made_from_the_stored_job_and_its_place_in_the_queue():
    document = job_document(StoredJob(), position=None, eta_s=None, held_by=None)
    assert document == {
        "id": 7,
        "user_id": "1000",
        "created_at": "2025-12-07T14:02:32.123456Z",
        "status": "DONE",
        "results": '{"counter": {"01": 3}}',
        "session_id": "a-session",
        "slurm_job_id": "42",
        "name": "bell",
        "format": "pulser",
        "job_class": "development",
        "shots": 3,
        "shots_done": 3,
        "position": None,
        "eta_s": None,
        "held_by": None,
        "started_at": "2025-12-07T14:02:33.123456Z",
        "finished_at": "2025-12-07T14:02:34.623456Z",
        "qpu_seconds": 0.3,
        "emulator_seconds": 0.123457,
        "calibration_age_s": 12.5,
        "calibrations": [
            {
                "id": 2,
                "calibrated_at": "2025-12-07T14:02:19.623456Z",
                "shots_from": 1,
                "shots_to": 3,
                "age_s_first": 12.512,
                "age_s_last": 13.0,
                "drift": {"readout_error": 0.01},
            }
        ],
        "single_calibration": False,
        "loop": None,
        "think_time_s": None,
        "error": None,
        "sets": None,
        "sets_done": None,
    }
    assert list(document) == list(JobOut.model_fields)  # Warden's fields first, as published
    waiting = job_document(
        StoredJob(status="PENDING", shots_done=0), position=2, eta_s=None, held_by="maintenance"
    )
    assert (waiting["position"], waiting["held_by"]) == (2, "maintenance")
    with pytest.raises(ValidationError, match="held_by"):
        job_document(StoredJob(), position=1, eta_s=None, held_by="lunch")


def test_the_daemon_publishes_the_wire_documents_under_their_own_names():
    for name in ("JobOut", "DeviceOut", "QuotasOut", "SessionOut", "EstimateOut", "SpecsOut"):
        assert getattr(schemas, name) is getattr(documents, name)


def test_the_client_reads_a_plain_wardens_job_and_refuses_a_wrong_type():
    read = tolerant(JobOut, WARDEN_JOB_FIELDS)
    job = read.model_validate({"id": 3, "status": "RUNNING", "created_at": "2026-01-05T14:00:00Z"})
    assert job.created_at == datetime(2026, 1, 5, 14, tzinfo=UTC)
    assert (job.shots, job.position, job.calibrations) == (None, None, None)
    with pytest.raises(ValidationError, match="status"):
        read.model_validate({"id": 3})
    with pytest.raises(ValidationError, match="shots"):
        read.model_validate({"id": 3, "status": "DONE", "shots": "3"})


def test_the_browser_gets_only_relayed_fields_however_deep():
    job = job_document(StoredJob(), position=None, eta_s=None, held_by=None)
    shown = relay(JobOut, {**job, "added_later": 1})
    assert set(shown) == set(relayed_fields(JobOut))
    assert {"results", "session_id", "user_id", "calibrations"}.isdisjoint(shown)
    assert {"held_by", "calibration_age_s"} <= set(shown)
    device = relay(
        DeviceOut,
        {
            "state": "ONLINE",
            "dispatcher": {"ok": True},
            "running": {"job_class": "production", "user_id": "1000"},
            "next_reservation": {"owner_kind": "user", "owner": "1000", "created_by": "0"},
        },
    )
    assert device == {
        "state": "ONLINE",
        "running": {"job_class": "production"},
        "next_reservation": {"owner_kind": "user", "owner": "1000"},
    }
    queue = relay(
        QueueEventOut,
        {"waiting": 1, "jobs": {"7": {"position": 1, "eta_s": 3.0, "held_by": None, "x": 1}}},
    )
    assert queue == {"waiting": 1, "jobs": {"7": {"position": 1, "eta_s": 3.0, "held_by": None}}}


@pytest.mark.parametrize(
    ("body", "detail", "rule"),
    [
        (b'{"detail": "over quota", "rule": "quota", "used": 3}', "over quota", "quota"),
        (b'{"detail": "Not Found"}', "Not Found", None),
        (b'{"detail": [{"loc": ["body"]}], "rule": 5}', '[{"loc": ["body"]}]', None),
        (b"{}", "", None),
    ],
)
def test_an_error_document_is_read_in_one_place(body: bytes, detail: str, rule: str | None):
    error = read_error(body)
    assert error is not None and (error.detail, error.rule) == (detail, rule)


@pytest.mark.parametrize("body", [b"<html>502</html>", b"[1, 2]", b'"text"', b""])
def test_a_body_that_is_no_error_document_reads_as_none(body: bytes):
    assert read_error(body) is None


def test_every_time_is_written_in_utc():
    assert iso_time(CREATED) == "2025-12-07T14:02:32.123456Z"
    assert iso_time(1765116120.0) == "2025-12-07T14:02:00Z"
    assert iso_time(CREATED, sep=" ", timespec="milliseconds") == "2025-12-07 14:02:32.123Z"
    assert iso_time(CREATED, sep=" ", timespec="minutes") == "2025-12-07 14:02Z"
    assert iso_time(datetime(2026, 1, 5, 14)) == "2026-01-05T14:00:00Z"  # no offset: UTC
    assert iso_time(None) is None
    assert unix_time(datetime(2026, 1, 5, 14)) == unix_time(datetime(2026, 1, 5, 14, tzinfo=UTC))


def test_the_qrmi_variables_of_a_resource():
    assert (qrmi.warden_url("qpu"), qrmi.acquisition_token("qpu")) == (
        "qpu_QRMI_WARDEN_URL",
        "qpu_QRMI_JOB_ACQUISITION_TOKEN",
    )
    assert qrmi.delimiter({}) == "," and qrmi.delimiter({"QRMI_LIST_DELIMITER": ";"}) == ";"
