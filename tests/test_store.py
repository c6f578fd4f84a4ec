"""The store keeps the same promises on SQLite and on a real PostgreSQL server.

Exactly-once execution rests on these transactions (docs/scheduler.md), so each one is checked on
both back ends: a site switching ``QHPC_DB`` to PostgreSQL must not change behaviour.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from qhpc_lab.scheduler.store import JobRow, ReservationOverlap, Store
from tests.support.identities import USER
from tests.support.in_process import in_process, scheduler_config
from tests.support.polling import wait_for_status
from tests.support.store import add_job

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """An empty store on a fresh SQLite file or a fresh PostgreSQL database."""
    if request.param == "postgres":
        url = request.getfixturevalue("fresh_postgres_url")
    else:
        url = f"sqlite:///{tmp_path / 'store.db'}"
    opened = Store(url)
    yield opened
    opened.close()


def run_to_done(store: Store, job: JobRow) -> JobRow:
    """Start a job and record one chunk of all its shots."""
    store.mark_running(job.id, 1.0)
    row = store.record_chunk(job.id, {"00": job.shots}, job.shots, 0.1, 0.0)
    assert row is not None and row.status == "DONE"
    return row


# -- sessions -------------------------------------------------------------------------------


def test_session_is_idempotent_per_user_and_slurm_job(store: Store) -> None:
    first = store.create_session(USER, "42", 2)
    assert first.active and first.qpu_slots == 2 and first.slurm_job_id == "42"
    assert store.create_session(USER, "42", 2).id == first.id  # a retried prolog
    assert store.create_session("1001", "42", 1).id != first.id
    assert store.create_session(USER, "43", 1).id != first.id
    assert store.create_session(USER, None, 1).id != store.create_session(USER, None, 1).id
    store.revoke_session(first.id, "job ended")
    assert store.create_session(USER, "42", 2).id != first.id  # a new job reusing the id
    assert store.get_session(first.id) is not None
    assert store.get_session("no-such-session") is None


def test_revoke_cancels_only_pending_jobs_and_returns_their_ids(store: Store) -> None:
    session = store.create_session(USER, "7", 1)
    other = store.create_session(USER, "8", 1)
    queued = [add_job(store, session_id=session.id) for _ in range(2)]
    running = add_job(store, session_id=session.id)
    store.mark_running(running.id, 5.0)
    done = run_to_done(store, add_job(store, session_id=session.id))
    elsewhere = add_job(store, session_id=other.id)

    revoked, canceled = store.revoke_session(session.id, "Slurm job 7 ended")

    assert sorted(canceled) == [j.id for j in queued]
    assert not revoked.active and revoked.revoke_reason == "Slurm job 7 ended"
    for job in queued:
        row = store.get_job(job.id)
        assert row is not None and row.status == "CANCELED"
        assert row.error == "canceled: Slurm job 7 ended" and row.finished_at is not None
    assert store.get_job(running.id).status == "RUNNING"  # type: ignore[union-attr]
    assert store.get_job(done.id) == done
    assert store.get_job(elsewhere.id).status == "PENDING"  # type: ignore[union-attr]

    again, none = store.revoke_session(session.id, "twice")
    assert none == [] and again.revoked_at == revoked.revoked_at
    assert again.revoke_reason == "Slurm job 7 ended"


def test_list_sessions_by_activity(store: Store) -> None:
    kept = store.create_session(USER, "1", 1)
    gone = store.create_session(USER, "2", 1)
    store.revoke_session(gone.id, "ended")
    assert [s.id for s in store.list_sessions(active=True)] == [kept.id]
    assert [s.id for s in store.list_sessions(active=False)] == [gone.id]
    assert {s.id for s in store.list_sessions()} == {kept.id, gone.id}


# -- jobs -----------------------------------------------------------------------------------


def test_add_and_get_job(store: Store) -> None:
    job = add_job(store, name="ghz", variables={"omega": 1.5}, max_calibration_age_s=60.0)
    assert isinstance(job.id, int)
    assert (job.status, job.shots_done, job.counts, job.results) == ("PENDING", 0, {}, None)
    assert job.variables == {"omega": 1.5} and job.max_calibration_age_s == 60.0
    assert job.started_at is None and job.finished_at is None
    assert store.get_job(job.id) == job
    assert store.get_job(job.id + 1000) is None


def test_list_jobs_filters_by_user_and_status(store: Store) -> None:
    mine = [add_job(store) for _ in range(3)]
    theirs = add_job(store, user="1001")
    store.mark_running(mine[1].id, 1.0)

    assert [j.id for j in store.list_jobs()] == [theirs.id] + [j.id for j in reversed(mine)]
    assert [j.id for j in store.list_jobs(user_id=USER)] == [j.id for j in reversed(mine)]
    assert [j.id for j in store.list_jobs(user_id=USER, status="RUNNING")] == [mine[1].id]
    assert [j.id for j in store.list_jobs(status="PENDING")] == [theirs.id, mine[2].id, mine[0].id]
    assert len(store.list_jobs(limit=2)) == 2
    assert store.list_jobs(user_id="nobody") == []


def test_active_jobs_in_arrival_order(store: Store) -> None:
    jobs = [add_job(store) for _ in range(4)]
    store.mark_running(jobs[2].id, 1.0)
    run_to_done(store, jobs[1])
    store.finish(jobs[3].id, "CANCELED", "canceled by user")
    assert [j.id for j in store.active_jobs()] == [jobs[0].id, jobs[2].id]
    assert store.count_by_status() == {"PENDING": 1, "RUNNING": 1, "DONE": 1, "CANCELED": 1}


def test_mark_running_keeps_the_first_start(store: Store) -> None:
    job = add_job(store)
    first = store.mark_running(job.id, 100.0)
    assert first is not None and first.status == "RUNNING" and first.started_at == 100.0
    assert store.mark_running(job.id, 150.0) is None  # already running: no change
    assert store.requeue_running() == [job.id]
    again = store.mark_running(job.id, 200.0)  # after a restart
    assert again is not None and again.status == "RUNNING" and again.started_at == 100.0
    assert store.get_job(job.id) == again

    canceled = add_job(store)
    store.finish(canceled.id, "CANCELED", "canceled by user")
    assert store.mark_running(canceled.id, 300.0) is None
    after = store.get_job(canceled.id)
    assert after is not None and after.status == "CANCELED" and after.started_at is None


def test_record_chunk_merges_counts_and_finishes_at_the_requested_shots(store: Store) -> None:
    job = add_job(store, shots=250)
    store.mark_running(job.id, 1.0)

    first = store.record_chunk(job.id, {"00": 60, "11": 40}, 100, 0.05, 10.0)
    assert first is not None and first.status == "RUNNING" and first.results is None
    assert (first.shots_done, first.counts) == (100, {"00": 60, "11": 40})

    second = store.record_chunk(job.id, {"00": 50, "01": 50}, 100, 0.05, 30.0)
    assert second is not None and second.status == "RUNNING" and second.shots_done == 200

    last = store.record_chunk(job.id, {"11": 50}, 50, 0.025, 20.0)
    assert last is not None and last.status == "DONE" and last.shots_done == 250
    expected = {"00": 110, "11": 90, "01": 50}
    assert last.counts == expected
    assert json.loads(last.results or "") == {"counter": expected}
    assert sum(expected.values()) == job.shots
    assert last.qpu_seconds == pytest.approx(0.125)
    assert last.calibration_age_s == 30.0 and last.finished_at is not None
    assert store.get_job(job.id) == last


def test_record_chunk_needs_a_running_job(store: Store) -> None:
    canceled = add_job(store)
    store.mark_running(canceled.id, 1.0)
    store.record_chunk(canceled.id, {"00": 100}, 100, 0.05, 0.0)
    store.finish(canceled.id, "CANCELED", "canceled by user")
    before = store.get_job(canceled.id)

    assert store.record_chunk(canceled.id, {"00": 100}, 100, 0.05, 0.0) is None
    assert store.get_job(canceled.id) == before

    pending = add_job(store)
    assert store.record_chunk(pending.id, {"00": 100}, 100, 0.05, 0.0) is None
    assert store.get_job(pending.id) == pending
    done = run_to_done(store, add_job(store))
    assert store.record_chunk(done.id, {"00": 1}, 1, 0.0, 0.0) is None
    assert store.get_job(done.id) == done


def test_finish_happens_once(store: Store) -> None:
    job = add_job(store)
    store.mark_running(job.id, 1.0)
    failed = store.finish(job.id, "ERROR", "execution failed: boom")
    assert failed is not None and failed.status == "ERROR" and failed.finished_at is not None

    assert store.finish(job.id, "CANCELED", "too late") is None
    assert store.get_job(job.id) == failed

    done = run_to_done(store, add_job(store))
    assert store.finish(done.id, "CANCELED", "too late") is None
    assert store.get_job(done.id) == done


def test_requeue_running_keeps_finished_chunks(store: Store) -> None:
    first, second, waiting, done = (add_job(store) for _ in range(4))
    for job in (first, second):
        store.mark_running(job.id, 1.0)
    store.record_chunk(first.id, {"01": 100}, 100, 0.05, 0.0)
    run_to_done(store, done)

    assert sorted(store.requeue_running()) == [first.id, second.id]
    requeued = store.get_job(first.id)
    assert requeued is not None and requeued.status == "PENDING"
    assert (requeued.shots_done, requeued.counts) == (100, {"01": 100})
    assert store.get_job(waiting.id) == waiting
    assert store.get_job(done.id).status == "DONE"  # type: ignore[union-attr]
    assert store.requeue_running() == []


def test_state_survives_reopening(store: Store) -> None:
    job = add_job(store)
    store.set_fact("draining", True)
    reopened = Store(store.engine.url.render_as_string(hide_password=False))
    try:
        assert reopened.get_job(job.id) == job
        assert reopened.get_fact("draining") is True
        assert add_job(reopened).id > job.id
    finally:
        reopened.close()


# -- device facts ----------------------------------------------------------------------------


def test_device_facts(store: Store) -> None:
    assert store.get_fact("calibrated_at") is None
    store.set_fact("calibrated_at", 1700000000.25)
    store.set_fact("accessible", False)
    store.set_fact("message", "maintenance until 14:00")
    assert store.get_fact("calibrated_at") == 1700000000.25
    assert store.get_fact("accessible") is False
    store.set_fact("message", "")
    assert store.get_fact("message") == ""


# -- the API on PostgreSQL ---------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.anyio
async def test_job_runs_end_to_end_on_postgres(
    tmp_path: Path, fresh_postgres_url: str, sequence_json: str
) -> None:
    config = scheduler_config(tmp_path, db=fresh_postgres_url)
    async with in_process(config) as api:
        response = await api.user.post("/jobs", json={"sequence": sequence_json, "shots": 250})
        assert response.status_code == 200, response.text
        job = await wait_for_status(api.user, response.json()["id"])
        assert sum(json.loads(job["results"])["counter"].values()) == 250
        assert job["shots_done"] == 250 and job["position"] is None
        listed = (await api.user.get("/jobs")).json()
        assert [j["id"] for j in listed] == [job["id"]]
        # PostgreSQL enforces the 64-character id columns that SQLite ignores: refuse, not 500.
        too_long = await api.admin.post("/sessions", json={"user_id": "u" * 65})
        assert too_long.status_code == 422 and "user_id" in too_long.json()["detail"]
    check = Store(fresh_postgres_url)
    try:
        row = check.get_job(job["id"])
        assert row is not None and row.status == "DONE" and sum(row.counts.values()) == 250
    finally:
        check.close()


def test_a_database_with_the_former_results_column_still_opens(tmp_path: Path) -> None:
    """Older releases wrote each result twice (``counts`` and ``results``); the column stays
    in their databases, unused: ``results`` is now read from ``counts``."""
    import sqlalchemy as sa

    url = f"sqlite:///{tmp_path / 'old.db'}"
    old = Store(url)
    with old.engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE jobs ADD COLUMN results TEXT"))
    done = run_to_done(old, add_job(old))
    old.close()
    reopened = Store(url)
    try:
        assert reopened.get_job(done.id) == done
        assert json.loads(done.results or "") == {"counter": {"00": done.shots}}
        assert run_to_done(reopened, add_job(reopened)).results == done.results
    finally:
        reopened.close()


def test_reservations_never_overlap_and_cancel_by_deletion(store: Store) -> None:
    first = store.add_reservation("user", USER, 100.0, 200.0, "0")
    assert first.id > 0 and first.created_by == "0"
    with pytest.raises(ReservationOverlap) as clash:
        store.add_reservation("account", "chem", 150.0, 250.0)
    assert clash.value.existing == first
    second = store.add_reservation("slurm_job", "42", 200.0, 300.0)  # back to back is fine
    assert [r.id for r in store.list_reservations()] == [first.id, second.id]
    assert [r.id for r in store.list_reservations(ending_after=200.0)] == [second.id]
    assert store.cancel_reservation(first.id) == first
    assert store.cancel_reservation(first.id) is None
    assert store.list_reservations() == [second]
