"""MUNGE identity against a real munged: the libmunge binding and the scheduler's use of it."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from qhpc_lab import munge
from tests.support.in_process import in_process, scheduler_config
from tests.support.munge import FreshCredential
from tests.support.polling import wait_for_status

pytestmark = [pytest.mark.munge, pytest.mark.usefixtures("munged")]

NOBODY = "65534"
GARBAGE = "MUNGE:this-is-not-a-credential:"


def cred() -> dict[str, str]:
    """Headers with a fresh credential for this process (root)."""
    return {"X-Munge-Cred": munge.encode()}


def nobody_cred() -> dict[str, str]:
    """Headers with a fresh credential for uid 65534, made by munge running as that user."""
    made = subprocess.run(
        ["runuser", "-u", "nobody", "--", "munge", "-n"],
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    )
    return {"X-Munge-Cred": made.stdout.strip()}


# -- the binding ---------------------------------------------------------------------------


def test_round_trip_carries_uid_gid_and_payload() -> None:
    decoded = munge.decode(munge.encode(b"\x00qhpc payload\xff"))
    assert (decoded.uid, decoded.gid) == (os.getuid(), os.getgid())
    assert decoded.payload == b"\x00qhpc payload\xff"
    assert munge.decode(munge.encode()).payload == b""


def test_credential_of_another_user_decodes_to_that_uid() -> None:
    assert munge.decode(nobody_cred()["X-Munge-Cred"]).uid == int(NOBODY)


def test_replayed_credential_raises_code_17() -> None:
    credential = munge.encode()
    munge.decode(credential)
    with pytest.raises(munge.MungeError) as caught:
        munge.decode(credential)
    assert caught.value.code == munge.CRED_REPLAYED == 17


def test_decode_reports_encode_time_and_ttl() -> None:
    before = int(time.time())
    decoded = munge.decode(munge.encode())
    assert before - 1 <= decoded.encoded_at <= time.time() + 1
    assert decoded.ttl_s > 0 and decoded.expires_at == decoded.encoded_at + decoded.ttl_s + 1


def test_fingerprint_is_of_the_credential_not_its_spelling() -> None:
    credential = munge.encode()
    respelled = f" {credential[:20]}\n{credential[20:]}\n"
    assert munge.fingerprint(respelled) == munge.fingerprint(credential)
    assert munge.fingerprint(munge.encode()) != munge.fingerprint(credential)
    assert munge.decode(respelled).uid == os.getuid()  # munged reads it the same


def test_garbage_raises() -> None:
    with pytest.raises(munge.MungeError) as caught:
        munge.decode(GARBAGE)
    assert caught.value.code not in (0, munge.CRED_REPLAYED)


# -- the scheduler with MUNGE auth ---------------------------------------------------------


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """An unauthenticated client of an in-process scheduler with MUNGE auth (root is admin).

    Sessions are optional here so that the tests isolate identity from session rules.
    """
    config = scheduler_config(tmp_path, auth=("munge",), admin_uids=("0",), require_session=False)
    async with in_process(config) as clients:
        yield clients.anonymous


async def submit(client: httpx.AsyncClient, headers: dict[str, str], seq: str) -> httpx.Response:
    return await client.post("/jobs", json={"sequence": seq, "shots": 20}, headers=headers)


@pytest.mark.anyio
async def test_fresh_credential_is_the_user(client: httpx.AsyncClient, sequence_json: str) -> None:
    response = await submit(client, cred(), sequence_json)
    assert response.status_code == 200, response.text
    job = response.json()
    assert job["user_id"] == str(os.getuid())
    client.auth = FreshCredential()
    done = await wait_for_status(client, job["id"])
    assert sum(json.loads(done["results"])["counter"].values()) == 20


@pytest.mark.anyio
async def test_missing_credential_is_401(client: httpx.AsyncClient, sequence_json: str) -> None:
    response = await submit(client, {}, sequence_json)
    assert response.status_code == 401
    assert "X-Munge-Cred" in response.json()["detail"]


@pytest.mark.anyio
async def test_replayed_credential_is_401(client: httpx.AsyncClient, sequence_json: str) -> None:
    headers = cred()
    assert (await client.get("/jobs", headers=headers)).status_code == 200
    response = await submit(client, headers, sequence_json)
    assert response.status_code == 401
    assert "replayed" in response.json()["detail"]


@pytest.mark.anyio
async def test_invalid_credential_is_401(client: httpx.AsyncClient, sequence_json: str) -> None:
    response = await submit(client, {"X-Munge-Cred": GARBAGE}, sequence_json)
    assert response.status_code == 401
    assert response.json()["rule"] == "auth"


@pytest.mark.anyio
async def test_other_uid_is_a_normal_user(client: httpx.AsyncClient, sequence_json: str) -> None:
    session = {"user_id": "0", "slurm_job_id": "7"}
    assert (await client.post("/sessions", json=session, headers=cred())).status_code == 200
    root_job = (await submit(client, cred(), sequence_json)).json()

    for method, path, body in [
        ("POST", "/sessions", session),
        ("GET", "/sessions", None),
        ("POST", "/accessible", {"is_accessible": False}),
        ("POST", "/admin/drain", None),
    ]:
        response = await client.request(method, path, json=body, headers=nobody_cred())
        assert response.status_code == 403, (path, response.text)

    own = await submit(client, nobody_cred(), sequence_json)
    assert own.status_code == 200 and own.json()["user_id"] == NOBODY
    for method, path in [
        ("GET", f"/jobs/{root_job['id']}"),
        ("GET", f"/jobs/{root_job['id']}/logs"),
        ("POST", f"/jobs/{root_job['id']}/cancel"),
    ]:
        response = await client.request(method, path, headers=nobody_cred())
        assert response.status_code == 404, (path, response.text)
    listed = (await client.get("/jobs", headers=nobody_cred())).json()
    assert [job["id"] for job in listed] == [own.json()["id"]]
