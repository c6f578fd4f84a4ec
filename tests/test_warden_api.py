"""Warden's newer API over HTTP: QPU slots, session deadlines and their reaper, ``/status``,
``/accounting`` and QRMI's resource status (docs/scheduler.md, "Warden compatibility")."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest

from tests.support.identities import USER
from tests.support.in_process import Clients, in_process, scheduler_config
from tests.support.polling import apoll_until, wait_for_status

pytestmark = pytest.mark.anyio

SESSION = "X-Warden-Session"


async def open_session(admin: httpx.AsyncClient, job: str, slots: int = 1) -> httpx.Response:
    """What the Slurm prolog (QRMI's acquire) sends."""
    body = {"user_id": USER, "scheduler_job_id": job, "qpu_slots": slots}
    return await admin.post("/sessions", json=body)


async def submit(api: Clients, sequence: str, session_id: str, shots: int = 20) -> dict:
    response = await api.user.post(
        "/jobs", json={"sequence": sequence, "shots": shots}, headers={SESSION: session_id}
    )
    assert response.status_code == 200, response.text
    return response.json()


async def test_slots_are_unmanaged_by_default(api: Clients) -> None:
    """No qpu_slots_total: no limit, and /qpu-slots says so with 404 as Warden does."""
    missing = await api.anonymous.get("/qpu-slots")
    assert missing.status_code == 404 and missing.json()["rule"] == "qpu_slots_total"
    assert (await open_session(api.admin, "1", slots=1024)).status_code == 200
    accessible = (await api.anonymous.get("/accessible")).json()
    assert accessible == {"is_accessible": True, "message": ""}  # as before slots existed


async def test_sessions_hold_qpu_slots(tmp_path: Path) -> None:
    async with in_process(scheduler_config(tmp_path, qpu_slots_total=4)) as api:
        first = await open_session(api.admin, "1", slots=3)
        assert first.status_code == 200 and first.json()["qpu_slots"] == 3
        slots = {"qpu_slots_total": 4, "qpu_slots_used": 3, "qpu_slots_available": 1}
        assert (await api.anonymous.get("/qpu-slots")).json() == slots
        assert (await api.anonymous.get("/accessible")).json() == {
            "is_accessible": True,
            "message": "",
            **slots,
        }

        full = await open_session(api.admin, "2", slots=2)
        assert full.status_code == 409 and full.json()["rule"] == "qpu_slots_total"
        retried = await open_session(api.admin, "1", slots=3)  # the prolog's retry
        assert retried.json()["id"] == first.json()["id"]
        changed = await open_session(api.admin, "1", slots=2)
        assert changed.status_code == 409 and changed.json()["rule"] == "qpu_slots"

        await api.admin.delete("/sessions", headers={SESSION: first.json()["id"]})
        assert (await api.anonymous.get("/qpu-slots")).json()["qpu_slots_available"] == 4
        assert (await open_session(api.admin, "2", slots=4)).status_code == 200


async def test_reaper_revokes_a_session_past_its_lifetime(
    tmp_path: Path, sequence_json: str
) -> None:
    """The reaper task revokes it on its own; its waiting job is canceled and says why."""
    config = scheduler_config(tmp_path, session_max_lifetime_s=0.5, session_reaper_interval_s=0.05)
    async with in_process(config) as api:
        await api.admin.post("/admin/drain")  # the job waits: revocation cancels it
        session = (await open_session(api.admin, "7")).json()
        assert session["expires_at"] is not None and session["idle_expires_at"] is None
        job = await submit(api, sequence_json, session["id"])

        async def revoked() -> dict | None:
            view = (await api.user.get(f"/sessions/{session['id']}")).json()
            return view if view["revoked_at"] else None

        view = await apoll_until(revoked, "the reaper to revoke the session", timeout=30)
        assert view["revocation_reason"] == view["revoke_reason"] == "max_lifetime_expired"
        canceled = await wait_for_status(api.user, job["id"], ("CANCELED",))
        assert "max_lifetime_expired" in canceled["error"]
        logs = (await api.user.get(f"/jobs/{job['id']}/logs")).json()["logs"]
        assert "max_lifetime_expired" in logs
        refused = await api.user.post(
            "/jobs", json={"sequence": sequence_json, "shots": 1}, headers={SESSION: session["id"]}
        )
        assert refused.status_code == 403 and "max_lifetime_expired" in refused.json()["detail"]


async def test_idle_deadline_waits_for_active_jobs(tmp_path: Path, sequence_json: str) -> None:
    """Past its idle deadline a session lives on while a job of it is active; a submission
    moves the deadline on. The scheduler's clock is moved instead of waiting."""
    config = scheduler_config(tmp_path, session_idle_timeout_s=60, session_reaper_interval_s=3600)
    async with in_process(config) as api:
        sched = api.scheduler
        await api.admin.post("/admin/drain")
        session = (await open_session(api.admin, "8")).json()
        first = await submit(api, sequence_json, session["id"])
        wall = sched.clock
        sched.clock = lambda: wall() + 30
        second = await submit(api, sequence_json, session["id"])
        moved = (await api.user.get(f"/sessions/{session['id']}")).json()["idle_expires_at"]
        assert datetime.fromisoformat(moved) - datetime.fromisoformat(
            session["idle_expires_at"]
        ) > timedelta(seconds=20)

        sched.clock = lambda: wall() + 120  # past the moved idle deadline
        assert await sched.expire_sessions() == 0  # its jobs still wait
        for job in (first, second):
            await api.user.post(f"/jobs/{job['id']}/cancel")
        assert await sched.expire_sessions() == 1
        view = (await api.user.get(f"/sessions/{session['id']}")).json()
        assert view["revocation_reason"] == "idle_timeout"


async def test_session_lookup_and_filters(api: Clients) -> None:
    session = (await open_session(api.admin, "9")).json()
    assert (await api.user.get(f"/sessions/{session['id']}")).json()["scheduler_job_id"] == "9"
    assert (await api.other.get(f"/sessions/{session['id']}")).status_code == 404
    await open_session(api.admin, "10")
    found = await api.admin.get("/sessions", params={"scheduler_job_id": "9", "active": True})
    assert [s["id"] for s in found.json()] == [session["id"]]
    assert (await api.admin.get("/sessions", params={"user_id": "4242"})).json() == []


async def test_status_is_a_live_snapshot(api: Clients, sequence_json: str) -> None:
    assert (await api.user.get("/status")).status_code == 403
    await api.admin.post("/admin/drain")
    session = (await open_session(api.admin, "11")).json()
    await submit(api, sequence_json, session["id"])
    status = (await api.admin.get("/status")).json()
    assert status["pending_jobs_count"] == 1 and status["current_job"] is None
    assert [(s["id"], s["slurm_job_id"]) for s in status["open_sessions"]] == [
        (session["id"], "11")
    ]


async def test_accounting_reports(api: Clients, sequence_json: str) -> None:
    session = (await open_session(api.admin, "12")).json()
    job = await submit(api, sequence_json, session["id"], shots=30)
    await wait_for_status(api.user, job["id"])
    await api.admin.delete(f"/sessions/{session['id']}")

    users = (await api.admin.get("/accounting")).json()
    assert users["pagination"] == {"total": 1, "start": 0, "end": 1}
    [row] = users["data"]
    assert row["user_id"] == USER and row["sessions"]["count"] == 1
    assert row["jobs"]["count"] == 1 and row["jobs"]["shots"] == 30
    assert row["jobs"]["per_status"]["DONE"]["count"] == 1

    sessions = (await api.admin.get("/accounting/sessions", params={"slurm_job_id": "12"})).json()
    assert [(s["id"], s["jobs_count"]) for s in sessions["data"]] == [(session["id"], 1)]
    jobs = (await api.admin.get("/accounting/jobs", params={"status": ["DONE"]})).json()
    [accounted] = jobs["data"]
    assert accounted["id"] == job["id"] and accounted["slurm_job_id"] == "12"
    assert accounted["shots"] == accounted["shots_done"] == 30

    before = {"ended_before": "2000-01-01T00:00:00Z"}
    empty = (await api.admin.get("/accounting/jobs", params=before)).json()
    assert empty == {"data": [], "pagination": {"total": 0, "start": 0, "end": 0}}
    page = (await api.admin.get("/accounting/sessions", params={"offset": 5})).json()
    assert page["pagination"] == {"total": 1, "start": 1, "end": 1}
    assert (await api.user.get("/accounting")).status_code == 403
    assert (await api.admin.get("/admin/accounting")).json()["rows"][0]["shots"] == 30


async def test_resource_status_has_qrmi_fields(api: Clients, sequence_json: str) -> None:
    """What QRMI's status() reports for a resource, and a job's queue position."""
    idle = (await api.anonymous.get("/resource-status")).json()
    assert idle == {
        "status": "online",
        "status_reason": None,
        "healthy": True,
        "busy": False,
        "capacity": None,
        "pending_job_count": 0,
        "queue_position": None,
    }
    await api.admin.post("/admin/drain")
    session = (await open_session(api.admin, "13")).json()
    job = await submit(api, sequence_json, session["id"])
    mine = (await api.user.get("/resource-status", params={"job_id": job["id"]})).json()
    assert (mine["status"], mine["status_reason"]) == ("paused", "draining")
    assert mine["busy"] is True and mine["pending_job_count"] == 1
    assert mine["queue_position"] == 1
    theirs = await api.other.get("/resource-status", params={"job_id": job["id"]})
    assert theirs.status_code == 404
    await api.admin.post("/accessible", json={"is_accessible": False, "message": "upgrade"})
    closed = (await api.anonymous.get("/resource-status")).json()
    assert (closed["status"], closed["status_reason"]) == ("offline", "maintenance")


def test_older_database_gains_the_session_deadlines(tmp_path: Path) -> None:
    """A sessions table from before the deadlines gets their columns; its rows read back."""
    import sqlalchemy as sa

    from qhpc_lab.scheduler.store import Store

    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "CREATE TABLE sessions (id VARCHAR(36) PRIMARY KEY, user_id VARCHAR(64) NOT NULL,"
                " slurm_job_id VARCHAR(64), qpu_slots INTEGER NOT NULL, created_at FLOAT NOT NULL,"
                " revoked_at FLOAT, revoke_reason TEXT)"
            )
        )
        conn.execute(sa.text("INSERT INTO sessions VALUES ('s1', '1000', '5', 2, 1.0, NULL, NULL)"))
    engine.dispose()
    store = Store(url)
    try:
        [old] = store.list_sessions()
        assert (old.id, old.idle_expires_at, old.expires_at) == ("s1", None, None)
        store.extend_idle_deadline("s1", 99.0)
        assert store.get_session("s1").idle_expires_at == 99.0
    finally:
        store.close()
