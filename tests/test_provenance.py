"""Calibration provenance: every chunk names the calibration it ran under, a job lists them per
shot range, and a single-calibration job's shots all come from one (docs/policy.md, rule 7)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from qhpc_lab.client import (
    CalibrationRange,
    Client,
    Job,
    JobState,
    RefusedError,
    Result,
    discover,
)
from qhpc_lab.client._scheduler import parse_job
from qhpc_lab.jupyter.widgets import JobPanel
from qhpc_lab.programs import Program
from qhpc_lab.qpu import Calibration, DeviceState, Drift
from qhpc_lab.scheduler import policy
from qhpc_lab.scheduler.auth import make_token
from qhpc_lab.scheduler.policy import Calibrate, DeviceView, PolicyConfig, QueuedJob, RunChunk
from qhpc_lab.scheduler.ranking import RankedQueue
from qhpc_lab.scheduler.store import Store, merge_calibration, migrate
from tests.support.daemons import daemon
from tests.support.identities import SECRET, USER
from tests.support.in_process import Clients, in_process, scheduler_config
from tests.support.polling import apoll_until
from tests.support.programs import pulser_sequence_json

WAIT_S = 120
SHOTS = 6000
"""Three seconds of the test device (0.5 ms a shot): time to calibrate in the middle."""
DRIFT = Drift(0.01, 0.05, 0.25)
CONFIG = PolicyConfig()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# -- the merge ---------------------------------------------------------------------------------


def test_chunks_under_one_calibration_merge_and_a_new_calibration_starts_a_range() -> None:
    first, second = Calibration(4, 100.0, DRIFT), Calibration(5, 200.0, DRIFT)
    ranges = merge_calibration([], 1, 100, first, 12.0, 17.0)
    ranges = merge_calibration(ranges, 101, 200, first, 17.0, 27.0)
    assert ranges == [
        {
            "id": 4,
            "calibrated_at": 100.0,
            "shots_from": 1,
            "shots_to": 300,
            "age_s_first": 12.0,
            "age_s_last": 27.0,
            "drift": dataclasses.asdict(DRIFT),
        }
    ]
    ranges = merge_calibration(ranges, 301, 100, second, 0.5, 5.5)
    assert [(r["id"], r["shots_from"], r["shots_to"]) for r in ranges] == [
        (4, 1, 300),
        (5, 301, 400),
    ]
    assert ranges[1]["age_s_first"] == 0.5 and ranges[0]["age_s_last"] == 27.0


def test_a_range_that_does_not_follow_the_last_is_a_new_one() -> None:
    calibration = Calibration(4, 100.0, DRIFT)
    ranges = merge_calibration([], 1, 100, calibration, 1.0, 2.0)
    assert len(merge_calibration(ranges, 201, 100, calibration, 3.0, 4.0)) == 2


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    kept = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    yield kept
    kept.close()


def running_job(store: Store, shots: int = 200) -> int:
    job = store.add_job(
        user_id="u", job_class="test", format="pulser", body="{}", shots=shots, created_at=0.0
    )
    store.mark_running(job.id, 1.0)
    return job.id


def test_record_chunk_keeps_provenance_exactly_once(store: Store) -> None:
    job_id, calibration = running_job(store), Calibration(3, 0.0, DRIFT)
    for _ in range(2):  # a retry whose first attempt committed merges nothing more
        row = store.record_chunk(job_id, {"0": 100}, 100, 0.05, 1.0, 0, 0.0, 2.0, calibration)
    assert row is not None and row.calibrations[0]["shots_to"] == 100
    row = store.record_chunk(job_id, {"0": 100}, 100, 0.05, 1.05, 100, 0.0, 2.0, calibration)
    assert row is not None and row.status == "DONE"
    assert [(r["shots_from"], r["shots_to"]) for r in row.calibrations] == [(1, 200)]
    assert row.calibrations[0]["age_s_last"] == pytest.approx(1.1)
    assert store.get_job(job_id).calibrations == row.calibrations  # type: ignore[union-attr]


def test_restart_shots_discards_them_once(store: Store) -> None:
    job_id, calibration = running_job(store), Calibration(3, 0.0, DRIFT)
    store.record_chunk(job_id, {"0": 100}, 100, 0.05, 1.0, 0, 0.0, 2.0, calibration)
    restarted = store.restart_shots(job_id, 100)
    assert restarted is not None and restarted.shots_done == 0
    assert restarted.counts == {} and restarted.calibrations == []
    assert restarted.qpu_seconds == 0.05 and restarted.status == "RUNNING"
    assert store.restart_shots(job_id, 100) is None  # a retry of a committed restart


def test_a_database_from_before_provenance_gains_its_columns(tmp_path: Path) -> None:
    import sqlalchemy as sa

    url = f"sqlite:///{tmp_path / 'old.db'}"
    old = Store(url)
    job_id = running_job(old, 100)
    migrate.downgrade(old.engine, "0001")  # nothing later revisions add
    with old.engine.begin() as conn:
        # As those releases made it: the first revision's schema without provenance.
        for column in ("calibrations", "single_calibration"):
            conn.execute(sa.text(f"ALTER TABLE jobs DROP COLUMN {column}"))
        conn.execute(sa.text("DROP TABLE alembic_version"))  # releases then had no migrations
    old.close()
    reopened = Store(url)
    try:
        row = reopened.get_job(job_id)
        assert row is not None and row.calibrations == [] and row.single_calibration is False
        done = reopened.record_chunk(
            job_id, {"0": 100}, 100, 0.05, 1.0, 0, 0.0, 2.0, Calibration(1, 0.0, DRIFT)
        )
        assert done is not None and done.calibrations[0]["shots_to"] == 100
    finally:
        reopened.close()


# -- the rule (pure policy) ----------------------------------------------------------------------


def device(**changes: Any) -> DeviceView:
    """10 ms a shot, 10-shot chunks, calibrated at 0 every 100 s for 5 s."""
    base = DeviceView(DeviceState.ONLINE, 0.0, 100.0, 5.0, 0.01, 10)
    return dataclasses.replace(base, **changes)


def job(id: int, shots: int = 100, shots_done: int = 0, **changes: Any) -> QueuedJob:
    return QueuedJob(id, "u1", "s1", "production", shots, shots_done, 0.0, **changes)


def test_a_job_longer_than_a_calibration_interval_is_refused_up_front() -> None:
    # one chunk (0.1 s) is kept in hand: 9990 shots of 10 ms fit in 100 s, 9991 do not
    assert policy.single_calibration_refusal(9990, None, device(), CONFIG) is None
    refusal = policy.single_calibration_refusal(9991, None, device(), CONFIG)
    assert refusal is not None and "leaves for them (99.9 s: its 100 s less one chunk)" in refusal
    bounded = policy.single_calibration_refusal(7000, 65.0, device(), CONFIG)
    assert bounded is not None and "max_calibration_age_s (65 s)" in bounded
    assert policy.single_calibration_refusal(6000, 65.0, device(), CONFIG) is None


def test_an_unstarted_single_calibration_job_waits_for_a_calibration_it_fits_in() -> None:
    late = 60.0  # 40 s left in the window: 4000 shots fit, 5000 do not
    assert policy.decide([job(1, 4000, single_calibration=True)], {}, device(), late, CONFIG) == (
        RunChunk(1, 10)
    )
    whole = [job(1, 5000, single_calibration=True)]
    assert policy.decide(whole, {}, device(), late, CONFIG) == Calibrate()
    other = [*whole, job(2, 5000)]  # the same priority: the other job runs meanwhile
    assert policy.decide(other, {}, device(), late, CONFIG) == RunChunk(2, 10)


def test_a_started_single_calibration_job_keeps_others_from_calibrating_early() -> None:
    aged = job(1, 100, max_calibration_age_s=60.0)  # past its bound at 70 s: it wants one
    pinned = job(2, 100, shots_done=10, single_calibration=True)
    assert policy.decide([aged], {}, device(), 70.0, CONFIG) == Calibrate()
    assert policy.decide([aged, pinned], {}, device(), 70.0, CONFIG) == RunChunk(2, 10)
    assert policy.decide([aged, pinned], {}, device(), 100.0, CONFIG) == Calibrate()  # due


def test_the_ranked_queue_answers_as_the_policy_with_single_calibration_jobs() -> None:
    jobs = [
        job(1, 100, max_calibration_age_s=60.0),
        job(2, 100, shots_done=10, single_calibration=True),
        job(3, 5000, single_calibration=True),
    ]
    queue = RankedQueue(CONFIG)
    for queued in jobs:
        queue.add(queued)
    for now in (0.0, 50.0, 70.0, 99.99):
        assert queue.decide(device(), now) == policy.decide(jobs, {}, device(), now, CONFIG)


# -- end to end, over HTTP ---------------------------------------------------------------------


async def submit(clients: Clients, shots: int = SHOTS, **extra: Any) -> dict[str, Any]:
    body = {"sequence": pulser_sequence_json(), "shots": shots, "job_class": "test", **extra}
    response = await clients.user.post("/jobs", json=body)
    assert response.status_code == 200, response.text
    return response.json()


async def job_view(clients: Clients, job_id: int) -> dict[str, Any]:
    response = await clients.user.get(f"/jobs/{job_id}")
    assert response.status_code == 200, response.text
    return response.json()


async def calibrate_once_running(clients: Clients, job_id: int) -> int:
    """Force a calibration once the job has shots done; the calibration id it started from."""

    async def running() -> dict[str, Any] | None:
        view = await job_view(clients, job_id)
        return view if view["shots_done"] > 0 else None

    view = await apoll_until(running, f"job {job_id} to run a chunk", WAIT_S)
    assert view["status"] == "RUNNING", view
    (await clients.admin.post("/admin/calibrate")).raise_for_status()
    return view["calibrations"][0]["id"]


async def done(clients: Clients, job_id: int) -> dict[str, Any]:
    async def final() -> dict[str, Any] | None:
        view = await job_view(clients, job_id)
        return view if view["status"] in ("DONE", "ERROR", "CANCELED") else None

    view = await apoll_until(final, f"job {job_id} to end", WAIT_S)
    assert view["status"] == "DONE", view
    return view


@pytest.mark.anyio
async def test_a_job_that_spans_a_calibration_lists_two_ranges(api: Clients) -> None:
    job = await submit(api)
    assert job["calibrations"] == [] and job["single_calibration"] is False
    before = await calibrate_once_running(api, job["id"])
    view = await done(api, job["id"])
    ranges = view["calibrations"]
    assert [r["id"] for r in ranges] == [before, before + 1], ranges
    assert ranges[0]["shots_from"] == 1 and ranges[-1]["shots_to"] == SHOTS
    assert ranges[0]["shots_to"] + 1 == ranges[1]["shots_from"]
    assert sum(r["shots_to"] - r["shots_from"] + 1 for r in ranges) == SHOTS
    assert ranges[1]["age_s_first"] < ranges[0]["age_s_last"]  # fresher after the calibration
    assert ranges[1]["drift"] == dataclasses.asdict(DRIFT)
    assert '"counter"' in view["results"] and "calibrations" not in view["results"]

    target = SimpleNamespace(name="scheduler", time_per_shot_s=None)  # names only errors
    state = parse_job(view, target)  # type: ignore[arg-type]
    assert [c.id for c in state.calibrations] == [before, before + 1]
    assert sum(c.shots for c in state.calibrations) == SHOTS


@pytest.mark.anyio
async def test_a_single_calibration_job_restarts_under_the_new_calibration(api: Clients) -> None:
    job = await submit(api, single_calibration=True)
    assert job["single_calibration"] is True
    before = await calibrate_once_running(api, job["id"])
    view = await done(api, job["id"])
    assert [(r["id"], r["shots_from"], r["shots_to"]) for r in view["calibrations"]] == [
        (before + 1, 1, SHOTS)
    ]
    assert sum(json_counts(view).values()) == SHOTS  # the discarded shots are gone
    assert view["qpu_seconds"] > SHOTS * 0.0005  # ... though their device time stays charged


@pytest.mark.anyio
async def test_a_single_calibration_job_that_cannot_fit_its_age_bound_is_refused(
    api: Clients,
) -> None:
    (await api.admin.put("/admin/policy", json={"min_calibration_age_s": 0})).raise_for_status()
    response = await api.user.post(
        "/jobs",
        json={
            "sequence": pulser_sequence_json(),
            "shots": SHOTS,
            "max_calibration_age_s": 1,
            "single_calibration": True,
        },
    )
    assert response.status_code == 422, response.text
    assert response.json()["rule"] == "single_calibration"


@pytest.mark.anyio
async def test_calibration_ids_keep_increasing_across_restarts(tmp_path: Path) -> None:
    config = scheduler_config(tmp_path)
    ids = []
    for _ in range(2):
        async with in_process(config) as clients:
            ids.append((await device_info(clients.user))["calibration_id"])
            (await clients.admin.post("/admin/calibrate")).raise_for_status()
            ids.append(await calibrated_past(clients, ids[-1]))
    assert ids == [1, 2, 2, 3]


async def calibrated_past(clients: Clients, calibration_id: int) -> int:
    """The device's calibration id once it is past ``calibration_id`` and the store keeps it."""

    async def moved() -> dict[str, Any] | None:
        info = await device_info(clients.user)
        kept = clients.scheduler.store.get_fact("calibration_id")  # type: ignore[attr-defined]
        past = info["calibration_id"] > calibration_id and kept == info["calibration_id"]
        return info if past else None

    return (await apoll_until(moved, "a new calibration id", WAIT_S))["calibration_id"]


async def device_info(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/device")
    assert response.status_code == 200, response.text
    return response.json()


def json_counts(view: dict[str, Any]) -> dict[str, int]:
    return json.loads(view["results"])["counter"]


# -- what users read ------------------------------------------------------------------------------

RANGES = (
    CalibrationRange(4, None, 1, 300, 12.0, 40.0, dataclasses.asdict(DRIFT)),
    CalibrationRange(5, None, 301, 400, 0.4, 9.6),
)


def test_result_shows_its_calibrations_briefly() -> None:
    one = Result({"01": 300}, "7", "lab", calibration_age_s=40.0, calibrations=RANGES[:1])
    assert "300 shots · calibration #4 (age 12 s–40 s)" in str(one)
    assert "calibration #4 (age 12 s–40 s)" in one._repr_html_()
    two = Result({"01": 400}, "7", "lab", calibrations=RANGES)
    assert "2 calibrations (.calibrations)" in str(two)
    assert "  shots 301–400 under calibration #5 (age 0 s–10 s)" in str(two)
    assert two._repr_html_().count("<li>") == 2
    assert two.calibrations[0].shots == 300


def test_the_panel_says_which_calibration_the_shots_ran_under() -> None:
    state = JobState("7", "RUNNING", shots=500, shots_done=300, calibrations=RANGES[:1])
    emulator = discover({"HOME": "/nowhere"}).targets["emulator"]
    panel = JobPanel(Job(emulator, state, "QHPC-Test"))
    assert "shots 1–300 under calibration #4 (age 12 s–40 s)" in panel.text()
    assert "shots 1–300 under calibration #4 (age 12 s–40 s)" in panel._status.value


def test_the_client_asks_for_one_calibration_and_reads_it_back(tmp_path: Path) -> None:
    """``Client.submit(..., single_calibration=True)`` against the daemon, on the test device
    calibrating every 5 s: 300 shots run under one calibration, which the Result names; 10,000
    (5 s) cannot fit in one and are refused, naming the rule."""
    profile = json.loads((resources.files("qhpc_lab.qpu") / "profiles" / "test.json").read_text())
    profile["calibration"] = {"interval_s": 5.0, "duration_s": 0.2}
    path = tmp_path / "five-seconds.json"
    path.write_text(json.dumps(profile))
    with daemon(tmp_path, "--device", str(path)) as scheduler:
        environ = {
            "HOME": str(tmp_path),
            "QRMI_JOB_QPU_RESOURCES": "lab",
            "QRMI_JOB_QPU_TYPES": "pasqal-local",
            "lab_QRMI_WARDEN_URL": scheduler.url,
            "QHPC_TOKEN": make_token(SECRET, USER),
        }
        client = Client(environ=environ)
        try:
            program = Program("pulser", pulser_sequence_json(), 300)
            job = client.submit(program, target="lab", single_calibration=True)
            result = job.result(WAIT_S)
            with pytest.raises(RefusedError) as refused:
                client.submit(program, shots=10_000, target="lab", single_calibration=True)
        finally:
            client.close()
    assert [(c.shots_from, c.shots_to) for c in result.calibrations] == [(1, 300)]
    assert result.calibrations[0].drift == dataclasses.asdict(DRIFT)
    assert f"300 shots · calibration #{result.calibrations[0].id} (age" in str(result)
    assert refused.value.rule == "single_calibration"
