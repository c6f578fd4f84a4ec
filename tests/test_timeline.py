"""GET /jobs/{id}/timeline: a job's chunks, the classes that ran while it waited, and the
calibrations and holds it waited through; only its owner and admins see it."""

from __future__ import annotations

import pytest

from tests.support.in_process import Clients, development_overtakes_production
from tests.support.polling import apoll_until, wait_for_status


async def timeline(client, job_id: int) -> list[dict]:
    response = await client.get(f"/jobs/{job_id}/timeline")
    assert response.status_code == 200, response.text
    return response.json()["entries"]


@pytest.mark.anyio
async def test_a_preempted_job_shows_the_class_that_went_ahead(
    api: Clients, sequence_json: str
) -> None:
    chunk = api.scheduler.driver.profile.chunk_shots
    production, development = await development_overtakes_production(
        api, sequence_json, production_chunks=10
    )

    entries = await timeline(api.other, production["id"])
    events = [e["event"] for e in entries]
    assert events[0] == "queued" and entries[0]["job_class"] == "production"
    assert entries[-1] == {**entries[-1], "event": "finished", "status": "DONE"}
    chunks = [e for e in entries if e["event"] == "chunk"]
    assert sum(c["shots"] for c in chunks) == 10 * chunk
    assert all(c["calibration_age_s"] >= 0 and c["until"] >= c["at"] for c in chunks)
    behind = [e for e in entries if e["event"] == "waited_behind"]
    assert [(b["by_class"], b["chunks"], b["shots"]) for b in behind] == [("development", 1, chunk)]
    first, last = events.index("chunk"), len(events) - 1 - events[::-1].index("chunk")
    assert first < events.index("waited_behind") < last, "overtaken between two of its chunks"
    assert not [e for e in entries if "user_id" in e or "job_id" in e], "which class, not whose"

    mine = await timeline(api.user, development["id"])
    assert [e["event"] for e in mine][-2:] == ["chunk", "finished"]
    assert (await api.user.get(f"/jobs/{production['id']}/timeline")).status_code == 404
    assert len(await timeline(api.admin, production["id"])) == len(entries)


@pytest.mark.anyio
async def test_a_held_job_shows_the_calibration_and_drain_it_waited_for(
    api: Clients, sequence_json: str
) -> None:
    await api.admin.post("/admin/drain")
    job = (await api.user.post("/jobs", json={"sequence": sequence_json, "shots": 10})).json()
    before = api.scheduler.driver.calibrated_at
    await api.admin.post("/admin/calibrate")

    async def calibrated() -> bool:
        return api.scheduler.driver.calibrated_at != before and (
            (await api.user.get("/device")).json()["state"] == "ONLINE"
        )

    await apoll_until(calibrated, "the calibration to end, the device ONLINE", timeout=60)
    await api.admin.post("/admin/resume")
    await wait_for_status(api.user, job["id"], timeout=120)

    entries = await timeline(api.user, job["id"])
    events = [e["event"] for e in entries]
    assert events.count("calibration") == 1 and events.count("draining") == 1
    drained = next(e for e in entries if e["event"] == "draining")
    calibration = next(e for e in entries if e["event"] == "calibration")
    assert drained["at"] <= calibration["at"] <= calibration["until"] <= drained["until"]
    assert events.index("draining") < events.index("chunk"), "ran only after the resume"
    assert events[-1] == "finished"
