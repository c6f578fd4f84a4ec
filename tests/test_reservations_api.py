"""Reservations through the API and ``qhpc admin`` against a running scheduler."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from qhpc_lab.jupyter.server.service import device_view
from qhpc_lab.scheduler.auth import make_token
from tests.conftest import (
    OTHER,
    SECRET,
    USER,
    auth_header,
    daemon,
    poll_until,
    wait_for_status,
)
from tests.test_admin import _qhpc_admin


@pytest.mark.anyio
async def test_reservations_are_validated_listed_and_canceled(api) -> None:
    now = time.time()
    window = {"owner_kind": "user", "owner": OTHER, "starts_at": now + 60, "ends_at": now + 120}
    assert (await api.user.post("/admin/reservations", json=window)).status_code == 403
    made = await api.admin.post("/admin/reservations", json=window)
    assert made.status_code == 201, made.text
    reservation = made.json()
    assert reservation["owner"] == OTHER and not reservation["active"]
    assert reservation["created_by"] == "0"

    clash = {**window, "starts_at": now + 100, "ends_at": now + 200}
    refused = await api.admin.post("/admin/reservations", json=clash)
    assert refused.status_code == 409 and refused.json()["rule"] == "reservation_overlap"
    for bad in (
        {**window, "ends_at": now + 30},  # before its start
        {**window, "starts_at": now - 120, "ends_at": now - 60},  # in the past
        {**window, "owner_kind": "group"},
        {**window, "starts_at": "tomorrow"},
    ):
        assert (await api.admin.post("/admin/reservations", json=bad)).status_code == 422
    iso = {**window, "starts_at": datetime.fromtimestamp(now + 300).isoformat() + "Z"}
    iso["ends_at"] = iso["starts_at"].replace("Z", "+01:00")  # an hour earlier: refused
    assert (await api.admin.post("/admin/reservations", json=iso)).status_code == 422

    listed = (await api.admin.get("/admin/reservations")).json()
    assert [r["id"] for r in listed] == [reservation["id"]]
    device = (await api.anonymous.get("/device")).json()
    assert device["next_reservation"]["id"] == reservation["id"]
    gone = await api.admin.delete(f"/admin/reservations/{reservation['id']}")
    assert gone.status_code == 200 and gone.json()["id"] == reservation["id"]
    assert (await api.admin.delete(f"/admin/reservations/{reservation['id']}")).status_code == 404
    assert (await api.admin.get("/admin/reservations")).json() == []
    assert (await api.anonymous.get("/device")).json()["next_reservation"] is None


def _submit(url: str, uid: str, sequence: str, shots: int) -> dict:
    answer = httpx.post(
        f"{url}/jobs",
        json={"sequence": sequence, "shots": shots},
        headers=auth_header(uid),
        timeout=120,
    )
    assert answer.status_code == 200, answer.text
    return answer.json()


def _job(url: str, uid: str, job_id: int) -> dict:
    return httpx.get(f"{url}/jobs/{job_id}", headers=auth_header(uid), timeout=30).json()


def test_a_reserved_qpu_runs_its_owner_and_others_wait(tmp_path: Path, sequence_json: str) -> None:
    token = make_token(SECRET, 0, admin=True)
    with daemon(tmp_path) as server:
        end = time.time() + 600
        made = _qhpc_admin(server.url, token, "reserve", "--user", OTHER, "--end", str(end))
        assert made.returncode == 0, made.stdout + made.stderr
        reservation_id = int(made.stdout.split()[0])
        device = httpx.get(f"{server.url}/device", timeout=30).json()
        shown = device["next_reservation"]
        assert shown["owner"] == OTHER and shown["active"] and shown["id"] == reservation_id

        waiting = _submit(server.url, USER, sequence_json, 50)
        owner = _submit(server.url, OTHER, sequence_json, 50)
        poll_until(lambda: _job(server.url, OTHER, owner["id"])["status"] == "DONE", "owner done")
        assert _job(server.url, USER, waiting["id"])["shots_done"] == 0  # kept out

        listed = _qhpc_admin(server.url, token, "reservations").stdout
        assert listed.split()[:2] == [str(reservation_id), "user"] and "(now)" in listed
        assert _qhpc_admin(server.url, token, "unreserve", str(reservation_id)).returncode == 0
        poll_until(lambda: _job(server.url, USER, waiting["id"])["status"] == "DONE", "done")

        # A short window: the non-owner's job starts when it ends (the dispatcher wakes then).
        ends = time.time() + 1.5
        window = {"owner_kind": "user", "owner": OTHER, "starts_at": 0, "ends_at": ends}
        made = httpx.post(
            f"{server.url}/admin/reservations", json=window, headers=auth_header("0", True)
        )
        assert made.status_code == 201, made.text
        later = _submit(server.url, USER, sequence_json, 50)
        poll_until(lambda: _job(server.url, USER, later["id"])["status"] == "DONE", "after")
        started = datetime.fromisoformat(_job(server.url, USER, later["id"])["started_at"])
        assert started.timestamp() >= ends
        assert httpx.get(f"{server.url}/device", timeout=30).json()["next_reservation"] is None


@pytest.mark.anyio
async def test_an_account_reservation_runs_the_jobs_of_that_accounts_sessions(
    api, sequence_json: str
) -> None:
    body = {"user_id": USER, "slurm_job_id": "77", "slurm_account": "chem"}
    session = (await api.admin.post("/sessions", json=body)).json()
    assert session["slurm_account"] == "chem"
    window = {
        "owner_kind": "account",
        "owner": "chem",
        "starts_at": 0,
        "ends_at": time.time() + 600,
    }
    assert (await api.admin.post("/admin/reservations", json=window)).status_code == 201
    job = {"sequence": sequence_json, "shots": 50}
    kept_out = (await api.other.post("/jobs", json=job)).json()
    header = {"X-Warden-Session": session["id"]}
    mine = (await api.user.post("/jobs", json=job, headers=header)).json()
    await wait_for_status(api.user, mine["id"], timeout=120)
    assert (await api.other.get(f"/jobs/{kept_out['id']}")).json()["shots_done"] == 0


def test_the_sidebar_sees_whom_the_qpu_is_reserved_for_not_who_reserved_it() -> None:
    shown = device_view(
        {
            "state": "ONLINE",
            "next_reservation": {
                "owner_kind": "user",
                "owner": "1001",
                "starts_at": 1.0,
                "ends_at": 2.0,
                "active": False,
                "created_by": "0",
                "id": 3,
            },
        }
    )
    assert shown["next_reservation"] == {
        "owner_kind": "user",
        "owner": "1001",
        "starts_at": 1.0,
        "ends_at": 2.0,
    }
