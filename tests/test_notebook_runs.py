"""Notebook runs (``qhpc run NOTEBOOK``) on the real Slurm dev cluster, as an unprivileged user.

The user installs the "Python 3 (QPU)" kernel, writes a notebook with a parameters cell and a
``%%qpu`` cell, and runs it as a batch job holding ``qpu:1``: the executed notebook holds the
counts and their provenance, its QPU job ran as production under the batch job's session, and
the Epilog revoked that session. A failing cell fails the run and says which; a cancelled run
revokes its session, cancelling its queued QPU job; refusals submit nothing. Each scenario
prints its duration; none asserts on time.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import nbformat
import pytest

from qhpc_lab.hpc.devcluster import DevCluster
from tests.support.clusters import Site, User, add_user, remove_user, slurm_dev_cluster
from tests.support.munge import FreshCredential
from tests.support.notebook_runs import FAILING_CELL, write_notebook
from tests.support.polling import poll_until

pytestmark = [pytest.mark.munge, pytest.mark.slow]


@pytest.fixture(scope="module")
def cluster(munged: None, pytestconfig: pytest.Config) -> Iterator[DevCluster]:
    with slurm_dev_cluster(pytestconfig) as started:
        yield started


@pytest.fixture(scope="module")
def site(cluster: DevCluster) -> Iterator[Site]:
    """One real user with the QPU kernel installed in their home, an admin client."""
    users: list[User] = []
    try:
        users.append(add_user(cluster))
        with httpx.Client(
            base_url=cluster.scheduler_url, auth=FreshCredential(), timeout=10
        ) as admin:
            site = Site(cluster, users[0], users[0], cluster.directory, admin)
            installed = qhpc(site, "kernels", "install", "--user")
            assert installed.returncode == 0, installed.stderr
            yield site
    finally:
        for user in users:
            remove_user(cluster, user)


def qhpc(site: Site, *args: str) -> subprocess.CompletedProcess[str]:
    """``qhpc ARGS`` as the user, in their home."""
    return site.run_as(site.alice, site.cluster.python, "-m", "qhpc_lab.cli", *args)


def notebook(site: Site, name: str, **options: object) -> Path:
    path = write_notebook(site.alice.home / name, **options)  # type: ignore[arg-type]
    subprocess.run(["chown", site.alice.name, str(path)], check=True)
    return path


def submitted(done: subprocess.CompletedProcess[str]) -> tuple[str, str]:
    """The run id and Slurm job id ``qhpc run`` printed."""
    found = re.search(r"as slurm job (\d+) \(run (notebook-\S+)\)", done.stdout)
    assert found, done.stdout
    return found[2], found[1]


def status(site: Site, run_id: str) -> str:
    done = qhpc(site, "runs", "status", run_id)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_notebook_runs_as_a_production_batch_job(
    site: Site, report: Callable[[str], None]
) -> None:
    path = notebook(site, "analysis.ipynb")
    done = qhpc(
        site, "run", str(path), "--qpu", "1", "-p", "omega", "1.5", "-p", "label", "prod", "--wait"
    )
    run_id, job_id = submitted(done)
    assert done.returncode == 0, done.stdout + done.stderr
    executed = path.with_name(f"analysis.run-{run_id.rsplit('-', 1)[-1]}.ipynb")
    assert f"executed notebook: {executed}" in done.stdout
    result = nbformat.read(executed, as_version=4)
    texts = ["".join(o.get("text", "")) for c in result.cells for o in c.get("outputs", [])]
    [qpu_job] = site.qpu_jobs(job_id)
    assert any(f"prod 20 {qpu_job['id']}" in text for text in texts), texts  # parameters, counts
    assert any(f"qhpc provenance: job {qpu_job['id']} on qpu: DONE" in t for t in texts), texts
    facts = result.metadata["qhpc"]
    assert (facts["batch_job"], facts["failure"], facts["parameters"]["omega"]) == (
        job_id,
        None,
        1.5,
    )
    [recorded] = facts["qpu_jobs"]
    assert (recorded["id"], recorded["status"], recorded["job_class"]) == (
        str(qpu_job["id"]),
        "DONE",
        "production",
    )
    assert recorded["calibrations"] and len(recorded["program_sha256"]) == 64
    assert facts["versions"]["pulser-core"]
    assert (qpu_job["status"], qpu_job["job_class"]) == ("DONE", "production")
    session = site.revoked_session(job_id)
    assert qpu_job["session_id"] == session["id"]
    assert f"slurm {job_id} COMPLETED" in status(site, run_id)
    report("qhpc run: notebook with parameters as a batch job, production QPU job, session revoked")


def test_a_failing_cell_fails_the_run_and_says_which(
    site: Site, report: Callable[[str], None]
) -> None:
    path = notebook(site, "broken.ipynb", fail=True)
    done = qhpc(site, "run", str(path), "--wait")
    run_id, job_id = submitted(done)
    assert done.returncode == 1
    why = f"cell {FAILING_CELL}: ZeroDivisionError: division by zero"
    assert f"failed: {why}" in done.stdout, done.stdout
    told = status(site, run_id)
    assert f"slurm {job_id} FAILED" in told and why in told, told
    executed = nbformat.read(Path(re.findall(r"executed notebook: (\S+)", done.stdout)[-1]), 4)
    assert executed.metadata["qhpc"]["failure"] == why
    errors = [o for c in executed.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert [e.ename for e in errors] == ["ZeroDivisionError"]
    report("a failing cell: the batch job FAILED, status names the cell and the error")


def test_cancel_revokes_the_session_and_its_queued_qpu_job(
    site: Site, report: Callable[[str], None]
) -> None:
    site.admin.post("/admin/drain").raise_for_status()  # the QPU job stays queued
    try:
        started = qhpc(site, "run", str(notebook(site, "long.ipynb")))
        assert started.returncode == 0, started.stderr
        run_id, job_id = submitted(started)
        queued = poll_until(
            lambda: re.search(r"QPU job (\d+) on qpu: PENDING", status(site, run_id)),
            "the run's QPU job is queued and journalled",
            240,
        )
        cancelled = qhpc(site, "runs", "cancel", run_id)
        assert cancelled.returncode == 0, cancelled.stderr
        assert site.wait_job(job_id) == "CANCELLED"
        session = site.revoked_session(job_id)
        [qpu_job] = site.qpu_jobs(job_id)
        assert (str(qpu_job["id"]), qpu_job["status"]) == (queued[1], "CANCELED")
        assert qpu_job["session_id"] == session["id"]
        assert f"slurm {job_id} CANCELLED" in status(site, run_id)
        listed = qhpc(site, "runs").stdout.splitlines()
        assert listed[0].startswith(run_id) and listed[0].endswith("long.ipynb"), listed
    finally:
        site.admin.post("/admin/resume").raise_for_status()
    report("qhpc runs cancel: batch job cancelled, session revoked, queued QPU job cancelled")


def test_refusals_submit_nothing(site: Site, report: Callable[[str], None]) -> None:
    ledger = site.alice.home / ".local/share/qhpc/batch"
    before = sorted(ledger.iterdir()) if ledger.is_dir() else []
    path = notebook(site, "refused.ipynb")
    unknown = qhpc(site, "run", str(path), "-p", "shots", "10")
    assert unknown.returncode == 1
    assert unknown.stderr.strip() == (
        "qhpc run: no parameter 'shots' in refused.ipynb's parameters cell (it has omega, label)"
    )
    missing = qhpc(site, "run", str(notebook(site, "other.ipynb", kernel="julia-1.10")))
    assert missing.returncode == 1
    assert "runs in kernel 'julia-1.10', which is not installed" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1
    assert (sorted(ledger.iterdir()) if ledger.is_dir() else []) == before
    queue = subprocess.run(
        ["squeue", "-h", "-u", site.alice.name],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin", **site.cluster.environ},
    )
    assert queue.stdout.strip() == ""
    report("refused before submission: an unknown parameter, a kernel not installed")
