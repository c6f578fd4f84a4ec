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
from tests.support import jupyter_hub
from tests.support.clusters import (
    EMULATOR_ANNOUNCED,
    RUNUSER,
    SchedulerView,
    User,
    hostile_bin,
    hostile_listener,
    printed_counts,
    scheduler_unreachable,
    write_job_script,
)
from tests.support.daemons import free_port
from tests.support.munge import FreshCredential
from tests.support.polling import poll_until

pytestmark = [pytest.mark.munge, pytest.mark.slow]

QSTAT_XML = """\
<?xml version='1.0'?>
<detailed_job_info>
  <djob_info>
    <element>
      <JB_job_number>7</JB_job_number>
      <JB_owner>alice</JB_owner>
      <JB_uid>1001</JB_uid>
      <JB_job_name>{name}</JB_job_name>
      <JB_hard_resource_list>{requests}</JB_hard_resource_list>
      <JB_env_list><job_sublist><VA_variable>HOME</VA_variable>
        <VA_value>/home/alice&#10;hard resource_list: qpu=9</VA_value></job_sublist>
      </JB_env_list>
    </element>
  </djob_info>
</detailed_job_info>
"""
"""``qstat -j 7 -xml`` as Grid Engine 8.1.9 writes it (the parts the prolog reads), with a
job environment value that forges a ``hard resource_list`` line of the plain text form."""


def _requests(**values: float) -> str:
    return "".join(
        f"<qstat_l_requests><CE_name>{name}</CE_name><CE_doubleval>{value:f}</CE_doubleval>"
        "</qstat_l_requests>"
        for name, value in values.items()
    )


# -- the hooks' parsing, no cluster --------------------------------------------------------


@pytest.mark.parametrize(
    ("requests", "slots", "limit"),
    [
        ({"qpu": 1}, 1, None),
        ({"h_rt": 600, "qpu": 2}, 2, 600),
        ({"qpu": 3, "s_rt": 3600}, 3, 3600),
        ({"h_vmem": 1e9}, 0, None),
        ({"qpux": 2}, 0, None),
    ],
)
def test_qpu_slots_and_limit_from_qstat_xml(
    requests: dict[str, float], slots: int, limit: int | None
) -> None:
    """The structured form only: a job name or an environment value that reads like a
    request (the attack on ``qstat -j``'s text) is text."""
    text = QSTAT_XML.format(name="x hard resource_list: qpu=9", requests=_requests(**requests))
    job = gridengine.parse_qstat_xml(text, "7")
    assert (job.uid, job.owner) == (1001, "alice")
    assert qpu_slots(job, "qpu") == slots
    assert time_limit_s(job) == limit
    with pytest.raises(gridengine.HookError, match="names no job 8"):
        gridengine.parse_qstat_xml(text, "8")
    with pytest.raises(gridengine.HookError, match="no XML"):
        gridengine.parse_qstat_xml("job_number: 7\nhard resource_list: qpu=9", "7")


def _fake_shepherd(spool: Path, directory: Path) -> subprocess.Popen[bytes]:
    """A process named sge_shepherd (a copy of sleep) running in ``spool``, as Grid Engine's
    runs in the job's spool directory."""
    program = directory / "sge_shepherd"
    shutil.copy("/bin/sleep", program)
    return subprocess.Popen(
        [str(program), "30"], cwd=spool, env={"SGE_ROOT": "/opt/sge", "SGE_CELL": "default"}
    )


def test_the_job_comes_from_the_shepherd_not_the_environment(tmp_path: Path) -> None:
    """The prolog's job is its parent shepherd's: its spool directory, the ``config`` the
    execution daemon wrote there (root's), and the daemon's SGE_ROOT; a process that is no
    shepherd, or a spool anyone could write, gives no job."""
    config = GridEngineConfig()
    spool = tmp_path / "active_jobs" / "12.3"
    spool.mkdir(parents=True)
    (spool / "config").write_text("job_id=12\nja_task_id=3\njob_owner=alice\nuid=1001\n")
    shepherd = _fake_shepherd(spool, tmp_path)
    try:
        job = gridengine.shepherd_job(config, shepherd.pid)
        assert (job.key, job.owner, job.spool_dir) == ("12.3", "alice", spool)
        assert job.cell == {"SGE_ROOT": "/opt/sge", "SGE_CELL": "default"}
        spool.chmod(0o777)  # a spool a user could have planted a config in
        with pytest.raises(gridengine.HookError, match="not trusted"):
            gridengine.shepherd_job(config, shepherd.pid)
    finally:
        shepherd.kill()
        shepherd.wait()
    with pytest.raises(gridengine.HookError, match="not started by a root sge_shepherd"):
        gridengine.shepherd_job(config)  # pytest's parent is no shepherd


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
        return GridEngineConfig.load(str(self.cluster.hooks_config))

    def qsub(
        self,
        *options: str,
        command: str,
        sync: bool = True,
        timeout: float = 240,
        env: dict[str, str] | None = None,
    ) -> tuple[str, Path, subprocess.CompletedProcess[str]]:
        """Submit ``command`` as alice (qsub's environment changed by ``env``); the job id,
        its output file, qsub's result."""
        output = self.alice.home / f"ge-{secrets.token_hex(4)}.out"
        environ = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "HOME": str(self.alice.home),
            **self.cluster.environ,
            **(env or {}),
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
def cluster(batch_gridengine_cluster: GridEngineCluster) -> GridEngineCluster:
    """The session's Grid Engine dev cluster (conftest), shared with the other modules on it."""
    return batch_gridengine_cluster


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
    assert sum(printed_counts(text).values()) == 100
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
    assert sum(printed_counts(text).values()) == 100
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
    config = jupyter_hub.hub_config(
        directory, port, jupyter_hub.spawner_environment(site.cluster.environ)
    )
    env = {
        **site.cluster.environ,
        "QHPC_VENV": str(jupyter_hub.singleuser_venv(site.cluster)),  # type: ignore[arg-type]
        "QHPC_SCHEDULER": "gridengine",
    }
    name = site.alice.name
    jupyter_hub.allow_login(site.alice)
    try:
        with jupyter_hub.running_hub(config, url, env) as log_path:
            headers = {"Authorization": f"token {jupyter_hub.login(url, name)}"}

            def server() -> dict[str, Any] | None:
                response = httpx.get(f"{url}/hub/api/users/{name}", headers=headers, timeout=30)
                response.raise_for_status()
                return response.json()["servers"].get("")

            spawn = httpx.post(f"{url}/hub/api/users/{name}/server", headers=headers, timeout=60)
            assert spawn.status_code in (201, 202), spawn.text

            def ready() -> bool:
                state = server()
                assert state is not None, f"the spawn failed:\n{jupyter_hub.log_tail(log_path)}"
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


# -- the attacks of a hostile user (the prolog and epilog run as root) ---------------------------


def test_qsub_variables_do_not_steer_the_root_prolog(
    site: Site, report: Callable[[str], None]
) -> None:
    """The attack re-run: ``qsub -v`` of a PATH to the user's own qstat, of every
    QHPC_GRIDENGINE_* setting (the scheduler URL a listener's), of a settings file, a proxy, a
    MUNGE socket and a job id. Grid Engine hands them all to the root prolog; it takes none:
    the session opens on the configured scheduler with the slot asked for, the listener hears
    nothing (no root credential to replay), no program of the user's runs."""
    with hostile_listener() as listener:
        folder, marker = hostile_bin(site.alice.home, site.alice, ("qstat", "qconf", "python3"))
        settings = folder / "gridengine.toml"
        settings.write_text(f'scheduler_url = "{listener.url}"\nqstat = "{folder}/qstat"\n')
        forged = {
            "PATH": f"{folder}:/usr/bin:/bin",
            "QHPC_GRIDENGINE_CONFIG": str(settings),
            "HTTP_PROXY": listener.url,
            "http_proxy": listener.url,
            "MUNGE_SOCKET": str(folder / "munge.socket"),
            "QHPC_MUNGE_SOCKET": str(folder / "munge.socket"),
            "SGE_BINARY_PATH": str(folder),
            "JOB_ID": "1",
            # what the other qhpc commands read: none may reach a root hook either
            "QHPC_CONFIG": str(settings),
            "QHPC_SCHEDULER_URL": listener.url,
            "QHPC_STATE_DIR": str(folder),
            "QHPC_TOKEN": "forged",
            "QHPC_SLURM_CONFIG": str(settings),
            "QHPC_SLURM_SCHEDULER_URL": listener.url,
        }
        values = {"scheduler_url": listener.url, "qstat": f"{folder}/qstat", "run_dir": "/tmp"}
        for name in GridEngineConfig.model_fields:
            value = values.get(name, str(folder / name))
            forged[f"QHPC_GRIDENGINE_{name.upper()}"] = value
        variables = ",".join(f"{name}={value}" for name, value in forged.items())
        job_id, output, done = site.qsub("-l", "qpu=1", "-v", variables, command="/usr/bin/env")
        assert done.returncode == 0, done.stdout + done.stderr
        env = dict(line.split("=", 1) for line in output.read_text().splitlines() if "=" in line)
        assert env["qpu_QRMI_WARDEN_URL"] == site.cluster.scheduler_url
        assert env["QHPC_GRIDENGINE_SCHEDULER_URL"] == listener.url  # the job kept its own
        session = site.revoked_session(job_id)
        assert (session["user_id"], session["qpu_slots"]) == (str(site.alice.uid), 1)
        assert listener.requests == [] and not marker.exists()
    report("qsub -v PATH, QHPC_GRIDENGINE_*, proxy, MUNGE socket: ignored by the root prolog")


@pytest.mark.parametrize("variable", ["HOME", "PATH", "SHELL"])
def test_environment_values_that_forge_qstat_lines_are_text(
    site: Site, report: Callable[[str], None], variable: str
) -> None:
    """``HOME=$'/home/me\\nhard resource_list: qpu=9' qsub -V -l qpu=1`` opened a 9-slot
    session while Grid Engine booked 1 (the same through PATH and SHELL): qstat's XML keeps
    the value in its element, and the session has the one slot Grid Engine booked."""
    value = {"HOME": str(site.alice.home), "PATH": "/usr/bin:/bin", "SHELL": "/bin/sh"}[variable]
    forged = {variable: f"{value}\nhard resource_list: qpu=9,h_rt=99999"}
    job_id, _, done = site.qsub("-V", "-l", "qpu=1", command="true", env=forged)
    assert done.returncode == 0, done.stdout + done.stderr
    session = site.revoked_session(job_id)
    assert session["qpu_slots"] == 1, session
    report(f"{variable} with a forged 'hard resource_list: qpu=9' line: 1 slot, as booked")
