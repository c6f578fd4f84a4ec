"""A two-QPU site under real Slurm: ``qhpc dev-cluster start --qpus 2``, one job holding both.

A module of its own, because it needs its own dev cluster (licences ``qpu_a`` and ``qpu_b``, a
scheduler daemon each, hooks configured with ``[[qpus]]``) and tests/test_slurm.py's
single-QPU cluster must be stopped before this one starts: two Slurm clusters at once would
double the load on a 2-core machine. One user, one job, one start.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import httpx
import pytest

from qhpc_lab.hpc.devcluster import DevCluster
from qhpc_lab.hpc.devcluster.processes import port_free
from qhpc_lab.hpc.slurm import REVOKE_REASON
from tests.support.clusters import (
    SEQUENCE_CODE,
    SchedulerView,
    Site,
    add_user,
    dev_cluster,
    remove_user,
)
from tests.support.daemons import free_port
from tests.support.munge import FreshCredential
from tests.support.reporting import say

pytestmark = [pytest.mark.munge, pytest.mark.slow]

TWO_QPU_SCRIPT = f'''\
"""A batch user's script on two QPUs: the QRMI variables, the targets, one program routed."""
import json
import os

from qhpc_lab.client import Client
{SEQUENCE_CODE}
for name in sorted(os.environ):
    if "QRMI" in name:
        print("env", name, os.environ[name], flush=True)
client = Client()
for info in client.targets():
    print("target-info", json.dumps([info.name, info.reachable, info.device]), flush=True)
job = client.submit(sequence, shots=50, target="auto")
print("routed", job.target, "|", job.route, flush=True)
print("counts", json.dumps(job.result().counts), flush=True)
'''


def _port_pair() -> int:
    """A free port whose neighbour is free too (the second QPU's scheduler, or its QPU API)."""
    for _ in range(50):
        port = free_port()
        if port < 65535 and port_free(port + 1):
            return port
    pytest.fail("no two free neighbouring ports in 50 tries")


class QPUView(SchedulerView):
    """One QPU's scheduler, asked as root (an administrator) over MUNGE."""

    def __init__(self, url: str) -> None:
        self.admin = httpx.Client(base_url=url, auth=FreshCredential(), timeout=10)


@pytest.fixture(scope="module")
def two_qpu_site(munged: None, pytestconfig: pytest.Config) -> Iterator[Site]:
    """The two-QPU dev cluster, one real user (removed afterwards) and the job script."""
    ports = ("slurmctld_port", "slurmd_port")
    settings = {"qpus": 2, "scheduler_port": _port_pair(), "qpu_port": _port_pair()}
    with dev_cluster(DevCluster, "Slurm 2-QPU", pytestconfig, ports, **settings) as cluster:
        user = add_user(cluster)
        try:
            script = cluster.directory / "two_qpu_job.py"
            script.write_text(TWO_QPU_SCRIPT)
            script.chmod(0o644)
            with httpx.Client(auth=FreshCredential(), timeout=10) as admin:
                yield Site(cluster, user, user, script, admin)
        finally:
            remove_user(cluster, user)


def test_one_job_holds_two_qpus(two_qpu_site: Site, pytestconfig: pytest.Config) -> None:
    """sbatch -L qpu_a:1,qpu_b:1: a session on each QPU, both in the QRMI variables, the
    program routed to one of them, both sessions revoked by the Epilog."""
    site = two_qpu_site
    cluster = site.cluster
    assert cluster.resources == ["qpu_a", "qpu_b"]
    job_id, output = site.sbatch(
        site.alice, "-L", "qpu_a:1,qpu_b:1", command=f"{cluster.python} {site.job_script}"
    )
    assert site.wait_job(job_id) == "COMPLETED", output.read_text()
    text = output.read_text()
    env = dict(re.findall(r"^env (\S+) (\S*)$", text, re.MULTILINE))
    assert env["QRMI_JOB_QPU_RESOURCES"] == "qpu_a,qpu_b", text
    assert env["QRMI_JOB_QPU_TYPES"] == "pasqal-local,pasqal-local"
    assert env["QRMI_JOB_ID"] == job_id
    infos = {
        name: (reachable, device)
        for name, reachable, device in (
            json.loads(line) for line in re.findall(r"^target-info (.*)$", text, re.MULTILINE)
        )
    }
    assert infos["qpu_a"] == (True, "QHPC-Test") and infos["qpu_b"] == (True, "QHPC-Demo"), text
    routed = re.search(r"^routed (\S+) \| (.*)$", text, re.MULTILINE)
    assert routed and routed.group(1) in ("qpu_a", "qpu_b"), text
    assert routed.group(2).startswith(f"{routed.group(1)}: "), text
    assert sum(json.loads(re.search(r"^counts (.*)$", text, re.MULTILINE).group(1)).values()) == 50
    for name, url in cluster.scheduler_urls.items():
        view = QPUView(url)
        with view.admin:
            session = view.revoked_session(job_id)
            assert session["id"] == env[f"{name}_QRMI_JOB_ACQUISITION_TOKEN"]
            assert env[f"{name}_QRMI_WARDEN_URL"] == url
            assert (session["user_id"], session["qpu_slots"]) == (str(site.alice.uid), 1)
            assert session["revoke_reason"] == REVOKE_REASON
            jobs = view.qpu_jobs(job_id)
            assert len(jobs) == (1 if name == routed.group(1) else 0), jobs
        assert not (cluster.run_dir / name / f"job-{job_id}.json").exists()
    say(pytestconfig, f"\n  scenario [sbatch -L qpu_a:1,qpu_b:1]: routed {routed.group(2)}")
