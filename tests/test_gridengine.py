"""Grid Engine integration on a real single-node cluster: Debian's Grid Engine 8.1.9, real MUNGE.

The module starts ``qhpc dev-cluster`` for Grid Engine (a scheduler with MUNGE auth,
sge_qmaster and sge_execd with a private SGE_ROOT on free ports, our queue prolog and epilog
and load sensor; munged comes from the shared fixture), creates an unprivileged user and runs
their jobs through qsub. It shares nothing with the Slurm dev cluster of tests/test_slurm.py
but munged. Each scenario prints its duration; none asserts on time. The first tests check
the hooks' parsing and the load sensor protocol without a cluster.
"""

from __future__ import annotations

import io
import pwd
import re
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from qhpc_lab.hpc import gridengine
from qhpc_lab.hpc.devcluster import GridEngineCluster
from qhpc_lab.hpc.gridengine import (
    REVOKE_REASON,
    GridEngineConfig,
    JobRecord,
    job_environment,
    qpu_slots,
    read_environment,
    time_limit_s,
    update_environment,
)
from tests import test_jupyterhub as hub_test
from tests import test_slurm
from tests.conftest import free_port, poll_until
from tests.fixtures_munge import FreshCredential
from tests.test_slurm import (
    EMULATOR_ANNOUNCED,
    SchedulerView,
    User,
    _counts,
    dev_cluster,
    scheduler_unreachable,
    write_job_script,
)

pytestmark = [pytest.mark.munge, pytest.mark.slow]
report = test_slurm.report
RUNUSER = shutil.which("runuser") or "/usr/sbin/runuser"

QSTAT = """\
==============================================================
job_number:                 7
owner:                      alice
uid:                        1001
hard resource_list:         {resources}
job_name:                   STDIN
"""


# -- the hooks' parsing, no cluster --------------------------------------------------------


@pytest.mark.parametrize(
    ("resources", "slots", "limit"),
    [
        ("qpu=1", 1, None),
        ("h_rt=600,qpu=2", 2, 600),
        ("qpu=3.000000,h_rt=0:10:0", 3, 600),
        ("s_rt=1:00:00,qpu=1", 1, 3600),
        ("h_vmem=1G", 0, None),
        ("qpux=2", 0, None),
    ],
)
def test_qpu_slots_and_limit_from_qstat(resources: str, slots: int, limit: int | None) -> None:
    details = QSTAT.format(resources=resources)
    assert qpu_slots(details, "qpu") == slots
    assert time_limit_s(details) == limit
    assert gridengine._owner(details) == 1001


def test_environment_file_gets_the_qrmi_variables(tmp_path: Path) -> None:
    """The prolog's change to the job's environment file, with QRMI_LIST_DELIMITER and a
    resource another integration set for this job kept, an enclosing job's session dropped."""
    config = GridEngineConfig()
    path = tmp_path / "environment"
    path.write_text(
        "PATH=/bin\nQRMI_LIST_DELIMITER=;\nQRMI_JOB_ID=7\nQRMI_JOB_QPU_RESOURCES=cloud\n"
        "QRMI_JOB_QPU_TYPES=pasqal-cloud\nqpu_QRMI_JOB_ACQUISITION_TOKEN=stale"
    )
    record = JobRecord("7", 1001, "qpu", "http://qpu:8006", 2, 600, session="s-1")
    change = job_environment(config, read_environment(path), record, "7", uid="1001")
    update_environment(path, change.set, change.unset)
    env = read_environment(path)
    assert env["qpu_QRMI_JOB_ACQUISITION_TOKEN"] == "s-1"
    assert env["qpu_QRMI_WARDEN_URL"] == "http://qpu:8006"
    assert env["qpu_QRMI_JOB_TIMEOUT_SECONDS"] == "600"
    assert env["QRMI_JOB_QPU_RESOURCES"] == "cloud;qpu"
    assert env["QRMI_JOB_QPU_TYPES"] == "pasqal-cloud;pasqal-local"
    assert (env["QRMI_JOB_UID"], env["QRMI_JOB_ID"], env["PATH"]) == ("1001", "7", "/bin")
    assert "SLURM_JOB_QPU_RESOURCES" not in env
    assert path.stat().st_mode & 0o777 == 0o600
    # a job without a share, started from inside job 7: nothing of job 7's survives
    change = job_environment(config, env, None, "8")
    update_environment(path, change.set, change.unset)
    assert not {k for k in read_environment(path) if "QRMI" in k} - {"QRMI_LIST_DELIMITER"}


def test_load_sensor_protocol_without_a_scheduler() -> None:
    """Not ready, and Grid Engine's own slot booking, while the scheduler does not answer."""
    config = GridEngineConfig(scheduler_url=f"http://127.0.0.1:{free_port()}", slots_total=4)
    out = io.StringIO()
    gridengine.load_sensor(config, io.StringIO("\n\nquit\n\n"), out)
    report = "begin\nglobal:qpu_ready:0\nglobal:qpu:4\nend\n"
    assert out.getvalue() == report * 2


# -- the cluster ---------------------------------------------------------------------------


@dataclass
class Site(SchedulerView):
    cluster: GridEngineCluster
    alice: User
    job_script: Path
    admin: httpx.Client
    """Root's MUNGE identity: an administrator of the scheduler."""

    @property
    def config(self) -> GridEngineConfig:
        return GridEngineConfig.load(str(self.cluster.hooks_config), {})

    def qsub(
        self, *options: str, command: str, sync: bool = True, timeout: float = 240
    ) -> tuple[str, Path, subprocess.CompletedProcess[str]]:
        """Submit ``command`` as alice; the job id, its output file, qsub's result."""
        output = self.alice.home / f"ge-{secrets.token_hex(4)}.out"
        environ = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "HOME": str(self.alice.home),
            **self.cluster.environ,
        }
        qsub = ["qsub", *(["-sync", "y"] if sync else ["-terse"]), "-o", str(output), "-j", "y"]
        done = subprocess.run(
            [RUNUSER, "-u", self.alice.name, "--", *qsub, *options],
            input=command + "\n",  # the job script, run by the queue's /bin/sh
            env=environ,
            cwd=self.alice.home,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        match = re.search(r"^(\d+)$|Your job (\d+) ", done.stdout, re.MULTILINE)
        assert match, done.stdout + done.stderr
        return match.group(1) or match.group(2), output, done

    def wait_job(self, job_id: str, timeout: float = 240) -> int:
        """Block until the job has ended; its exit status (from qacct)."""

        def ended() -> str | None:
            if self.cluster.qcommand("qstat", "-j", job_id, check=False).returncode == 0:
                return None
            done = self.cluster.qcommand("qacct", "-j", job_id, check=False)
            match = re.search(r"^exit_status\s+(\d+)", done.stdout, re.MULTILINE)
            return match.group(1) if match else None

        return int(poll_until(ended, f"Grid Engine job {job_id} ends", timeout))

    def python_job(self, mode: str = "run", *extra: str) -> str:
        return f"{self.cluster.python} {self.job_script} {mode} {' '.join(extra)}".strip()

    def load(self) -> dict[str, float]:
        """The load sensor's last values as the global host holds them."""
        text = self.cluster.qcommand("qconf", "-se", "global").stdout
        match = re.search(r"^load_values\s+(\S+)", text, re.MULTILINE)
        pairs = (item.split("=", 1) for item in (match.group(1) if match else "").split(","))
        return {name: float(value) for name, value in pairs if value}

    def queue_in_error(self) -> bool:
        line = next(
            (
                line
                for line in self.cluster.qcommand("qstat", "-f").stdout.splitlines()
                if line.startswith(f"{self.cluster.queue}@")
            ),
            "",
        )
        return len(line.split()) > 5 and "E" in line.split()[5]


@pytest.fixture(scope="module")
def cluster(munged: None, pytestconfig: pytest.Config) -> Iterator[GridEngineCluster]:
    ports = ("scheduler_port", "qmaster_port", "execd_port")
    with dev_cluster(GridEngineCluster, "Grid Engine", pytestconfig, ports) as started:
        yield started


@pytest.fixture(scope="module")
def site(cluster: GridEngineCluster) -> Iterator[Site]:
    """A real user (removed afterwards), the job script, an admin client."""
    job_script = write_job_script(cluster)
    name = f"qhpc{secrets.token_hex(3)}"
    subprocess.run(["useradd", "-m", "-s", "/bin/bash", name], check=True, capture_output=True)
    entry = pwd.getpwnam(name)
    try:
        with httpx.Client(
            base_url=cluster.scheduler_url, auth=FreshCredential(), timeout=10
        ) as admin:
            yield Site(cluster, User(name, entry.pw_uid, Path(entry.pw_dir)), job_script, admin)
    finally:
        cluster.qcommand("qdel", "-u", name, check=False)
        subprocess.run(["userdel", "-r", "-f", name], capture_output=True, timeout=30)


def test_qsub_jobs_with_and_without_qpu(site: Site, report: Callable[[str], None]) -> None:
    """Side by side: a job asking for qpu=1 runs on the QPU, one without falls back to the
    emulator and says so."""
    qpu_id, qpu_output, _ = site.qsub("-l", "qpu=1", command=site.python_job(), sync=False)
    emu_id, emu_output, _ = site.qsub(command=site.python_job(), sync=False)
    for job_id, output in ((qpu_id, qpu_output), (emu_id, emu_output)):
        assert site.wait_job(job_id) == 0, output.read_text()
    text = qpu_output.read_text()
    assert "target qpu" in text and EMULATOR_ANNOUNCED not in text, text
    assert sum(_counts(text).values()) == 100
    [qpu_job] = site.qpu_jobs(qpu_id)
    assert (qpu_job["status"], qpu_job["user_id"]) == ("DONE", str(site.alice.uid))
    session = site.revoked_session(qpu_id)
    assert (session["user_id"], session["qpu_slots"]) == (str(site.alice.uid), 1)
    assert session["revoke_reason"] == REVOKE_REASON
    [usage] = gridengine.usage(site.config, [qpu_id])
    assert (usage["uid"], usage["session"], usage["qpu_jobs"]) == (site.alice.uid, session["id"], 1)
    assert usage["shots"] == 100 and usage["qpu_seconds"] > 0
    text = emu_output.read_text()
    assert "target emulator" in text and EMULATOR_ANNOUNCED in text, text
    assert sum(_counts(text).values()) == 100
    assert site.sessions(emu_id) == [] and site.qpu_jobs(emu_id) == []
    report("qsub -l qpu=1: on the QPU, session revoked, usage recorded; no qpu: the emulator")


def test_job_environment_carries_the_qrmi_variables(
    site: Site, report: Callable[[str], None]
) -> None:
    _, output, done = site.qsub(
        "-l", "qpu=2,h_rt=0:10:0", "-v", "QRMI_LIST_DELIMITER=;", command="env"
    )
    assert done.returncode == 0, done.stdout + done.stderr
    env = dict(line.split("=", 1) for line in output.read_text().splitlines() if "=" in line)
    job_id = env["JOB_ID"]
    assert (env["QRMI_JOB_QPU_RESOURCES"], env["QRMI_JOB_QPU_TYPES"]) == ("qpu", "pasqal-local")
    assert env["qpu_QRMI_WARDEN_URL"] == site.cluster.scheduler_url
    assert (env["QRMI_JOB_UID"], env["QRMI_JOB_ID"]) == (str(site.alice.uid), job_id)
    assert env["qpu_QRMI_JOB_TIMEOUT_SECONDS"] == "600"  # h_rt
    session = site.revoked_session(job_id)
    assert (session["id"], session["qpu_slots"]) == (env["qpu_QRMI_JOB_ACQUISITION_TOKEN"], 2)
    report("qsub -l qpu=2,h_rt=0:10:0: QRMI variables in the job, 2 slots, time limit")


def test_qdel_revokes_the_session_and_the_load_sensor_follows(
    site: Site, report: Callable[[str], None]
) -> None:
    """Drained, the QPU takes programs but starts none, so the job's two stay queued; the load
    sensor reports not ready and one slot fewer while the job's session is open; qdel ends
    the job, its epilog revokes the session and cancels them; resumed, the sensor says ready."""
    slots = site.cluster.slots
    site.admin.post("/admin/drain").raise_for_status()
    try:
        command = f"{site.python_job('queue', '2')} && sleep 600"
        job_id, output, _ = site.qsub("-l", "qpu=1", command=command, sync=False)
        poll_until(lambda: output.exists() and "queued" in output.read_text(), "queued", 240)
        assert [j["status"] for j in site.qpu_jobs(job_id)] == ["PENDING", "PENDING"]
        expected = {"qpu_ready": 0.0, "qpu": slots - 1.0}
        poll_until(lambda: site.load() == expected, f"the load sensor reports {expected}", 60)
        site.cluster.qcommand("qdel", job_id)
        assert site.revoked_session(job_id)["revoke_reason"] == REVOKE_REASON
        for qpu_job in site.qpu_jobs(job_id):
            assert qpu_job["status"] == "CANCELED" and REVOKE_REASON in qpu_job["error"]
    finally:
        site.admin.post("/admin/resume").raise_for_status()
    expected = {"qpu_ready": 1.0, "qpu": float(slots)}
    poll_until(lambda: site.load() == expected, f"the load sensor reports {expected}", 60)
    report("drain + qdel: sensor not ready, slot taken; session revoked, 2 programs cancelled")


def test_unreachable_scheduler_does_not_fail_the_job(
    site: Site, report: Callable[[str], None]
) -> None:
    with scheduler_unreachable(site.cluster.hooks_config):
        job_id, output, done = site.qsub("-l", "qpu=1", command="env")
    assert done.returncode == 0, done.stdout + done.stderr
    text = output.read_text()
    assert "got no scheduler session" in text and "local emulator" in text, text
    assert "QRMI_JOB_QPU_RESOURCES" not in text
    log = site.cluster.hooks_log.read_text()
    assert f"prolog job {job_id} ERROR: no QPU session" in log and "unreachable" in log
    assert not site.queue_in_error()
    report("scheduler unreachable: the job runs, told why; the queue is not in error")


def test_gridengine_spawner_starts_a_lab_holding_a_session(
    site: Site, report: Callable[[str], None]
) -> None:
    """The shipped hub config with QHPC_SCHEDULER=gridengine: batchspawner's GridengineSpawner
    starts alice's Lab in a job holding qpu=1, the Lab's server extension reports the QPU from
    the job's QRMI variables, and stopping the server revokes the job's session."""
    directory = Path(tempfile.mkdtemp(prefix="qhpc-ge-hub-"))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    config = hub_test.hub_config(
        directory, port, hub_test.spawner_environment(site.cluster.environ)
    )
    env = {
        **site.cluster.environ,
        "QHPC_VENV": str(hub_test._singleuser_venv(site.cluster)),  # type: ignore[arg-type]
        "QHPC_SCHEDULER": "gridengine",
    }
    name = site.alice.name
    hub_test.allow_login(site.alice)
    try:
        with hub_test.running_hub(config, url, env) as log_path:
            headers = {"Authorization": f"token {hub_test._login(url, name)}"}

            def server() -> dict[str, Any] | None:
                response = httpx.get(f"{url}/hub/api/users/{name}", headers=headers, timeout=30)
                response.raise_for_status()
                return response.json()["servers"].get("")

            spawn = httpx.post(f"{url}/hub/api/users/{name}/server", headers=headers, timeout=60)
            assert spawn.status_code in (201, 202), spawn.text

            def ready() -> bool:
                state = server()
                assert state is not None, f"the spawn failed:\n{hub_test._tail(log_path)}"
                return bool(state["ready"])

            poll_until(ready, "the hub reports the Lab ready", 240)
            jobs = site.cluster.qcommand("qstat", "-u", name).stdout
            [job_id] = re.findall(r"^\s*(\d+)\s", jobs, re.MULTILINE)
            targets = httpx.get(f"{url}/user/{name}/qhpc/api/targets", headers=headers, timeout=30)
            targets.raise_for_status()
            assert targets.json()["default"] == "qpu", targets.text
            [session] = site.sessions(job_id)
            assert (session["user_id"], session["qpu_slots"]) == (str(site.alice.uid), 1)
            stop = httpx.delete(f"{url}/hub/api/users/{name}/server", headers=headers, timeout=60)
            assert stop.status_code in (202, 204), stop.text
            poll_until(lambda: server() is None, "the hub stops the server", 120)
            assert site.revoked_session(job_id)["revoke_reason"] == REVOKE_REASON
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    report("GridengineSpawner: Lab in a qpu=1 job, QPU target in the Lab, session revoked")
