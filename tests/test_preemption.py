"""The daemon uses the policy: interactive work overtakes a running production job between two
of its chunks, and the production job's chunks still merge into one complete result."""

from __future__ import annotations

import json

import pytest

from tests.support.in_process import Clients
from tests.support.polling import wait_for_status, wait_until_started


@pytest.mark.anyio
async def test_development_job_overtakes_running_production_job(
    api: Clients, sequence_json: str
) -> None:
    chunk = api.scheduler.driver.profile.chunk_shots
    production = (
        await api.other.post(
            "/jobs",
            json={"sequence": sequence_json, "shots": 40 * chunk, "job_class": "production"},
        )
    ).json()
    running = await wait_until_started(api.other, production["id"])
    assert running["status"] == "RUNNING"

    interactive = (
        await api.user.post(
            "/jobs",
            json={"sequence": sequence_json, "shots": chunk // 2, "job_class": "development"},
        )
    ).json()
    assert interactive["position"] == 1, "the interactive job is next, ahead of the running one"
    interactive = await wait_for_status(api.user, interactive["id"], timeout=180)
    production_then = (await api.other.get(f"/jobs/{production['id']}")).json()

    assert production_then["status"] == "RUNNING", "overtaken mid-job, not after it"
    assert 0 < production_then["shots_done"] < production_then["shots"]
    assert production_then["shots_done"] % chunk == 0, "switched at a chunk boundary"

    production = await wait_for_status(api.other, production["id"], timeout=180)
    assert interactive["finished_at"] < production["finished_at"]
    counts = json.loads(production["results"])["counter"]
    assert sum(counts.values()) == production["shots"]
    assert sum(json.loads(interactive["results"])["counter"].values()) == chunk // 2
