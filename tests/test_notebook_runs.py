"""Notebook runs (``qhpc run NOTEBOOK``) on the real Slurm dev cluster, as an unprivileged user.

The user installs the "Python 3 (QPU)" kernel, writes a notebook with a parameters cell and a
``%%qpu`` cell, and runs it as a batch job holding ``qpu:1``: the executed notebook holds the
counts and their provenance, its QPU job ran as production under the batch job's session, and
the Epilog revoked that session. A failing cell fails the run and says which; a cancelled run
revokes its session, cancelling its queued QPU job; refusals submit nothing. Each scenario
prints its duration; none asserts on time.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator

import httpx
import nbformat
import pytest

from qhpc_lab.hpc.devcluster import DevCluster
from tests.support.clusters import add_user, remove_user
from tests.support.munge import FreshCredential
from tests.support.notebook_runs import FAILING_CELL, RunsUser, executed_facts, submitted
from tests.support.polling import poll_until

pytestmark = [pytest.mark.munge, pytest.mark.slow]


@pytest.fixture(scope="module")
def cluster(batch_slurm_cluster: DevCluster) -> DevCluster:
    """The session's batch-work cluster (conftest), shared with the other batch modules."""
    return batch_slurm_cluster


@pytest.fixture(scope="module")
def alice(cluster: DevCluster) -> Iterator[RunsUser]:
    """A real user with the QPU kernel installed in their home (removed afterwards)."""
    user = add_user(cluster)
    try:
        with httpx.Client(
            base_url=cluster.scheduler_url, auth=FreshCredential(), timeout=10
        ) as admin:
            alice = RunsUser(cluster, user, admin)
            installed = alice.qhpc("kernels", "install", "--user")
            assert installed.returncode == 0, installed.stderr
            yield alice
    finally:
        remove_user(cluster, user)


def test_a_notebook_runs_as_a_production_batch_job(
    alice: RunsUser, report: Callable[[str], None]
) -> None:
    path = alice.notebook("analysis.ipynb")
    done = alice.qhpc(
        "run", str(path), "--qpu", "1", "-p", "omega", "1.5", "-p", "label", "prod", "--wait"
    )
    run_id, job_id = submitted(done)
    assert done.returncode == 0, done.stdout + done.stderr
    executed = path.with_name(f"analysis.run-{run_id.rsplit('-', 1)[-1]}.ipynb")
    assert f"executed notebook: {executed}" in done.stdout
    texts, facts = executed_facts(done)
    [qpu_job] = alice.qpu_jobs(job_id)
    assert (qpu_job["status"], qpu_job["job_class"]) == ("DONE", "production")
    qpu_id = str(qpu_job["id"])
    assert any(f"prod 20 {qpu_id}" in text for text in texts), texts  # parameters, counts
    assert any(f"qhpc provenance: job {qpu_id} on qpu: DONE" in t for t in texts), texts
    assert (facts["batch_job"], facts["failure"], facts["parameters"]) == (
        job_id,
        None,
        {"omega": 1.5, "label": "prod"},
    )
    [recorded] = facts["qpu_jobs"]
    assert (recorded["id"], recorded["status"], recorded["job_class"]) == (
        qpu_id,
        "DONE",
        "production",
    )
    assert recorded["calibrations"] and len(recorded["program_sha256"]) == 64
    assert facts["versions"]["pulser-core"]
    session = alice.revoked_session(job_id)
    assert qpu_job["session_id"] == session["id"]
    assert f"slurm {job_id} COMPLETED" in alice.status(run_id)
    report("qhpc run: notebook with parameters as a batch job, production QPU job, session revoked")


def test_a_failing_cell_fails_the_run_and_says_which(
    alice: RunsUser, report: Callable[[str], None]
) -> None:
    done = alice.qhpc("run", str(alice.notebook("broken.ipynb", fail=True)), "--wait")
    run_id, job_id = submitted(done)
    assert done.returncode == 1
    why = f"cell {FAILING_CELL}: ZeroDivisionError: division by zero"
    assert f"failed: {why}" in done.stdout, done.stdout
    told = alice.status(run_id)
    assert f"slurm {job_id} FAILED" in told and why in told, told
    _, facts = executed_facts(done)
    assert facts["failure"] == why
    report("a failing cell: the batch job FAILED, status names the cell and the error")


def test_cancel_revokes_the_session_and_its_queued_qpu_job(
    alice: RunsUser, report: Callable[[str], None]
) -> None:
    alice.admin.post("/admin/drain").raise_for_status()  # the QPU job stays queued
    try:
        started = alice.qhpc("run", str(alice.notebook("long.ipynb")))
        assert started.returncode == 0, started.stderr
        run_id, job_id = submitted(started)

        def queued() -> str | None:
            told = alice.status(run_id)
            return told.split("QPU job ")[1].split()[0] if "on qpu: PENDING" in told else None

        qpu_id = poll_until(queued, "the run's QPU job is queued and journalled", 240)
        cancelled = alice.qhpc("runs", "cancel", run_id)
        assert cancelled.returncode == 0, cancelled.stderr
        session = alice.revoked_session(job_id)
        [qpu_job] = alice.qpu_jobs(job_id)
        assert (str(qpu_job["id"]), qpu_job["status"]) == (qpu_id, "CANCELED")
        assert qpu_job["session_id"] == session["id"]

        def ended() -> str | None:
            told = alice.status(run_id)
            return told if "CANCELLED" in told else None

        told = poll_until(ended, "the run reads CANCELLED", 60)
        assert f"slurm {job_id} CANCELLED" in told, told
        listed = alice.qhpc("runs").stdout.splitlines()
        assert listed[0].startswith(run_id) and listed[0].endswith("long.ipynb"), listed
    finally:
        alice.admin.post("/admin/resume").raise_for_status()
    report("qhpc runs cancel: batch job cancelled, session revoked, queued QPU job cancelled")


def test_refusals_submit_nothing(alice: RunsUser, report: Callable[[str], None]) -> None:
    ledger = alice.user.home / ".local/share/qhpc/batch"
    before = sorted(ledger.iterdir()) if ledger.is_dir() else []
    unknown = alice.qhpc("run", str(alice.notebook("refused.ipynb")), "-p", "shots", "10")
    assert (unknown.returncode, unknown.stderr.strip()) == (
        1,
        "qhpc run: no parameter 'shots' in refused.ipynb's parameters cell (it has omega, label)",
    )
    missing = alice.qhpc("run", str(alice.notebook("julia.ipynb", kernel="julia-1.10")))
    assert missing.returncode == 1
    [line] = missing.stderr.strip().splitlines()
    assert "runs in kernel 'julia-1.10', which is not installed where the batch job runs" in line
    assert (sorted(ledger.iterdir()) if ledger.is_dir() else []) == before
    queue = subprocess.run(
        ["squeue", "-h", "-u", alice.user.name],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin", **alice.cluster.environ},
    )
    assert queue.stdout.strip() == ""
    report("refused before submission: an unknown parameter, a kernel not installed")


def test_the_executed_notebook_shows_the_error_in_its_cell(alice: RunsUser) -> None:
    """What the failing run left (the previous scenario's notebook): the error output of
    the cell that failed, papermill's banner above, the cells after it not run."""
    [path] = alice.user.home.glob("broken.run-*.ipynb")
    cells = nbformat.read(path, as_version=4).cells
    errors = [o for c in cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert [e.ename for e in errors] == ["ZeroDivisionError"]
    assert cells[-1].execution_count is None
