"""Quotas (docs/policy.md, "Quotas"): the pure rule, the store's atomic check on SQLite and
PostgreSQL, the API's refusal and the operator's controls."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from qhpc_lab.client import RefusedError, SchedulerTarget, call
from qhpc_lab.programs import Program
from qhpc_lab.scheduler.auth import make_token
from qhpc_lab.scheduler.quotas import (
    InvalidQuota,
    Quota,
    QuotaExceeded,
    charged,
    cost,
    period_bounds,
    refusal,
)
from qhpc_lab.scheduler.store import QuotaAdmission, Store
from tests.support.admin_cli import qhpc_admin
from tests.support.daemons import daemon
from tests.support.identities import SECRET, USER, auth_header
from tests.support.in_process import in_process, scheduler_config
from tests.support.polling import wait_for_status
from tests.support.store import add_job

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
TIME_PER_SHOT_S = 0.0005
"""The ``test`` profile's."""


def _at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat()


# -- the pure rule ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("period", "now", "start", "resets_at"),
    [
        ("day", "2026-12-02T23:59:59", "2026-12-02T00:00:00", "2026-12-03T00:00:00"),
        ("day", "2026-12-03T00:00:00", "2026-12-03T00:00:00", "2026-12-04T00:00:00"),
        ("week", "2026-12-02T10:00:00", "2026-11-30T00:00:00", "2026-12-07T00:00:00"),
        ("week", "2026-12-06T23:59:59", "2026-11-30T00:00:00", "2026-12-07T00:00:00"),
        ("month", "2026-12-31T23:59:59", "2026-12-01T00:00:00", "2027-01-01T00:00:00"),
        ("month", "2028-02-29T12:00:00", "2028-02-01T00:00:00", "2028-03-01T00:00:00"),
        ("month", "2026-01-01T00:00:00", "2026-01-01T00:00:00", "2026-02-01T00:00:00"),
        ("3600s", "2026-12-02T10:30:00", "2026-12-02T10:00:00", "2026-12-02T11:00:00"),
        ("86400s", "2026-12-02T10:30:00", "2026-12-02T00:00:00", "2026-12-03T00:00:00"),
    ],
)
def test_period_bounds_are_utc_calendar_or_epoch_anchored(
    period: str, now: str, start: str, resets_at: str
) -> None:
    quota = Quota("user", USER, "shots", 10, period)
    bounds = period_bounds(quota, _at(now))
    assert (_iso(bounds[0]), _iso(bounds[1])) == (_iso(_at(start)), _iso(_at(resets_at)))


def test_refusal_allows_reaching_the_budget_exactly() -> None:
    now = _at("2026-12-02T10:00:00")
    shots = Quota("user", USER, "shots", 1000, "month")
    assert refusal(shots, 900, 100, now) is None
    refused = refusal(shots, 900, 101, now)
    assert refused is not None
    assert refused.resets_at == _at("2027-01-01T00:00:00")
    assert refused.message == (
        f"quota for user {USER}: 900 of 1000 shots used this month; this job needs 101; "
        "resets at 2027-01-01T00:00Z"
    )
    seconds = Quota("account", "physics", "qpu_seconds", 3600, "day")
    # sums of device times are floats: 0.1 + 0.2 is not 0.3, and must still fit a 0.3 budget
    assert refusal(Quota("user", USER, "qpu_seconds", 0.3, "day"), 0.1, 0.2, now) is None
    refused = refusal(seconds, 3400, 400, now)
    assert refused is not None and refused.fields()["used"] == 3400
    assert refused.message == (
        "quota for account physics: 3400 of 3600 QPU-seconds used this day; this job needs ~400; "
        "resets at 2026-12-03T00:00Z"
    )
    assert cost("qpu_seconds", 800_000, TIME_PER_SHOT_S) == 400
    assert cost("shots", 800, TIME_PER_SHOT_S) == 800
    assert refusal(Quota("user", USER, "shots", 0, "day"), 0, 0, now) is None
    with pytest.raises(InvalidQuota) as bad:
        Quota("group", USER, "shots", 1).checked()
    assert bad.value.setting == "kind"
    with pytest.raises(InvalidQuota):
        Quota("user", USER, "shots", 1, "fortnight").checked()


# -- the store: use, reservations and concurrent submissions ------------------------------


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path):
    url = (
        request.getfixturevalue("fresh_postgres_url")
        if request.param == "postgres"
        else f"sqlite:///{tmp_path / 'store.db'}"
    )
    opened = Store(url)
    yield opened
    opened.close()


def test_use_counts_reservations_and_releases_what_a_cancelled_job_did_not_use(
    store: Store,
) -> None:
    now = _at("2026-12-02T10:00:00")
    store.set_quota(Quota("user", USER, "shots", 1000, "day"))
    store.set_quota(Quota("user", USER, "qpu_seconds", 0.5, "day"))
    admit = QuotaAdmission(None, TIME_PER_SHOT_S)
    done = add_job(store, shots=300, created_at=now, admission=admit)
    store.mark_running(done.id, now)
    store.record_chunk(done.id, {"00": 300}, 300, 300 * TIME_PER_SHOT_S, 1.0, now=now)
    queued = add_job(store, shots=400, created_at=now, admission=admit)
    add_job(store, shots=400, created_at=now - 86400)  # yesterday's: another period
    uses = {q.unit: used for q, used in store.quota_uses(now, TIME_PER_SHOT_S)}
    assert uses == {"qpu_seconds": pytest.approx(0.35), "shots": 700}
    for unit, used in uses.items():  # the store's SQL sum is the pure rule's
        rows = [store.get_job(job.id) for job in (done, queued)]
        assert used == pytest.approx(
            sum(
                charged(
                    unit,
                    r.shots,
                    r.shots_done,
                    r.qpu_seconds,
                    r.status == "PENDING",
                    TIME_PER_SHOT_S,
                )
                for r in rows
                if r is not None
            )
        )
    with pytest.raises(QuotaExceeded) as exceeded:
        add_job(store, shots=301, created_at=now, admission=admit)
    assert exceeded.value.refusal.quota.unit == "qpu_seconds"  # 0.5005 QPU-s > 0.5
    store.finish(queued.id, "CANCELED", now=now)  # it ran no shot: its 400 are given back
    add_job(store, shots=700, created_at=now, admission=admit)
    assert {q.unit: u for q, u in store.quota_uses(now, TIME_PER_SHOT_S)}["shots"] == 1000
    assert store.delete_quota("user", USER, "shots") and not store.delete_quota(
        "user", "x", "shots"
    )


def test_account_quota_spans_the_sessions_of_that_account(store: Store) -> None:
    now = _at("2026-12-02T10:00:00")
    store.set_quota(Quota("account", "physics", "shots", 500, "week"))
    alice = store.create_session("1000", "11", 1, now, slurm_account="physics")
    bob = store.create_session("1001", "12", 1, now, slurm_account="physics")
    other = store.create_session("1002", "13", 1, now, slurm_account="chemistry")
    for session, shots in ((alice, 200), (bob, 300), (other, 400)):
        admit = QuotaAdmission(session.slurm_account, TIME_PER_SHOT_S)
        add_job(
            store,
            user=session.user_id,
            shots=shots,
            created_at=now,
            session_id=session.id,
            admission=admit,
        )
    with pytest.raises(QuotaExceeded, match="quota for account physics: 500 of 500 shots"):
        add_job(
            store,
            user="1000",
            shots=1,
            created_at=now,
            session_id=alice.id,
            admission=QuotaAdmission("physics", TIME_PER_SHOT_S),
        )
    assert store.accounts_of("1000") == ("physics",)
    mine = store.quota_uses(now, TIME_PER_SHOT_S, "1002", store.accounts_of("1002"))
    assert mine == []  # chemistry has no quota


def test_concurrent_submissions_cannot_both_pass_a_nearly_spent_budget(store: Store) -> None:
    """Eight threads submit at once 100 shots each under a 450-shot budget: four fit."""
    now = _at("2026-12-02T10:00:00")
    store.set_quota(Quota("user", USER, "shots", 450, "day"))
    admit = QuotaAdmission(None, TIME_PER_SHOT_S)
    outcomes: list[str] = []
    start = threading.Barrier(8)

    def submit() -> None:
        start.wait(10)
        try:
            add_job(store, shots=100, created_at=now, admission=admit)
            outcomes.append("queued")
        except QuotaExceeded:
            outcomes.append("refused")

    threads = [threading.Thread(target=submit) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(outcomes) == ["queued"] * 4 + ["refused"] * 4
    assert store.quota_uses(now, TIME_PER_SHOT_S)[0][1] == 400


# -- the API ------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("backend", BACKENDS)
async def test_the_api_refuses_past_the_budget_and_shows_the_use(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path, sequence_json: str
) -> None:
    db = {} if backend == "sqlite" else {"db": request.getfixturevalue("fresh_postgres_url")}
    async with in_process(scheduler_config(tmp_path, **db)) as api:
        quota = {"kind": "account", "subject": "physics", "unit": "shots", "budget": 500}
        assert (await api.user.put("/admin/quotas", json=quota)).status_code == 403
        bad = await api.admin.put("/admin/quotas", json={**quota, "period": "fortnight"})
        assert bad.status_code == 422
        listed = await api.admin.put("/admin/quotas", json={**quota, "period": "day"})
        assert listed.status_code == 200, listed.text
        assert listed.json()["quotas"][0]["used"] == 0
        session = (
            await api.admin.post(
                "/sessions",
                json={"user_id": USER, "slurm_job_id": "77", "slurm_account": "physics"},
            )
        ).json()
        assert session["slurm_account"] == "physics"
        headers = {"X-Warden-Session": session["id"]}

        async def submit(shots: int) -> httpx.Response:
            body = {"sequence": sequence_json, "shots": shots}
            return await api.user.post("/jobs", json=body, headers=headers)

        first = await submit(200)
        assert first.status_code == 200, first.text
        # three at once for the 300 shots left: two fit, whichever they are
        answers = await asyncio.gather(submit(150), submit(150), submit(150))
        assert sorted(a.status_code for a in answers) == [200, 200, 403]
        refused = next(a for a in answers if a.status_code == 403).json()
        assert refused["rule"] == "quota"
        assert {k: refused[k] for k in ("kind", "subject", "unit", "budget", "used")} == {
            "kind": "account",
            "subject": "physics",
            "unit": "shots",
            "budget": 500,
            "used": 500,
        }
        assert refused["requested"] == 150 and refused["resets_at"].endswith("T00:00:00Z")
        assert refused["detail"].startswith("quota for account physics: 500 of 500 shots used")
        sessionless = await api.user.post("/jobs", json={"sequence": sequence_json, "shots": 5})
        assert sessionless.status_code == 403  # charged to the account of the user's session
        assert sessionless.json()["subject"] == "physics"
        mine = (await api.user.get("/quotas")).json()["quotas"]
        assert [(q["subject"], q["used"], q["remaining"]) for q in mine] == [("physics", 500, 0)]
        assert (await api.other.get("/quotas")).json() == {"quotas": []}
        gone = await api.admin.delete("/admin/quotas/account/physics/shots")
        assert gone.status_code == 200 and gone.json() == {"quotas": []}
        missing = await api.admin.delete("/admin/quotas/account/physics/shots")
        assert missing.status_code == 404
        assert (await submit(150)).status_code == 200
        metrics = (await api.anonymous.get("/metrics")).text
        assert 'qhpc_quota_refusals_total{kind="account",unit="shots"} 2.0' in metrics


def test_client_and_admin_cli_show_the_quota(tmp_path: Path, sequence_json: str) -> None:
    """A real daemon: the operator sets a QPU-seconds quota with ``qhpc admin quota``, the
    client's refusal says budget, use and reset, and ``qhpc admin accounting`` shows use
    against budget."""
    admin_token = make_token(SECRET, 0, admin=True)
    with daemon(tmp_path) as server:
        budget = str(1000 * TIME_PER_SHOT_S)  # 0.5 QPU-s: 1000 shots
        set_ = qhpc_admin(
            server.url,
            admin_token,
            "quota",
            "set",
            "user",
            USER,
            "qpu_seconds",
            budget,
            "--period",
            "week",
        )
        assert set_.returncode == 0, set_.stdout + set_.stderr
        target = SchedulerTarget(
            "lab", server.url, origin="test", token=make_token(SECRET, USER), auth="token"
        )
        try:
            job = call(target.submit(Program("pulser", sequence_json, 800), None))
            with pytest.raises(RefusedError) as refused:
                call(target.submit(Program("pulser", sequence_json, 400), None))
        finally:
            call(target.aclose())
        assert refused.value.status == 403 and refused.value.rule == "quota"
        message = str(refused.value)
        assert f"quota for user {USER}: 0.4 of 0.5 QPU-seconds used this week" in message
        assert "this job needs ~0.2; resets at " in message and message.endswith("T00:00Z")
        wait = wait_for_status(
            httpx.AsyncClient(base_url=server.url, headers=auth_header(USER)), int(job.id)
        )
        assert asyncio.run(wait)["status"] == "DONE"
        accounting = qhpc_admin(server.url, admin_token, "accounting").stdout.splitlines()
        assert accounting[0].split()[0] == "user" and accounting[-2].split()[:4] == [
            "quota",
            "unit",
            "used",
            "budget",
        ]
        assert accounting[-1].split()[2:6] == ["qpu_seconds", "0.4", "0.5", "80.0%"]
        removed = qhpc_admin(server.url, admin_token, "quota", "rm", "user", USER, "qpu_seconds")
        assert removed.stdout.strip() == "no quotas"
