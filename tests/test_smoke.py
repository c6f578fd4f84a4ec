"""The scheduler runs a job end to end, in-process and over a real socket."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.support.identities import USER, auth_header
from tests.support.polling import poll_until, wait_for_status


@pytest.mark.anyio
async def test_job_runs_in_process(api, sequence_json):
    response = await api.user.post("/jobs", json={"sequence": sequence_json, "shots": 150})
    assert response.status_code == 200, response.text
    job = response.json()
    assert isinstance(job["id"], int) and job["user_id"] == USER
    done = await wait_for_status(api.user, job["id"])
    counts = json.loads(done["results"])["counter"]
    assert sum(counts.values()) == 150


def test_job_runs_over_socket(server, sequence_json):
    with httpx.Client(base_url=server.url, headers=auth_header(USER)) as client:
        job_id = client.post("/jobs", json={"sequence": sequence_json, "shots": 10}).json()["id"]

        def done() -> dict | None:
            job = client.get(f"/jobs/{job_id}").json()
            return job if job["status"] == "DONE" else None

        job = poll_until(done, f"job {job_id} to be DONE", timeout=30)
        assert sum(json.loads(job["results"])["counter"].values()) == 10


def test_version_says_the_installed_release() -> None:
    """``qhpc --version`` and ``qhpc_lab.__version__``: what a bug report names."""
    import subprocess
    import sys
    from importlib.metadata import version

    import qhpc_lab

    said = subprocess.run(
        [sys.executable, "-m", "qhpc_lab.cli", "--version"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert said.strip() == f"qhpc-lab {version('qhpc-lab')}" == f"qhpc-lab {qhpc_lab.__version__}"
