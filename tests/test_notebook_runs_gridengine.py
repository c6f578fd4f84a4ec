"""A notebook run (``qhpc run NOTEBOOK``) on the real Grid Engine dev cluster: the same
production run as on Slurm (tests/test_notebook_runs.py), its share a ``-l qpu=1`` request that
the queue prolog turns into a scheduler session and the epilog revokes."""

from __future__ import annotations

import pwd
import secrets
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from qhpc_lab.hpc.devcluster import GridEngineCluster
from tests.support.clusters import User
from tests.support.munge import FreshCredential
from tests.support.notebook_runs import RunsUser, executed_facts, submitted

pytestmark = [pytest.mark.munge, pytest.mark.slow]


@pytest.fixture(scope="module")
def alice(batch_gridengine_cluster: GridEngineCluster) -> Iterator[RunsUser]:
    """A real user of the session's Grid Engine batch-work cluster, the QPU kernel installed."""
    cluster = batch_gridengine_cluster
    name = f"qhpc{secrets.token_hex(3)}"
    subprocess.run(["useradd", "-m", "-s", "/bin/bash", name], check=True, capture_output=True)
    entry = pwd.getpwnam(name)
    try:
        with httpx.Client(
            base_url=cluster.scheduler_url, auth=FreshCredential(), timeout=10
        ) as admin:
            alice = RunsUser(cluster, User(name, entry.pw_uid, Path(entry.pw_dir)), admin)
            installed = alice.qhpc("kernels", "install", "--user")
            assert installed.returncode == 0, installed.stderr
            yield alice
    finally:
        cluster.qcommand("qdel", "-u", name, check=False)
        subprocess.run(["userdel", "-r", "-f", name], capture_output=True, timeout=30)


def test_a_notebook_runs_as_a_grid_engine_job(
    alice: RunsUser, report: Callable[[str], None]
) -> None:
    path = alice.notebook("analysis.ipynb")
    # Debian installs both clients here: sbatch on PATH would be found first
    done = alice.qhpc("run", str(path), "--scheduler", "gridengine", "-p", "label", "ge", "--wait")
    run_id, job_id = submitted(done)
    assert done.returncode == 0, done.stdout + done.stderr
    texts, facts = executed_facts(done)
    [qpu_job] = alice.qpu_jobs(job_id)
    assert (qpu_job["status"], qpu_job["job_class"]) == ("DONE", "production")
    assert any(f"ge 20 {qpu_job['id']}" in text for text in texts), texts
    assert [j["id"] for j in facts["qpu_jobs"]] == [str(qpu_job["id"])]
    session = alice.revoked_session(job_id)
    assert (qpu_job["session_id"], session["qpu_slots"]) == (session["id"], 1)
    assert f"gridengine {job_id} COMPLETED" in alice.status(run_id)
    report("qhpc run on Grid Engine: -l qpu=1, production QPU job, session revoked")
