"""Reservations through the API and ``qhpc admin`` against a running scheduler."""

from __future__ import annotations

import os
import time
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from qhpc_lab.hpc import slurm
from qhpc_lab.hpc.slurm import HookConfig
from qhpc_lab.jupyter.server.service import device_view
from qhpc_lab.scheduler.auth import make_token
from tests.support.admin_cli import qhpc_admin
from tests.support.daemons import daemon
from tests.support.identities import OTHER, SECRET, USER, auth_header
from tests.support.polling import poll_until


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


def _submit(url: str, uid: str, session: str, sequence: str) -> dict:
    answer = httpx.post(
        f"{url}/jobs",
        json={"sequence": sequence, "shots": 50},
        headers={**auth_header(uid), "X-Warden-Session": session},
        timeout=120,
    )
    assert answer.status_code == 200, answer.text
    return answer.json()


def _job(url: str, uid: str, job_id: int) -> dict:
    return httpx.get(f"{url}/jobs/{job_id}", headers=auth_header(uid), timeout=30).json()


def test_a_reserved_qpu_runs_its_owner_and_others_wait(
    tmp_path: Path, sequence_json: str, munged: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An account's reservation made with ``qhpc admin``: the Slurm prolog's session carries
    the job's account, so its jobs run inside; another user's job waits until the reservation
    is canceled, or ends."""
    token, admin = make_token(SECRET, 0, admin=True), auth_header("0", admin=True)
    job = slurm.SlurmJob("43", os.getuid(), "qpu:1", ("N/A", "N/A"), "UNLIMITED")
    monkeypatch.setattr(slurm, "job_details", lambda *_: job)
    with daemon(tmp_path, "--auth", "munge,token") as server:
        me = str(os.getuid())
        hooks = HookConfig(scheduler_url=server.url, run_dir=str(tmp_path / "run"), log_file="")
        environ = {
            "SLURM_JOB_ID": "43",
            "SLURM_JOB_UID": me,
            "SLURM_JOB_GID": str(os.getgid()),
            "SLURM_JOB_ACCOUNT": "chem",
        }
        [record] = slurm.prolog(hooks, environ)
        assert record is not None and record.session, record
        mine = httpx.get(f"{server.url}/sessions/{record.session}", headers=admin).json()
        assert mine["slurm_account"] == "chem", mine
        body = {"user_id": USER, "slurm_job_id": "44"}
        theirs = httpx.post(f"{server.url}/sessions", json=body, headers=admin).json()["id"]

        end = str(time.time() + 600)
        made = qhpc_admin(server.url, token, "reserve", "--account", "chem", "--end", end)
        assert made.returncode == 0, made.stdout + made.stderr
        reservation_id = int(made.stdout.split()[0])
        shown = httpx.get(f"{server.url}/device", timeout=30).json()["next_reservation"]
        assert shown["owner"] == "chem" and shown["active"] and shown["id"] == reservation_id

        waiting = _submit(server.url, USER, theirs, sequence_json)
        owner = _submit(server.url, me, record.session, sequence_json)
        poll_until(lambda: _job(server.url, me, owner["id"])["status"] == "DONE", "owner done")
        assert _job(server.url, USER, waiting["id"])["shots_done"] == 0  # kept out

        listed = qhpc_admin(server.url, token, "reservations").stdout
        assert listed.split()[:3] == [str(reservation_id), "account", "chem:"], listed
        assert "(now)" in listed
        assert qhpc_admin(server.url, token, "unreserve", str(reservation_id)).returncode == 0
        poll_until(lambda: _job(server.url, USER, waiting["id"])["status"] == "DONE", "done")

        # A short window: the other user's job starts when it ends (the dispatcher wakes then).
        ends = time.time() + 1.5
        window = {"owner_kind": "user", "owner": OTHER, "starts_at": 0, "ends_at": ends}
        made = httpx.post(f"{server.url}/admin/reservations", json=window, headers=admin)
        assert made.status_code == 201, made.text
        later = _submit(server.url, USER, theirs, sequence_json)
        poll_until(lambda: _job(server.url, USER, later["id"])["status"] == "DONE", "after")
        started = datetime.fromisoformat(_job(server.url, USER, later["id"])["started_at"])
        assert started.timestamp() >= ends
        assert httpx.get(f"{server.url}/device", timeout=30).json()["next_reservation"] is None
        slurm.epilog(hooks, environ)


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
