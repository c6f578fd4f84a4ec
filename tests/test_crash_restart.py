"""A scheduler killed mid-run loses no accepted job and runs none twice (DESIGN §6).

The real daemon is SIGKILLed while one multi-chunk job is half done and others wait, then
restarted on the same state (SQLite file or PostgreSQL database). Every job must end in one
final state with exactly its shots counted: a chunk merged twice or lost would show.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from qhpc_lab.scheduler.core import iso_time
from qhpc_lab.scheduler.store import FINAL, Store
from tests.conftest import USER, Daemon, auth_header, daemon

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
LONG_SHOTS, SHORT_SHOTS = 3000, 150  # the test profile runs chunks of 100 shots


def wait_until(check: Callable[[], Any], what: str, timeout: float = 60) -> Any:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` otherwise."""
    deadline = time.monotonic() + timeout
    while not (result := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)
    return result


def jobs_by_id(client: httpx.Client) -> dict[int, dict[str, Any]]:
    response = client.get("/jobs", params={"limit": 1000})
    assert response.status_code == 200, response.text
    return {job["id"]: job for job in response.json()}


def half_done(client: httpx.Client) -> bool:
    """True once a long job has some but not all of its chunks recorded."""
    return any(
        job["status"] == "RUNNING" and 0 < job["shots_done"] < job["shots"]
        for job in jobs_by_id(client).values()
    )


def all_final(client: httpx.Client) -> dict[int, dict[str, Any]] | None:
    """Every job, once none is queued or running any more."""
    jobs = jobs_by_id(client)
    return jobs if jobs and all(job["status"] in FINAL for job in jobs.values()) else None


def emulator_workers(handle: Daemon) -> list[psutil.Process]:
    """The daemon's process-pool workers (spawned ``multiprocessing`` children)."""
    children = psutil.Process(handle.process.pid).children(recursive=True)
    return [c for c in children if "spawn_main" in " ".join(c.cmdline())]


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_killed_scheduler_finishes_every_job_exactly_once(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest, sequence_json: str
) -> None:
    db = request.getfixturevalue("fresh_postgres_url") if backend == "postgres" else None
    with daemon(tmp_path, *(["--db", db] if db else [])) as handle:
        url = db or f"sqlite:///{handle.state_dir / 'scheduler.db'}"
        with httpx.Client(base_url=handle.url, headers=auth_header(USER), timeout=10) as client:
            shots = [LONG_SHOTS, SHORT_SHOTS] * 3 + [LONG_SHOTS] * 3
            accepted: dict[int, int] = {}
            for n in shots:
                response = client.post("/jobs", json={"sequence": sequence_json, "shots": n})
                assert response.status_code == 200, response.text
                accepted[response.json()["id"]] = n
            canceled = list(accepted)[-1]
            assert client.post(f"/jobs/{canceled}/cancel").json()["status"] == "CANCELED"

            wait_until(lambda: half_done(client), "a job to be half done")
            workers = wait_until(lambda: emulator_workers(handle), "the emulator worker")
            handle.kill()

            _, alive = psutil.wait_procs(workers, timeout=15)
            assert not alive, f"emulator workers outlived the scheduler: {alive}"
            store = Store(url)
            try:
                at_kill = {job.id: job for job in store.list_jobs(limit=1000)}
            finally:
                store.close()
            assert any(0 < j.shots_done < j.shots for j in at_kill.values()), "not killed mid-job"
            assert any(j.status == "PENDING" and j.id != canceled for j in at_kill.values())

            handle.restart()
            final = wait_until(lambda: all_final(client), "every job to reach a final state")

            assert sorted(final) == sorted(accepted), "a job was lost or invented"
            assert final[canceled]["status"] == "CANCELED" and final[canceled]["shots_done"] == 0
            for job_id, n in accepted.items():
                job = final[job_id]
                if job_id == canceled:
                    continue
                assert job["status"] == "DONE", job
                counts = json.loads(job["results"])["counter"]
                assert sum(counts.values()) == n == job["shots"] == job["shots_done"], job
                started = at_kill[job_id].started_at
                if started is not None:
                    assert job["started_at"] == iso_time(started), "the first start was lost"

            after = client.post("/jobs", json={"sequence": sequence_json, "shots": SHORT_SHOTS})
            assert after.json()["id"] > max(accepted), "a job id was reused after the restart"
