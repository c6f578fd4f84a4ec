"""A job's story where users read it: the kernel's Result draws its timeline, and
``GET /jobs/{id}/logs`` (what QRMI shows) tells the same story as text."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import httpx
import matplotlib

from qhpc_lab.client import Client
from qhpc_lab.programs import Program
from tests.support.client_env import lab_env
from tests.support.daemons import daemon
from tests.support.identities import ADMIN, USER, auth_header
from tests.support.polling import poll_until

matplotlib.use("Agg")


def test_a_preempted_job_draws_and_tells_why_it_waited(tmp_path: Path, sequence_json: str) -> None:
    with daemon(tmp_path) as handle:
        client = Client(environ={"HOME": str(tmp_path), **lab_env(handle.url)})
        try:
            production = client.submit(
                Program(format="pulser", body=sequence_json, shots=3000), job_class="production"
            )
            poll_until(lambda: production.refresh().shots_done > 0, "production to start", 120)
            development = client.submit(
                Program(format="pulser", body=sequence_json, shots=100), job_class="development"
            )
            assert development.wait(120) == "DONE"
            result = production.result(180)
            entries = result.timeline()
            ax = result.plot_timeline()
        finally:
            client.close()
        with httpx.Client(base_url=handle.url, headers=auth_header(USER)) as http:
            logs = http.get(f"/jobs/{production.id}/logs").json()["logs"]

    kinds = [entry["event"] for entry in entries]
    assert kinds[0] == "queued" and kinds[-1] == "finished", kinds
    assert "waited_behind" in kinds and kinds.count("chunk") >= 2, kinds
    behind = next(e for e in entries if e["event"] == "waited_behind")
    assert behind["by_class"] == "development"
    bars = [patch for collection in ax.collections for patch in collection.get_paths()]
    assert len(bars) == len([e for e in entries if "until" in e]), "one bar per span"
    assert [t.get_text() for t in ax.get_yticklabels()] == ["this job", "other classes", "device"]

    lines = logs.splitlines()
    assert lines[0].startswith(f"job {production.id} (pulser, 3000 shots, class production): DONE")
    ran = [line for line in lines if " ran " in line and "shots in" in line]
    assert len(ran) >= 2, f"the chunks before and after the development job: {logs}"
    assert sum(int(line.split(" ran ")[1].split()[0]) for line in ran) == 3000
    runs = [" ran " in line and "shots in" in line for line in lines]
    assert not any(a and b for a, b in itertools.pairwise(runs)), "one line per run of chunks"
    assert any("while 1 development chunk (100 shots) ran" in line for line in lines), logs
    assert lines[-1].endswith("finished DONE")


def test_json_logs_carry_each_jobs_ids(tmp_path: Path, sequence_json: str) -> None:
    with daemon(tmp_path, "--log-format", "json") as handle:
        with (
            httpx.Client(base_url=handle.url, headers=auth_header(ADMIN, admin=True)) as admin,
            httpx.Client(base_url=handle.url, headers=auth_header(USER)) as user,
        ):
            opened = admin.post("/sessions", json={"user_id": USER, "slurm_job_id": "4242"})
            session = opened.json()["id"]
            job = user.post(
                "/jobs",
                json={"sequence": sequence_json, "shots": 100},
                headers={"X-Warden-Session": session},
            ).json()
            poll_until(
                lambda: user.get(f"/jobs/{job['id']}").json()["status"] == "DONE", "the job", 120
            )
        handle.process.terminate()
        handle.process.wait(30)
    records = [json.loads(line) for line in handle.log.read_text().splitlines() if line[:1] == "{"]
    assert records, "no JSON lines in the log"
    assert all({"time", "logger", "level", "message"} <= set(r) for r in records)
    mine = [r for r in records if r.get("job_id") == job["id"]]
    assert [r["message"].split(":")[0].split(",")[0] for r in mine] == [
        f"job {job['id']} accepted",
        f"job {job['id']} DONE",
    ]
    for record in mine:
        assert record["user_id"] == USER and record["session_id"] == session
        assert record["slurm_job_id"] == "4242"
