"""A scheduler that dies while its QPU job runs on the device: its successor adopts the QPU job
and records its chunk exactly once (docs/scheduler.md, "The QPU API driver").

Real daemons (the CLI, ``--qpu-url``) drive ``qhpc qpu serve``. One is SIGKILLed while a chunk
of 2 000 shots runs on the device and started again on the same SQLite file; in the HA case
two replicas share a PostgreSQL database and the leader is SIGKILLed, the other takes over.
The device's own job list must then hold exactly the job's shots, each run once.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.daemons import Daemon, daemon, free_port, spawn, wait_healthy
from tests.support.identities import SECRET, USER, auth_header
from tests.support.polling import poll_until
from tests.support.programs import pulser_sequence_json
from tests.support.qpu_api import device_jobs, served

pytestmark = pytest.mark.slow

SHOTS = 6000
TIMING = {"QHPC_QPU_TIME_PER_SHOT_S": "0.0005", "QHPC_QPU_CHUNK_SECONDS": "1.0"}
"""The stand-in's ``test`` device: 0.5 ms a shot; chunks of 1 s, 2 000 shots."""


def _url(qpu: httpx.Client) -> str:
    return str(qpu.base_url).removesuffix("/").removesuffix("/api/v1")


def _submit(url: str) -> int:
    body = {"sequence": pulser_sequence_json(), "shots": SHOTS}
    response = httpx.post(f"{url}/jobs", json=body, headers=auth_header(USER), timeout=30)
    assert response.status_code == 200, response.text
    return response.json()["id"]


def _running_on_device(qpu: httpx.Client, job_id: int) -> dict[str, Any] | None:
    mine = [q for q in device_jobs(qpu) if q["batch_id"] == f"qhpc-job-{job_id}"]
    return next((q for q in mine if q["status"] == "RUNNING"), None)


def _done(url: str, job_id: int) -> dict[str, Any] | None:
    with httpx.Client(timeout=5) as client:
        try:
            job = client.get(f"{url}/jobs/{job_id}", headers=auth_header(USER)).json()
        except httpx.HTTPError:
            return None
    assert job["status"] in ("PENDING", "RUNNING", "DONE"), job
    return job if job["status"] == "DONE" else None


def _exactly_once(qpu: httpx.Client, job: dict[str, Any], killed_uid: int) -> None:
    import json

    assert sum(json.loads(job["results"])["counter"].values()) == SHOTS, job
    mine = [q for q in device_jobs(qpu) if q["batch_id"] == f"qhpc-job-{job['id']}"]
    assert all(q["status"] == "DONE" for q in mine), mine
    assert sum(q["nb_run"] for q in mine) == SHOTS, mine  # none lost, none run twice
    assert killed_uid in {q["uid"] for q in mine}


def test_a_scheduler_killed_mid_chunk_adopts_its_qpu_job(tmp_path: Path) -> None:
    with served(tmp_path) as qpu:
        extra = ("--qpu-url", _url(qpu))
        with daemon(tmp_path, *extra, env=TIMING) as scheduler:
            job_id = _submit(scheduler.url)
            running = poll_until(lambda: _running_on_device(qpu, job_id), "a QPU job runs", 60)
            scheduler.kill()
            scheduler.restart()
            done = poll_until(lambda: _done(scheduler.url, job_id), "the job ends", 120)
            _exactly_once(qpu, done, running["uid"])
            assert f"adopting QPU job {running['uid']}" in scheduler.log.read_text()


@pytest.fixture
def replicas(
    tmp_path: Path, fresh_postgres_url: str
) -> Iterator[tuple[httpx.Client, list[Daemon]]]:
    with served(tmp_path) as qpu:
        started: list[Daemon] = []
        try:
            for i in (1, 2):
                port, state = free_port(), tmp_path / f"replica{i}"
                state.mkdir()
                args = [sys.executable, "-m", "qhpc_lab.cli", "scheduler", "serve", "--port"]
                args += [str(port), "--db", fresh_postgres_url, "--ha", "--qpu-url", _url(qpu)]
                args += ["--lease-renew", "0.25", "--lease-ttl", "1"]
                env = {**os.environ, **TIMING, "QHPC_STATE_DIR": str(state)}
                env["QHPC_TOKEN_SECRET"] = SECRET
                log = state / "scheduler.log"
                started.append(
                    Daemon(f"http://127.0.0.1:{port}", spawn(args, env, log), state, args, env, log)
                )
            for replica in started:
                wait_healthy(replica.url, replica.process, replica.log, timeout=300)
            yield qpu, started
        finally:
            for replica in started:
                replica.process.terminate()
            for replica in started:
                try:
                    replica.process.wait(10)
                except subprocess.TimeoutExpired:
                    replica.kill()


def _leading(replica: Daemon) -> bool:
    try:
        health = httpx.get(f"{replica.url}/health", timeout=5).json()
    except httpx.HTTPError:
        return False
    return bool(health["replica"] and health["replica"]["leading"])


@pytest.mark.postgres
def test_a_replica_taking_over_adopts_the_qpu_job_in_flight(
    replicas: tuple[httpx.Client, list[Daemon]],
) -> None:
    qpu, started = replicas
    leader = poll_until(lambda: next(filter(_leading, started), None), "a leader", 60)
    other = next(replica for replica in started if replica is not leader)
    job_id = _submit(other.url)
    running = poll_until(lambda: _running_on_device(qpu, job_id), "a QPU job runs", 60)
    leader.kill()
    poll_until(lambda: _leading(other), "the other replica leads", 30)
    done = poll_until(lambda: _done(other.url, job_id), "the job ends", 120)
    _exactly_once(qpu, done, running["uid"])
    assert f"adopting QPU job {running['uid']}" in other.log.read_text()
