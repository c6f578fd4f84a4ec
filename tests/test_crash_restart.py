"""A scheduler killed mid-run loses no accepted job and runs none twice (docs/scheduler.md).

The real daemon is SIGKILLed while one multi-chunk job, a sweep, is half done and others wait,
then restarted on the same state (SQLite file or PostgreSQL database). Every job must end in
one final state with exactly its shots counted, and each of the sweep's sets with its own: a
chunk merged twice or lost would show.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from qhpc_lab.scheduler.store import Store
from qhpc_lab.vocabulary import FINAL_STATUSES
from qhpc_lab.wire.times import iso_time
from tests.support.daemons import daemon, free_port
from tests.support.identities import SECRET, USER, auth_header
from tests.support.polling import poll_until
from tests.support.programs import parametrised_sequence_json

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
# The test profile runs 100-shot chunks of 50 ms: long jobs span many chunks, short ones two.
# The last job is canceled while queued and must stay so.
SHOTS = (3000, 150, 1000, 150, 3000)
SWEEP = [{"variables": {"omega": omega}} for omega in (1.0, 2.0, 3.0)]
"""Submitted first, 600 shots a set: the job the kill finds half done (18 chunks)."""
SWEEP_SHOTS = 600


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
    return jobs if jobs and all(job["status"] in FINAL_STATUSES for job in jobs.values()) else None


def children_with_worker(pid: int) -> list[psutil.Process]:
    """A daemon's child processes, once the emulator worker (a spawned child) is among them."""
    children = psutil.Process(pid).children(recursive=True)
    return children if any(map(is_worker, children)) else []


def is_worker(process: psutil.Process) -> bool:
    """The pool's worker runs ``spawn_main``; the resource tracker, the other child, does not."""
    try:
        return "spawn_main" in " ".join(process.cmdline())
    except psutil.Error:  # gone meanwhile
        return False


def exited(process: psutil.Process) -> bool:
    """Gone, or a zombie: dead, only not yet reaped by the init process that adopted it."""
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def assert_all_exit(processes: list[psutil.Process], what: str) -> None:
    """Wait for ``processes`` to exit; kill survivors (ours: an orphan would wait forever)."""
    try:
        poll_until(
            lambda: all(map(exited, processes)),
            lambda: f"{what} {[p for p in processes if not exited(p)]}",
            timeout=120,
        )
    finally:
        for process in processes:
            if not exited(process):
                process.kill()


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_killed_scheduler_finishes_every_job_exactly_once(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest, sequence_json: str
) -> None:
    db = request.getfixturevalue("fresh_postgres_url") if backend == "postgres" else None
    with daemon(tmp_path, *(["--db", db] if db else [])) as handle:
        url = db or f"sqlite:///{handle.state_dir / 'scheduler.db'}"
        with httpx.Client(base_url=handle.url, headers=auth_header(USER), timeout=10) as client:
            accepted: dict[int, int] = {}
            body = {"sequence": parametrised_sequence_json(), "shots": SWEEP_SHOTS, "sweep": SWEEP}
            response = client.post("/jobs", json=body)
            assert response.status_code == 200, response.text
            sweep = response.json()["id"]
            accepted[sweep] = SWEEP_SHOTS * len(SWEEP)
            for n in SHOTS:
                response = client.post("/jobs", json={"sequence": sequence_json, "shots": n})
                assert response.status_code == 200, response.text
                accepted[response.json()["id"]] = n
            canceled = list(accepted)[-1]
            assert client.post(f"/jobs/{canceled}/cancel").json()["status"] == "CANCELED"

            poll_until(lambda: half_done(client), "a job to be half done")
            children = poll_until(
                lambda: children_with_worker(handle.process.pid), "the emulator worker"
            )
            handle.kill()

            assert_all_exit(children, "the scheduler's children to die with it")
            store = Store(url)
            try:
                at_kill = {job.id: job for job in store.list_jobs(limit=1000)}
            finally:
                store.close()
            assert 0 < at_kill[sweep].shots_done < at_kill[sweep].shots, "not killed mid-sweep"
            assert any(j.status == "PENDING" and j.id != canceled for j in at_kill.values())

            handle.restart()
            final = poll_until(
                lambda: all_final(client),
                lambda: (
                    "every job to reach a final state: "
                    + str(
                        {i: (j["status"], j["shots_done"]) for i, j in jobs_by_id(client).items()}
                    )
                ),
                timeout=120,
            )

            assert sorted(final) == sorted(accepted), "a job was lost or invented"
            assert final[canceled]["status"] == "CANCELED" and final[canceled]["shots_done"] == 0
            for job_id, n in accepted.items():
                if job_id == canceled:
                    continue
                job = final[job_id]
                assert job["status"] == "DONE", job
                counts = json.loads(job["results"])["counter"]
                assert sum(counts.values()) == n == job["shots"] == job["shots_done"], job
                started = at_kill[job_id].started_at
                if started is not None:
                    assert job["started_at"] == iso_time(started), "the first start was lost"

            sets = client.get(f"/jobs/{sweep}/sets").json()["sets"]
            ran = [(s["shots_done"], sum(s["counter"].values())) for s in sets]
            assert ran == [(SWEEP_SHOTS, SWEEP_SHOTS)] * len(SWEEP), "a set ran twice or lost"

            after = client.post("/jobs", json={"sequence": sequence_json, "shots": 10})
            assert after.json()["id"] > max(accepted), "a job id was reused after the restart"


def test_worker_still_starting_dies_with_a_killed_scheduler(tmp_path: Path) -> None:
    """The worker sets its own death signal: a scheduler killed before that must not orphan it."""
    environment = {**os.environ, "QHPC_STATE_DIR": str(tmp_path), "QHPC_TOKEN_SECRET": SECRET}
    args = ["scheduler", "serve", "--port", str(free_port()), "--device", "test"]
    process = subprocess.Popen(
        [sys.executable, "-m", "qhpc_lab.cli", *args],
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        children = poll_until(lambda: children_with_worker(process.pid), "the emulator worker")
    finally:
        process.kill()
        process.wait(10)
    assert_all_exit(children, "the starting worker to follow the killed scheduler")
