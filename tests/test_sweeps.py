"""Sweeps: one program with many (shots, variables) sets, through POST /jobs as one job."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.api import refused, submit
from tests.support.in_process import in_process, long_chunk_profile, scheduler_config
from tests.support.polling import apoll_until, wait_for_status, wait_until_started
from tests.support.programs import parametrised_sequence_json

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
SETS = [
    {"variables": {"omega": 1.0}},
    {"variables": {"omega": 2.0}, "shots": 150},  # two chunks of the test profile's 100
    {"variables": {"omega": 3.0}, "shots": 20},
]


@pytest.fixture(scope="module")
def sweep_sequence() -> str:
    return parametrised_sequence_json(omega=1.5)


@pytest.fixture(params=BACKENDS)
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "postgres":
        yield request.getfixturevalue("fresh_postgres_url")
    else:
        yield f"sqlite:///{tmp_path / 'scheduler.db'}"


async def sets_of(client, job_id: int) -> list[dict]:  # type: ignore[no-untyped-def]
    response = await client.get(f"/jobs/{job_id}/sets")
    assert response.status_code == 200, response.text
    return response.json()["sets"]


@pytest.mark.anyio
async def test_a_sweep_is_one_job_with_results_per_set(
    tmp_path: Path, db: str, sweep_sequence: str
) -> None:
    """One job, one queue place (the per-user jobs cap counts it once), its shots the sets'
    in all; chunks never span two sets; each set's counts and full variables come back."""
    config = scheduler_config(tmp_path, db=db, max_queued_jobs_per_user=1)
    async with in_process(config) as api:
        job = await submit(api.user, sweep_sequence, shots=40, sweep=SETS)
        assert (job["shots"], job["sets"], job["sets_done"]) == (210, 3, 0)
        assert job["position"] in (0, 1)
        capped = await api.user.post("/jobs", json={"sequence": sweep_sequence, "shots": 1})
        refused(capped, 429, "max_queued_jobs_per_user")
        done = await wait_for_status(api.user, job["id"])
        assert (done["shots_done"], done["sets_done"]) == (210, 3)
        sets = await sets_of(api.user, job["id"])
        assert [s["shots"] for s in sets] == [40, 150, 20]
        assert [s["variables"] for s in sets] == [{"omega": w} for w in (1.0, 2.0, 3.0)]
        assert [sum(s["counter"].values()) for s in sets] == [40, 150, 20]
        assert sum(json.loads(done["results"])["counter"].values()) == 210
        chunks = (await api.user.get(f"/jobs/{job['id']}/timeline")).json()["entries"]
        assert [c["shots"] for c in chunks if c["event"] == "chunk"] == [40, 100, 50, 20]
        hidden = await api.other.get(f"/jobs/{job['id']}/sets")
        assert hidden.status_code == 404
        plain = await submit(api.other, sweep_sequence, shots=5)
        assert plain["sets"] is None and await sets_of(api.other, plain["id"]) == []


@pytest.mark.anyio
async def test_a_bad_set_or_an_oversized_sweep_is_refused(
    tmp_path: Path, sweep_sequence: str
) -> None:
    config = scheduler_config(
        tmp_path, max_sweep_sets=3, max_queued_shots_per_user=500, max_sweep_shots=1000
    )
    async with in_process(config) as api:
        bad = [{"variables": {"omega": 1.0}}, {"variables": {"omega": 2.0, "delta": 1.0}}]
        response = await api.user.post(
            "/jobs", json={"sequence": sweep_sequence, "shots": 10, "sweep": bad}
        )
        refused(response, 422, "sweep", "sweep set 1", "'delta'", "omega")
        wrong_size = [{"variables": {"omega": [1.0, 2.0]}}]
        response = await api.user.post(
            "/jobs", json={"sequence": sweep_sequence, "shots": 10, "sweep": wrong_size}
        )
        refused(response, 422, "sweep", "sweep set 0", "2 values")
        response = await api.user.post(
            "/jobs", json={"sequence": sweep_sequence, "shots": 10, "sweep": SETS * 2}
        )
        refused(response, 422, "sweep", "6 sets", "at most 3")
        response = await api.user.post(
            "/jobs", json={"sequence": sweep_sequence, "shots": 200, "sweep": SETS[:1] * 3}
        )
        refused(response, 429, "max_queued_shots_per_user", "600")
        assert (await api.user.get("/jobs")).json() == []


@pytest.mark.anyio
async def test_a_sweep_resumes_at_its_set_yields_between_chunks_and_cancels_as_one(
    tmp_path: Path, sweep_sequence: str
) -> None:
    """A daemon stopped mid-sweep resumes at the set the store recorded (each set's shots run
    once); another account's job overtakes a sweep between its chunks (fair share charges
    the sweep as it runs); a cancel ends the whole sweep, its sets as far as they ran."""
    config = scheduler_config(tmp_path, device=str(long_chunk_profile(tmp_path, 0.3)))
    sweep = [{"variables": {"omega": float(w)}} for w in range(1, 7)]
    async with in_process(config) as api:
        resumed = await submit(api.user, sweep_sequence, shots=600, sweep=sweep[:3])
        canceled = await submit(api.other, sweep_sequence, shots=1200, sweep=sweep)

        async def into_second_set() -> dict | None:
            job = (await api.user.get(f"/jobs/{resumed['id']}")).json()
            return job if job["sets_done"] >= 1 else None

        await apoll_until(into_second_set, "the sweep's first set to end", timeout=120)
    async with in_process(config) as api:
        done = await wait_for_status(api.user, resumed["id"], timeout=120)
        assert (done["sets_done"], done["shots_done"]) == (3, 1800)
        sets = await sets_of(api.user, resumed["id"])
        assert [sum(s["counter"].values()) for s in sets] == [600, 600, 600]
        entries = (await api.user.get(f"/jobs/{resumed['id']}/timeline")).json()["entries"]
        rerun = sum(e["shots"] for e in entries if e["event"] == "chunk")
        assert 0 < rerun <= 1200  # this daemon's chunks: the first set did not run again
        await wait_until_started(api.other, canceled["id"])
        # Fair share: the sweep's account is charged as its chunks run, so a job of an account
        # with no use goes ahead of its next chunk, between two of its sets.
        ahead = await submit(api.admin, sweep_sequence, shots=100)
        await wait_for_status(api.admin, ahead["id"], timeout=120)
        overtaken = (await api.other.get(f"/jobs/{canceled['id']}")).json()
        assert overtaken["status"] == "RUNNING" and overtaken["sets_done"] < 6
        response = await api.other.post(f"/jobs/{canceled['id']}/cancel")
        assert response.status_code == 200 and response.json()["status"] == "CANCELED"

        async def charged() -> tuple[dict, list[dict]] | None:
            """The job and its sets once the stopped chunk's charge is in both (it lands
            after the cancel answers, in one transaction)."""
            sets = await sets_of(api.other, canceled["id"])
            job = (await api.other.get(f"/jobs/{canceled['id']}")).json()
            return (job, sets) if sum(s["shots_done"] for s in sets) == job["shots_done"] else None

        job, sets = await apoll_until(charged, "the sets to agree with the job", timeout=60)
        assert job["status"] == "CANCELED" and job["shots_done"] < 7200
        assert sets[-1]["shots_done"] == 0
