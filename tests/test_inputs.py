"""Bad input is a 4xx naming the field, never a 500 (regressions from an adversarial run).

Each case once crashed the daemon: a lone surrogate or a NUL character in text (SQLite cannot
encode the one, PostgreSQL stores neither), numbers past the 32- or 64-bit columns, numbers
sent as strings or booleans, infinities. The database-specific ones run on both back ends.
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from qhpc_lab.scheduler.schemas import MAX_QPU_SLOTS, MAX_SHOTS
from tests.support.daemons import free_port
from tests.support.identities import USER, auth_header
from tests.support.in_process import Clients, in_process, scheduler_config
from tests.support.served import served

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
NUL, SURROGATE = "\\u0000", "\\ud800"  # as JSON escapes: json.dumps would refuse the second


@pytest.fixture(params=BACKENDS)
async def api_on(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Clients]:
    """The in-process API on a fresh SQLite file or a fresh PostgreSQL database."""
    db = (
        request.getfixturevalue("fresh_postgres_url")
        if request.param == "postgres"
        else f"sqlite:///{tmp_path / 'scheduler.db'}"
    )
    async with in_process(scheduler_config(tmp_path, db=db)) as clients:
        yield clients


def refused(response: httpx.Response, field: str, status: int = 422) -> None:
    """A clean refusal: ``status``, our error document, its detail naming ``field``."""
    assert response.status_code == status, (field, response.status_code, response.text)
    document = response.json()
    assert set(document) == {"detail", "rule"}, document
    assert field in document["detail"], document


def raw_json(text: str) -> dict[str, object]:
    """Arguments that send ``text`` as the JSON body verbatim (escapes included)."""
    return {"content": text.encode(), "headers": {"Content-Type": "application/json"}}


@pytest.mark.anyio
@pytest.mark.parametrize("bad", [NUL, SURROGATE], ids=["nul", "surrogate"])
async def test_bad_characters_in_text_are_422_naming_the_field(
    api_on: Clients, sequence_json: str, bad: str
) -> None:
    sequence = json.dumps(sequence_json)
    jobs = {
        "sequence": f'{{"sequence": "a{bad}b", "shots": 10}}',
        "name": f'{{"sequence": {sequence}, "shots": 10, "name": "a{bad}"}}',
        "job_class": f'{{"sequence": {sequence}, "shots": 10, "job_class": "{bad}"}}',
        "format": f'{{"sequence": {sequence}, "shots": 10, "format": "{bad}"}}',
        "variables": f'{{"sequence": {sequence}, "shots": 10, "variables": {{"{bad}": 1}}}}',
    }
    for field, body in jobs.items():
        refused(await api_on.user.post("/jobs", **raw_json(body)), field)
    # An unknown field named by a bad character: pydantic names a NUL one (the document
    # escapes it) and refuses a surrogate one as invalid Unicode before it can name it.
    extra = f'{{"sequence": {sequence}, "shots": 10, "x{bad}": 1}}'
    named = "x" if bad == NUL else "unicode"
    refused(await api_on.user.post("/jobs", **raw_json(extra)), named)
    sessions = {
        "user_id": f'{{"user_id": "u{bad}"}}',
        "slurm_job_id": f'{{"user_id": "{USER}", "slurm_job_id": "{bad}"}}',
    }
    for field, body in sessions.items():
        refused(await api_on.admin.post("/sessions", **raw_json(body)), field)
    accessible = f'{{"is_accessible": false, "message": "down{bad}"}}'
    refused(await api_on.admin.post("/accessible", **raw_json(accessible)), "message")
    policy = f'{{"class_priority": {{"test{bad}": 1}}}}'
    refused(await api_on.admin.put("/admin/policy", **raw_json(policy)), "class_priority")
    # nothing was stored, and the API still answers
    assert (await api_on.user.get("/jobs")).json() == []
    assert (await api_on.admin.get("/accessible")).json()["is_accessible"] is True


@pytest.mark.anyio
async def test_nul_in_query_and_path_is_422_naming_the_parameter(api_on: Clients) -> None:
    refused(await api_on.user.get("/jobs", params={"status": "DONE\x00"}), "status")
    refused(await api_on.user.delete("/sessions/a%00b"), "session_id")
    refused(
        await api_on.user.delete("/sessions/a", params={"reason": "gone\x00"}),
        "reason",
    )
    refused(await api_on.admin.get("/admin/accounting", params={"since": "nan"}), "since")
    refused(await api_on.admin.get("/admin/accounting", params={"until": "inf"}), "until")
    refused(await api_on.user.delete("/sessions/" + "a" * 65), "session_id")
    assert (await api_on.user.get("/jobs", params={"status": "DONE"})).json() == []


@pytest.mark.anyio
async def test_qpu_slots_are_bounded(api_on: Clients) -> None:
    for slots in (2**63, 2**64, 2**31, MAX_QPU_SLOTS + 1, 0, -1, "2", True, 1.5):
        body = {"user_id": USER, "slurm_job_id": f"job-{slots}", "qpu_slots": slots}
        refused(await api_on.admin.post("/sessions", json=body), "qpu_slots")
    body = {"user_id": USER, "slurm_job_id": "largest", "qpu_slots": MAX_QPU_SLOTS}
    largest = await api_on.admin.post("/sessions", json=body)
    assert largest.status_code == 200 and largest.json()["qpu_slots"] == MAX_QPU_SLOTS


@pytest.mark.anyio
async def test_shots_are_strict_integers(api: Clients, sequence_json: str) -> None:
    for shots in ("100", True, 100.0, 0, -1, MAX_SHOTS + 1, 2**63, None):
        response = await api.user.post("/jobs", json={"sequence": sequence_json, "shots": shots})
        refused(response, "shots")
    accepted = await api.user.post("/jobs", json={"sequence": sequence_json, "shots": 100})
    assert accepted.status_code == 200, accepted.text
    await api.user.post(f"/jobs/{accepted.json()['id']}/cancel")


@pytest.mark.anyio
async def test_infinite_numbers_are_refused(api: Clients, sequence_json: str) -> None:
    sequence = json.dumps(sequence_json)
    age = f'{{"sequence": {sequence}, "shots": 10, "max_calibration_age_s": Infinity}}'
    refused(await api.user.post("/jobs", **raw_json(age)), "max_calibration_age_s")
    for field in ("aging_per_chunk", "usage_half_life_s", "min_calibration_age_s"):
        for value in ("Infinity", "NaN"):
            body = raw_json(f'{{"{field}": {value}}}')
            refused(await api.admin.put("/admin/policy", **body), field)
    # finite but past what the policy turns into shot counts (once an OverflowError, a 500)
    huge = {"sequence": sequence_json, "shots": 10, "max_calibration_age_s": 1e308}
    refused(await api.user.post("/jobs", json=huge), "max_calibration_age_s")
    for field in ("aging_per_chunk", "usage_half_life_s", "min_calibration_age_s"):
        refused(await api.admin.put("/admin/policy", json={field: 1e308}), field)
    assert (await api.admin.get("/admin/policy")).status_code == 200


# -- an unexpected error is a JSON 500 and the connection stays usable ------------------------


def _exchange(sock: socket.socket, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """One request and its whole answer on an open connection."""
    sock.sendall(request)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before an answer: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    while len(body) < int(headers["content-length"]):
        chunk = sock.recv(65536)
        assert chunk, "connection closed in the middle of an answer"
        body += chunk
    return int(lines[0].split()[1]), headers, body


def test_unexpected_error_is_json_500_and_keeps_the_connection(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with served(scheduler_config(tmp_path, port=free_port())) as (_, port, scheduler):

        def broken(*_args: object) -> dict[str, object]:
            raise RuntimeError("a bug the tests planted")

        scheduler.device_info = broken  # type: ignore[attr-defined]
        token = auth_header(USER)["Authorization"].encode()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            request = b"GET /device HTTP/1.1\r\nHost: s\r\nAuthorization: " + token + b"\r\n\r\n"
            with caplog.at_level(logging.ERROR, logger="qhpc_lab.scheduler.errors"):
                status, headers, body = _exchange(sock, request)
            assert status == 500 and headers["content-type"] == "application/json"
            assert json.loads(body) == {
                "detail": "internal error (logged by the scheduler)",
                "rule": "internal",
            }
            assert "a bug the tests planted" in caplog.text and "Traceback" in caplog.text
            assert headers.get("connection") != "close"
            status, _, body = _exchange(sock, b"GET /health HTTP/1.1\r\nHost: s\r\n\r\n")
            assert (status, json.loads(body)["status"]) == (200, "ok")
