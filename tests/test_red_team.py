"""Issue 27's attacks by a hostile cluster user, re-run against the daemon: a cancelled chunk
charged what it ran (6), caps and sessions checked in the transaction that queues a job (7),
event ids across a restart (9), bounded variables (10), default variable values (11), the
session checked before the program (12). Each test is the attack; it asserts the answer now."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from qhpc_lab.scheduler.limits import AdmissionRefused, QueueLimit
from qhpc_lab.scheduler.store import QuotaAdmission, Store
from tests.support.identities import USER
from tests.support.in_process import in_process, long_chunk_profile, scheduler_config
from tests.support.polling import apoll_until, wait_for_status
from tests.support.programs import parametrised_sequence_json
from tests.support.store import add_job

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
TIME_PER_SHOT_S = 0.0005
"""The ``test`` profile's."""


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh SQLite file or a fresh PostgreSQL database."""
    if request.param == "postgres":
        return request.getfixturevalue("fresh_postgres_url")
    return f"sqlite:///{tmp_path / 'scheduler.db'}"


# -- 6. a cancelled chunk is charged what it ran ---------------------------------------------


@pytest.mark.anyio
async def test_cancelling_a_running_chunk_charges_what_it_ran(
    tmp_path: Path, sequence_json: str
) -> None:
    """The attack: cancel a job while its (long) chunk is on the emulated QPU, to take the
    device for free (it was charged nothing). Now the job is charged the time its chunk was
    on the device and the shots that time covered (none while its samples were still being
    emulated); its QPU-seconds and shots, the accounting, a shots quota and the metrics agree.
    (On the QPU API's device the whole chunk: tests/test_qpu_driver.py.)"""
    config = scheduler_config(tmp_path, device=str(long_chunk_profile(tmp_path, 30.0)))
    async with in_process(config) as api:
        quota = {"kind": "user", "subject": USER, "unit": "shots", "budget": 20_000}
        assert (await api.admin.put("/admin/quotas", json={**quota, "period": "day"})).is_success
        warm = await api.user.post("/jobs", json={"sequence": sequence_json, "shots": 10})
        await wait_for_status(api.user, warm.json()["id"])  # its state is kept: fast samples
        job = await api.user.post("/jobs", json={"sequence": sequence_json, "shots": 4_000})
        job_id = job.json()["id"]  # one chunk of 2 s
        await wait_for_status(api.user, job_id, ("RUNNING",))
        canceled = await api.user.post(f"/jobs/{job_id}/cancel")
        assert canceled.status_code == 200 and canceled.json()["status"] == "CANCELED"
        charged = await _settled(api.user, job_id)
        assert charged["status"] == "CANCELED"
        assert 0 < charged["qpu_seconds"] < 4_000 * TIME_PER_SHOT_S, charged
        shots = charged["shots_done"]  # the shots its time on the device covered
        assert shots <= charged["qpu_seconds"] / TIME_PER_SHOT_S + 1e-9
        accounting = await api.admin.get("/accounting/jobs", params={"job_id": job_id})
        (row,) = accounting.json()["data"]
        assert row["qpu_seconds"] == pytest.approx(charged["qpu_seconds"])
        assert row["shots_done"] == shots
        (used,) = (await api.user.get("/quotas")).json()["quotas"]
        assert used["used"] == 10 + shots
        metrics = (await api.anonymous.get("/metrics")).text
        assert _metric(metrics, "qhpc_qpu_busy_seconds_total") == pytest.approx(
            10 * TIME_PER_SHOT_S + charged["qpu_seconds"],
            abs=1e-5,  # the job shows 6 decimals
        )
        assert _metric(metrics, "qhpc_shots_total") == 10 + shots


async def _settled(client: httpx.AsyncClient, job_id: int) -> dict[str, Any]:
    """The job once the dispatcher has charged its cancelled chunk (its next decision)."""

    async def charged() -> dict[str, Any] | None:
        job = (await client.get(f"/jobs/{job_id}")).json()
        return job if job["qpu_seconds"] > 0 else None

    return await apoll_until(charged, f"job {job_id} charged its cancelled chunk")


def _metric(text: str, name: str) -> float:
    """The sum of a Prometheus metric's samples in ``text``."""
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name) and not line.startswith("#")
    )


# -- 7. caps and sessions checked in the transaction that queues the job ----------------------


def test_concurrent_submissions_never_pass_a_queue_cap_together(db_url: str) -> None:
    """The attack on the store itself (what HA replicas share): 30 threads submit at once
    against a cap of 10 queued jobs. Exactly 10 are queued; 20 are refused 429."""
    store = Store(db_url)
    try:
        admission = QuotaAdmission(None, TIME_PER_SHOT_S, (QueueLimit("user", USER, 10),))
        outcomes: list[int] = []
        start = threading.Barrier(30)

        def submit() -> None:
            start.wait(30)
            try:
                add_job(store, shots=1, admission=admission)
                outcomes.append(200)
            except AdmissionRefused as refused:
                outcomes.append(refused.status)

        threads = [threading.Thread(target=submit) for _ in range(30)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert sorted(outcomes) == [200] * 10 + [429] * 20
        assert len(store.list_jobs(USER, "PENDING")) == 10
    finally:
        store.close()


@pytest.mark.anyio
async def test_a_burst_of_submissions_gets_exactly_the_cap(
    tmp_path: Path, db_url: str, sequence_json: str
) -> None:
    """The red team's attack: 30 concurrent submissions against ``max_queued_jobs_per_user``
    = 10 got 11 to 14 accepted. Now exactly 10, the rest 429 naming the rule."""
    config = scheduler_config(tmp_path, db=db_url, max_queued_jobs_per_user=10)
    async with in_process(config) as api:
        await api.admin.post("/admin/drain")  # nothing leaves the queue meanwhile
        body = {"sequence": sequence_json, "shots": 5}
        answers = await asyncio.gather(*(api.user.post("/jobs", json=body) for _ in range(30)))
        assert sorted(a.status_code for a in answers) == [200] * 10 + [429] * 20
        refused = next(a for a in answers if a.status_code == 429).json()
        assert refused["rule"] == "max_queued_jobs_per_user"
        assert len((await api.user.get("/jobs")).json()) == 10


@pytest.mark.anyio
async def test_a_session_racing_its_revocation_leaves_no_job_pending(
    tmp_path: Path, db_url: str, sequence_json: str
) -> None:
    """The attack: keep submitting in a session while its Slurm job's epilog revokes it.
    Every job the revocation did not see is refused 403; none stays PENDING after it."""
    async with in_process(scheduler_config(tmp_path, db=db_url)) as api:
        await api.admin.post("/admin/drain")
        opened = await api.admin.post("/sessions", json={"user_id": USER, "slurm_job_id": "9"})
        session = opened.json()["id"]
        headers = {"X-Warden-Session": session}
        body = {"sequence": sequence_json, "shots": 5}

        async def submit() -> int:
            return (await api.user.post("/jobs", json=body, headers=headers)).status_code

        async def revoke() -> int:
            return (await api.admin.delete(f"/sessions/{session}")).status_code

        answers = await asyncio.gather(
            *(submit() for _ in range(30)), revoke(), *(submit() for _ in range(30))
        )
        assert answers[30] == 200 and set(answers) <= {200, 403}, answers
        assert 403 in answers
        statuses = {job["status"] for job in (await api.user.get("/jobs")).json()}
        assert statuses <= {"CANCELED"}, statuses
        assert len(api.scheduler.queue_snapshot().positions.get(USER, {})) == 0  # type: ignore[attr-defined]


@pytest.mark.anyio
async def test_a_sessionless_submission_is_charged_to_the_users_account(
    tmp_path: Path, sequence_json: str
) -> None:
    """The attack: with bearer tokens, a user whose Slurm account's quota is spent submits
    without a session, to be charged to the user only. Now the job is charged to the account
    of the user's latest session, and refused; a site may require a session instead."""
    async with in_process(scheduler_config(tmp_path)) as api:
        quota = {"kind": "account", "subject": "physics", "unit": "shots", "budget": 100}
        assert (await api.admin.put("/admin/quotas", json={**quota, "period": "day"})).is_success
        opened = await api.admin.post(
            "/sessions", json={"user_id": USER, "slurm_job_id": "5", "slurm_account": "physics"}
        )
        headers = {"X-Warden-Session": opened.json()["id"]}
        body = {"sequence": sequence_json, "shots": 100}
        assert (await api.user.post("/jobs", json=body, headers=headers)).status_code == 200
        assert (await api.admin.delete(f"/sessions/{opened.json()['id']}")).status_code == 200
        sessionless = await api.user.post("/jobs", json={**body, "shots": 10})
        assert sessionless.status_code == 403, sessionless.text
        assert sessionless.json()["rule"] == "quota" and sessionless.json()["subject"] == "physics"
    (tmp_path / "required").mkdir()
    config = scheduler_config(tmp_path / "required", require_session=True)
    async with in_process(config) as api:
        required = await api.user.post("/jobs", json=body)
        assert required.status_code == 403 and required.json()["rule"] == "session"


# -- 9. event ids across a restart ------------------------------------------------------------


@pytest.mark.anyio
async def test_an_event_id_of_an_earlier_run_is_answered_reset(
    tmp_path: Path, sequence_json: str
) -> None:
    """The attack: a client resumes, after the daemon restarted, with the ``Last-Event-ID``
    of the first run; the second numbered its events from 1 again, so the client got neither
    ``reset`` nor the DONE of a job that finished meanwhile. Now ids grow across restarts:
    the old id is not in the backlog, the daemon says ``reset`` first, and the client
    re-reads what it shows (``SchedulerTarget.watch``: the job, DONE)."""
    async with in_process(scheduler_config(tmp_path)) as api:
        seen = await _first_events(api.scheduler.bus, None, 2)  # type: ignore[attr-defined]
        last_id = seen[-1].id  # the client's last id; then it goes away
        assert last_id is not None
        body = {"sequence": sequence_json, "shots": 10}
        job = (await api.user.post("/jobs", json=body)).json()["id"]  # ends while it is away
        await wait_for_status(api.user, job)
    async with in_process(scheduler_config(tmp_path)) as api:
        resumed = await _first_events(api.scheduler.bus, last_id, 3)  # type: ignore[attr-defined]
        assert [e.kind for e in resumed] == ["reset", "device", "queue"]
        assert int(resumed[0].id or 0) > int(last_id)  # ids of this run: past the first's
        assert (await api.user.get(f"/jobs/{job}")).json()["status"] == "DONE"  # re-read
        current = await _first_events(api.scheduler.bus, resumed[-1].id, 1)  # type: ignore[attr-defined]
        assert current[0].kind == "device"  # an id of this run resumes: no reset


async def _first_events(bus: Any, last_event_id: str | None, count: int) -> list[Any]:
    """The first ``count`` events a subscriber of ``USER`` resuming after ``last_event_id``
    is sent."""
    events = bus.subscribe(USER, False, last_event_id, {"state": "ONLINE"})
    try:
        return [await anext(events) for _ in range(count)]
    finally:
        await events.aclose()


# -- 10, 11, 12. variables and the order of the checks ----------------------------------------


@pytest.mark.anyio
async def test_variables_are_bounded_and_must_be_declared(api: Any) -> None:
    """The attack: a ``variables`` map of 40 000 keys (712 KB), or nested 50 deep, was
    accepted and stored. Now each is 422 (rule ``variables``) and nothing is stored."""
    sequence = parametrised_sequence_json(omega=1.5)
    many = {f"v{i}": 1.0 for i in range(40_000)}
    deep: Any = 1.0
    for _ in range(50):
        deep = [deep]
    attacks = {
        "40000 variables given; the limit is 256": many,
        "variable 'omega' must be a number or a list of numbers": {"omega": deep},
        "the sequence declares no variable 'bogus' (it declares omega)": {"bogus": 1.0},
    }
    for message, variables in attacks.items():
        body = {"sequence": sequence, "shots": 10, "variables": variables}
        answer = await api.user.post("/jobs", json=body)
        assert answer.status_code == 422, answer.text
        assert answer.json() == {"detail": message, "rule": "variables"}
    assert (await api.user.get("/jobs")).json() == []


@pytest.mark.anyio
async def test_default_variable_values_are_honoured(api: Any) -> None:
    """Warden's API test: a parametrised sequence carrying its defaults
    (``to_abstract_repr(omega=1.5)``) and no ``variables`` was refused 422. Now it runs with
    them; a value the job gives wins."""
    sequence = parametrised_sequence_json(omega=1.5)
    defaults = await api.user.post("/jobs", json={"sequence": sequence, "shots": 10})
    assert defaults.status_code == 200, defaults.text
    given = await api.user.post(
        "/jobs", json={"sequence": sequence, "shots": 10, "variables": {"omega": 2.0}}
    )
    assert given.status_code == 200, given.text
    for answer, omega in ((defaults, [1.5]), (given, 2.0)):
        done = await wait_for_status(api.user, answer.json()["id"])
        assert done["status"] == "DONE", done
        stored = api.scheduler.store.get_job(done["id"])
        assert stored.variables == {"omega": omega}


@pytest.mark.anyio
async def test_identity_and_session_come_before_the_program(tmp_path: Path) -> None:
    """Warden's API test: a submission without a session, whatever its program, is 403 where
    sessions are required (it was 422: the program was read first)."""
    async with in_process(scheduler_config(tmp_path, require_session=True)) as api:
        for headers in ({}, {"X-Warden-Session": "no-such-session"}):
            body = {"sequence": "not a Pulser sequence", "shots": 10}
            answer = await api.user.post("/jobs", json=body, headers=headers)
            assert answer.status_code == 403 and answer.json()["rule"] == "session", answer.text
        anonymous = await api.anonymous.post("/jobs", json={"sequence": "x", "shots": 10})
        assert anonymous.status_code == 401
