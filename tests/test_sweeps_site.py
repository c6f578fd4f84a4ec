"""Sweeps under a site's conditions: the device going DOWN and the daemon restarting mid-sweep
(behind Pasqal's QPU API, ``qhpc qpu serve``), another user's queue beside a 1 000-set sweep,
and a sweep's results read page by page (docs/scheduler.md, "Sweeps")."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from qhpc_lab.client import Client
from qhpc_lab.programs import Program
from tests.support.api import submit
from tests.support.client_env import lab_env
from tests.support.daemons import free_port
from tests.support.identities import USER, auth_header
from tests.support.in_process import in_process, scheduler_config
from tests.support.polling import apoll_until, wait_for_status, wait_until_started
from tests.support.programs import parametrised_sequence_json
from tests.support.qpu_api import connecting, device_jobs, served, stand_in
from tests.support.served import served as served_app


@pytest.fixture(scope="module")
def sequence() -> str:
    return parametrised_sequence_json(omega=1.5)


@pytest.fixture(scope="module")
def qpu(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    with served(tmp_path_factory.mktemp("qpu")) as client:
        yield client


def sweep_of(count: int, shots: int | None = None) -> list[dict[str, Any]]:
    """``count`` sets binding omega to 1.0, 1.1, ... (each ``shots``, or the job's)."""
    extra = {} if shots is None else {"shots": shots}
    return [{"variables": {"omega": 1.0 + i / 10}, **extra} for i in range(count)]


async def sets_of(client: httpx.AsyncClient, job_id: int) -> list[dict[str, Any]]:
    response = await client.get(f"/jobs/{job_id}/sets")
    assert response.status_code == 200, response.text
    return response.json()["sets"]


async def job_of(client: httpx.AsyncClient, job_id: int) -> dict[str, Any]:
    return (await client.get(f"/jobs/{job_id}")).json()


@pytest.mark.slow
@pytest.mark.anyio
async def test_a_sweep_waits_out_a_down_device_and_a_restart_running_each_set_once(
    tmp_path: Path, qpu: httpx.Client, sequence: str
) -> None:
    """The device goes DOWN after the first set: the sets done keep their counts, the rest
    wait, held by ``down``, and run once it is UP; the daemon is then stopped mid-sweep and a
    new one finishes it. Each set's shots ran on the device exactly once."""
    config = scheduler_config(tmp_path)
    async with in_process(config, connecting(qpu)) as api:
        job = await submit(api.user, sequence, shots=300, sweep=sweep_of(6))

        async def first_set_done() -> bool:
            return (await job_of(api.user, job["id"]))["sets_done"] >= 1

        await apoll_until(first_set_done, "the sweep's first set to end", timeout=120)
        with stand_in(qpu) as admin:
            admin.post("/down", json={"reason": "laser swap"}).raise_for_status()

        async def held() -> dict[str, Any] | None:
            seen = await job_of(api.user, job["id"])
            return seen if seen["held_by"] == "down" else None

        waiting = await apoll_until(held, "the sweep held by down", timeout=30)
        assert waiting["status"] == "RUNNING" and waiting["sets_done"] < 6, waiting
        assert waiting["eta_s"] is None  # when it runs again is the operator's
        before = await sets_of(api.user, job["id"])
        done_before = [s for s in before if s["shots_done"] == s["shots"]]
        assert done_before and len(done_before) < 6
        with stand_in(qpu) as admin:
            admin.post("/up").raise_for_status()

        async def resumed() -> bool:
            seen = await job_of(api.user, job["id"])
            return seen["held_by"] is None and seen["shots_done"] > waiting["shots_done"]

        await apoll_until(resumed, "the sweep to resume once UP", timeout=60)
        assert (await job_of(api.user, job["id"]))["status"] == "RUNNING"  # stopped mid-sweep
    async with in_process(config, connecting(qpu)) as api:  # a new daemon, mid-sweep
        done = await wait_for_status(api.user, job["id"], timeout=120)
        sets = await sets_of(api.user, job["id"])
    assert (done["sets_done"], done["shots_done"]) == (6, 1800)
    assert [(s["shots_done"], sum(s["counter"].values())) for s in sets] == [(300, 300)] * 6
    assert sets[: len(done_before)] == done_before  # kept as they were
    assert sum(json.loads(done["results"])["counter"].values()) == 1800
    ran = [
        q
        for q in device_jobs(qpu)
        if q["batch_id"] == f"qhpc-job-{job['id']}" and q["status"] == "DONE"
    ]
    assert sum(q["nb_run"] for q in ran) == 1800, ran  # no shot lost, none run twice


@pytest.mark.anyio
async def test_a_thousand_set_sweep_beside_another_users_queue(
    tmp_path: Path, sequence: str
) -> None:
    """A 1 000-set sweep is one job with one place; the other user's jobs, queued while a
    drain holds them, stand 1st to 3rd behind it, and once released run between the sweep's
    chunks (its account is charged every set's shots as they run) and end while it still
    runs. The sweep's end estimate counts every shot it has left."""
    async with in_process(scheduler_config(tmp_path)) as api:
        sweep = await submit(api.user, sequence, shots=10, sweep=sweep_of(1000))
        assert (sweep["sets"], sweep["shots"]) == (1000, 10_000)
        await wait_until_started(api.user, sweep["id"])
        drained = await api.admin.post("/admin/drain")
        assert drained.status_code == 200, drained.text
        others = [await submit(api.other, sequence, shots=100) for _ in range(3)]
        queued = {j["id"]: j for j in (await api.admin.get("/jobs")).json()}
        assert [queued[j["id"]]["position"] for j in others] == [1, 2, 3]
        assert {queued[j["id"]]["held_by"] for j in others} == {"draining"}
        running = queued[sweep["id"]]
        assert running["position"] == 0 and running["held_by"] is None
        time_per_shot_s = (await api.user.get("/device")).json()["time_per_shot_s"]
        left = running["shots"] - running["shots_done"]
        assert running["eta_s"] >= left * time_per_shot_s * 0.99, running
        assert [j["id"] for j in (await api.user.get("/jobs")).json()] == [sweep["id"]]
        resumed = await api.admin.post("/admin/resume")
        assert resumed.status_code == 200, resumed.text
        for other in others:
            await wait_for_status(api.other, other["id"], timeout=120)
        still = await job_of(api.user, sweep["id"])
        assert still["status"] == "RUNNING" and still["sets_done"] < 1000, still
        canceled = await api.user.post(f"/jobs/{sweep['id']}/cancel")
        assert canceled.json()["status"] == "CANCELED", canceled.text


def test_a_sweeps_sets_come_in_pages_and_the_client_reads_them_all(
    tmp_path: Path, sequence: str
) -> None:
    """A site's page of two sets: ``GET /jobs/{id}/sets`` answers two at a time, each page
    linking the next while sets remain; ``limit`` asks for fewer; the client's Result holds
    all five, in order."""
    config = scheduler_config(tmp_path, port=free_port(), sweep_sets_per_page=2)
    points = [{"omega": 1.0 + i / 10} for i in range(5)]
    with served_app(config) as app:
        client = Client(environ={"HOME": str(tmp_path), **lab_env(app.url)})
        try:
            job = client.submit(Program("pulser", sequence, 10), shots=10, variables=points)
            result = job.result(120)
        finally:
            client.close()
        assert [s.variables for s in result.sets] == points
        assert [sum(s.counts.values()) for s in result.sets] == [10] * 5
        with httpx.Client(base_url=app.url, headers=auth_header(USER)) as http:
            url: str | None = f"/jobs/{job.id}/sets"
            pages = []
            while url is not None:
                page = http.get(url)
                assert page.status_code == 200, page.text
                pages.append([s["index"] for s in page.json()["sets"]])
                url = page.links.get("next", {}).get("url")
            assert pages == [[0, 1], [2, 3], [4]]
            one = http.get(f"/jobs/{job.id}/sets", params={"limit": 1, "after_index": 2})
            assert [s["index"] for s in one.json()["sets"]] == [3]
            assert "after_index=3" in one.links["next"]["url"]
            over = http.get(f"/jobs/{job.id}/sets", params={"limit": 10_000_000})
            assert over.status_code == 422, over.text
