"""Slurm integration on a real single-node cluster: Debian's Slurm 22.05, real MUNGE.

The module starts ``qhpc dev-cluster`` (a scheduler with MUNGE auth, slurmctld, slurmd, our
Prolog/Epilog/TaskProlog; munged comes from the shared fixture), creates two unprivileged users
and runs their jobs through sbatch, salloc and srun. Each scenario prints its duration; none
asserts on time. The first tests check the hooks' parsing without a cluster.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import secrets
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from qhpc_lab.hpc import slurm
from qhpc_lab.hpc.devcluster import DevCluster
from qhpc_lab.hpc.slurm import (
    REVOKE_REASON,
    HookConfig,
    JobRecord,
    SlurmJob,
    qpu_slots,
    task_lines,
    time_limit_s,
)
from tests.support.clusters import (
    EMULATOR_ANNOUNCED,
    Site,
    User,
    add_user,
    hostile_bin,
    hostile_listener,
    printed_counts,
    remove_user,
    scheduler_unreachable,
    write_job_script,
)
from tests.support.daemons import free_port
from tests.support.munge import FreshCredential
from tests.support.polling import poll_until

pytestmark = [pytest.mark.munge, pytest.mark.slow]


# -- the hooks' parsing, no cluster --------------------------------------------------------


def squeue_job(
    licences: str = "(null)", gres: str = "N/A", limit: str = "1-02:03:00", uid: int = 1001
) -> SlurmJob:
    """One job as the Prolog reads it from ``squeue -j 7 -O``."""
    return SlurmJob("7", uid, licences, (gres, "N/A"), limit)


@pytest.mark.parametrize(
    ("licences", "gres", "slots"),
    [
        ("qpu:1", "N/A", 1),
        ("other:5,qpu:3", "N/A", 3),
        ("qpu*2", "N/A", 2),
        ("qpu@db:4", "N/A", 4),
        ("qpu", "N/A", 1),
        ("(null)", "gres:qpu:2", 2),
        ("(null)", "gres/qpu:fresnel:3", 3),
        ("(null)", "gres:gpu:4", 0),
        ("qpux:2", "N/A", 0),
        ("(null)", "N/A", 0),
    ],
)
def test_qpu_slots_from_squeue(licences: str, gres: str, slots: int) -> None:
    assert qpu_slots(squeue_job(licences, gres), "qpu") == slots


def test_time_limit() -> None:
    assert time_limit_s(squeue_job()) == ((24 + 2) * 60 + 3) * 60
    assert time_limit_s(squeue_job(limit="00:10:00")) == 600
    assert time_limit_s(squeue_job(limit="10:00")) == 600
    assert time_limit_s(squeue_job(limit="UNLIMITED")) is None


def _fake_squeue(tmp_path: Path, answer: str) -> tuple[Path, Path]:
    """A squeue that records its arguments and environment and prints ``answer``."""
    fake, record = tmp_path / "squeue", tmp_path / "seen.json"
    fake.write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys\n"
        f"open({str(record)!r}, 'w').write(json.dumps({{'argv': sys.argv[1:], "
        "'env': dict(os.environ)}))\n"
        f"sys.stdout.write({answer!r})\n"
    )
    fake.chmod(0o755)
    return fake, record


def test_prolog_asks_squeue_only_for_fields_slurm_writes(tmp_path: Path) -> None:
    """The attack on ``scontrol show job``'s text was a name or comment reading
    ``Licenses=qpu:64 Account=chem42`` or holding a newline. The Prolog asks squeue, by its
    configured absolute path with only PATH, LANG and SLURM_CONF, for this job's id, uid,
    licences, GRES and time limit: fields Slurm writes and validates. An answer for another
    job, another uid, or of any other shape (a second line, a field too many) is refused."""
    fake, record = _fake_squeue(tmp_path, "7|1001|qpu:2|gres:qpu:1|N/A|1-00:00:00|\n")
    config = HookConfig(squeue=str(fake), timeout_s=30)
    facts = {"SLURM_CONF": "/etc/slurm/slurm.conf", "PATH": "/home/mallory/bin", "X": "1"}
    job = slurm.job_details("7", config, facts)
    assert (job.uid, qpu_slots(job, "qpu"), time_limit_s(job)) == (1001, 2, 86400)
    seen = json.loads(record.read_text())
    assert seen["argv"] == [
        "--noheader",
        "--jobs",
        "7",
        "--Format",
        "JobID:|,UserID:|,Licenses:|,tres-per-node:|,tres-per-job:|,TimeLimit:|",
    ]
    assert {k: v for k, v in seen["env"].items() if k != "LC_CTYPE"} == {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "LANG": "C.UTF-8",
        "SLURM_CONF": "/etc/slurm/slurm.conf",
    }
    for answer in (
        "8|1001|qpu:2|N/A|N/A|10:00|\n",
        "7|mallory|qpu:2|N/A|N/A|10:00|\n",
        "7|1001|qpu:2|N/A|N/A|10:00|\n7|1001|qpu:64|N/A|N/A|10:00|\n",
        "7|1001|qpu:2|N/A|N/A|10:00|qpu:9|\n",
        "",
    ):
        forged, _ = _fake_squeue(tmp_path, answer)
        with pytest.raises(slurm.HookError, match="squeue -j 7 answered"):
            slurm.job_details("7", HookConfig(squeue=str(forged)), facts)
    with pytest.raises(slurm.HookError, match="names uid 1001 for job 7, Slurm's hook 1002"):
        slurm.job_owner(job, 1002)
    with pytest.raises(slurm.HookError, match="not found"):
        slurm.job_details("7", HookConfig(squeue=str(tmp_path / "nothing")), facts)


def test_task_lines_export_the_qrmi_variables() -> None:
    config = HookConfig(resource="qpu")
    record = JobRecord("7", 1001, "qpu", "http://qpu:8006", 2, 600, session="s-1")
    env = {"SLURM_JOB_ID": "7", "SLURM_JOB_UID": "1001"}
    assert task_lines(config, env, record) == [
        "export qpu_QRMI_WARDEN_URL=http://qpu:8006",
        "export qpu_QRMI_JOB_ACQUISITION_TOKEN=s-1",
        "export qpu_QRMI_JOB_TIMEOUT_SECONDS=600",
        "export QRMI_JOB_QPU_RESOURCES=qpu",
        "export QRMI_JOB_QPU_TYPES=pasqal-local",
        "export SLURM_JOB_QPU_RESOURCES=qpu",
        "export SLURM_JOB_QPU_TYPES=pasqal-local",
        "export QRMI_JOB_UID=1001",
        "export QRMI_JOB_ID=7",
    ]
    # a resource the QRMI SPANK plugin set for this job stays, ours is added
    spank = {
        **env,
        "QRMI_JOB_ID": "7",
        "QRMI_JOB_QPU_RESOURCES": "cloud",
        "QRMI_JOB_QPU_TYPES": "pasqal-cloud",
    }
    lines = task_lines(config, spank, record)
    assert "export QRMI_JOB_QPU_RESOURCES=cloud,qpu" in lines
    assert "export QRMI_JOB_QPU_TYPES=pasqal-cloud,pasqal-local" in lines


def test_task_lines_drop_an_enclosing_jobs_session() -> None:
    """sbatch inside a job inherits its variables: a job without a share must not use them."""
    inherited = {
        "SLURM_JOB_ID": "8",
        "QRMI_JOB_ID": "7",
        "QRMI_JOB_QPU_RESOURCES": "qpu",
        "QRMI_JOB_QPU_TYPES": "pasqal-local",
        "qpu_QRMI_JOB_ACQUISITION_TOKEN": "s-1",
        "qpu_QRMI_WARDEN_URL": "http://qpu:8006",
    }
    lines = task_lines(HookConfig(), inherited, None)
    assert sorted(lines) == sorted(
        [
            "unset qpu_QRMI_WARDEN_URL",
            "unset qpu_QRMI_JOB_ACQUISITION_TOKEN",
            "unset QRMI_JOB_QPU_RESOURCES",
            "unset QRMI_JOB_QPU_TYPES",
            "unset QRMI_JOB_ID",
        ]
    )
    failed = JobRecord("8", 1001, "qpu", "http://qpu:8006", 1, 600, error="unreachable")
    assert any(
        line.startswith("print qhpc:") and "unreachable" in line
        for line in task_lines(HookConfig(), {"SLURM_JOB_ID": "8"}, failed)
    )


TWO_QPUS = """\
run_dir = "{run_dir}"
log_file = ""

[[qpus]]
resource = "qpu_a"
licence = "qpu_a"
scheduler_url = "http://qpu-a:8006"

[[qpus]]
resource = "qpu_b"
licence = "qpu_b"
scheduler_url = "http://qpu-b:8006"
"""


def test_two_qpus_in_one_configuration(tmp_path: Path) -> None:
    """``[[qpus]]``: one configuration per QPU, records apart; the TaskProlog exports both
    resources in one run, and only those the job holds."""
    path = tmp_path / "slurm.toml"
    path.write_text(TWO_QPUS.format(run_dir=tmp_path / "run"))
    config = HookConfig.load(str(path))
    qpu_a, qpu_b = config.qpu_configs()
    assert (qpu_b.resource, qpu_b.licence, qpu_b.scheduler_url) == (
        "qpu_b",
        "qpu_b",
        "http://qpu-b:8006",
    )
    assert slurm.user_file(qpu_a, "7") != slurm.user_file(qpu_b, "7")
    job = squeue_job("qpu_a:1,qpu_b:2")
    assert [qpu_slots(job, q.licence) for q in (qpu_a, qpu_b)] == [1, 2]
    env = {"SLURM_JOB_ID": "7", "SLURM_JOB_UID": "1001"}
    records = [
        JobRecord("7", 1001, "qpu_a", qpu_a.scheduler_url, 1, 600, session="s-a"),
        JobRecord("7", 1001, "qpu_b", qpu_b.scheduler_url, 2, 600, session="s-b"),
    ]
    lines = task_lines(config, env, records)
    for line in (
        "export QRMI_JOB_QPU_RESOURCES=qpu_a,qpu_b",
        "export QRMI_JOB_QPU_TYPES=pasqal-local,pasqal-local",
        "export SLURM_JOB_QPU_RESOURCES=qpu_a,qpu_b",
        "export qpu_a_QRMI_WARDEN_URL=http://qpu-a:8006",
        "export qpu_a_QRMI_JOB_ACQUISITION_TOKEN=s-a",
        "export qpu_b_QRMI_WARDEN_URL=http://qpu-b:8006",
        "export qpu_b_QRMI_JOB_ACQUISITION_TOKEN=s-b",
        "export QRMI_JOB_ID=7",
    ):
        assert line in lines, lines
    assert len([x for x in lines if x.startswith("export QRMI_JOB_QPU_RESOURCES=")]) == 1
    only_b = task_lines(config, env, [None, records[1]])
    assert "export QRMI_JOB_QPU_RESOURCES=qpu_b" in only_b
    assert not any("qpu_a" in line for line in only_b), only_b
    with pytest.raises(ValueError, match="its own resource and licence"):
        HookConfig(qpus=({"resource": "qpu_a", "licence": "a"}, {"resource": "qpu_a"}))


def test_settings_come_from_a_root_owned_file_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hook's settings (the scheduler's URL above all: root's credential goes there) come
    from the file alone: no variable of the job's environment changes them, and a file or a
    directory above it that another user owns or can write is refused, as is a missing one."""
    folder = tmp_path / "etc"
    folder.mkdir()
    path = folder / "slurm.toml"
    path.write_text('scheduler_url = "http://qpu:8006"\n')
    monkeypatch.setenv("QHPC_SLURM_SCHEDULER_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("QHPC_SLURM_CONFIG", str(tmp_path / "mallory.toml"))
    assert HookConfig.load(str(path)).scheduler_url == "http://qpu:8006"
    nobody = pwd.getpwnam("nobody").pw_uid
    for change, undo in (
        (lambda: path.chmod(0o666), lambda: path.chmod(0o644)),
        (lambda: folder.chmod(0o777), lambda: folder.chmod(0o755)),
        (lambda: os.chown(path, nobody, -1), lambda: os.chown(path, 0, -1)),
        (lambda: os.chown(folder, nobody, -1), lambda: os.chown(folder, 0, -1)),
    ):
        change()
        with pytest.raises(slurm.HookError, match="not trusted"):
            HookConfig.load(str(path))
        undo()
    assert HookConfig.load(str(path)).scheduler_url == "http://qpu:8006"
    with pytest.raises(FileNotFoundError):
        HookConfig.load(str(folder / "missing.toml"))


def test_epilog_removes_the_files_of_a_job_without_a_session(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Prolog that could not open a session still leaves both files (the TaskProlog says
    why); the Epilog removes both, with nothing to revoke."""
    config = HookConfig(
        scheduler_url=f"http://127.0.0.1:{free_port()}", run_dir=str(tmp_path / "run"), log_file=""
    )
    uid_number = os.getuid()
    monkeypatch.setattr(
        slurm, "job_details", lambda job_id, *_: squeue_job("qpu:1", uid=uid_number)
    )
    uid, gid = str(os.getuid()), str(os.getgid())
    environ = {"SLURM_JOB_ID": "41", "SLURM_JOB_UID": uid, "SLURM_JOB_GID": gid}
    [record] = slurm.prolog(config, environ)
    assert record.session is None and record.error
    private = tmp_path / "run" / "private" / "job-41.json"
    assert slurm.user_file(config, "41").exists() and private.exists()
    slurm.epilog(config, environ)
    assert not slurm.user_file(config, "41").exists()
    assert list(private.parent.iterdir()) == []


def test_hook_scripts_refuse_a_python_other_users_cannot_run(tmp_path: Path) -> None:
    """The guide's trap: a venv whose python lies under a directory only its owner can enter
    (a pyenv under /root). The scripts would fail as every job user: refused up front."""
    hidden = tmp_path / "home"
    hidden.mkdir(mode=0o700)
    (hidden / "python").symlink_to(sys.executable)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "qhpc_lab.cli",
            "slurm",
            "hook-scripts",
            str(tmp_path / "hooks"),
            "--python",
            str(hidden / "python"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "not executable by other users" in done.stderr, done.stderr
    assert not (tmp_path / "hooks").exists()
    open_folder = tmp_path / "shared"
    open_folder.mkdir()
    open_folder.chmod(0o777)  # anyone could swap the link for a program of their own
    (open_folder / "python").symlink_to(sys.executable)
    with pytest.raises(PermissionError, match=r"run .* as root: .* is not trusted"):
        slurm.write_hook_scripts(tmp_path / "hooks", str(open_folder / "python"), "slurm.toml")


def test_slurm_conf_lines_name_the_hooks_and_the_timeout(tmp_path: Path) -> None:
    scripts = {hook: tmp_path / hook for hook in slurm.HOOKS}
    lines = slurm.configuration(scripts).splitlines()
    assert lines[:3] == [f"{p}={tmp_path / h}" for h, p in slurm.HOOKS.items()]
    assert "PrologFlags=Alloc" in lines
    timeout = int(next(x for x in lines if x.startswith("PrologEpilogTimeout=")).split("=")[1])
    assert timeout > HookConfig().deadline_s


# -- the cluster ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster(batch_slurm_cluster: DevCluster) -> DevCluster:
    """The session's Slurm dev cluster (conftest), shared with the other modules on it."""
    return batch_slurm_cluster


@pytest.fixture(scope="module")
def site(cluster: DevCluster) -> Iterator[Site]:
    """Two real users (removed afterwards), the job script, an admin client."""
    job_script = write_job_script(cluster)
    users: list[User] = []
    try:
        users += [add_user(cluster), add_user(cluster)]
        with httpx.Client(
            base_url=cluster.scheduler_url, auth=FreshCredential(), timeout=10
        ) as admin:
            yield Site(cluster, users[0], users[1], job_script, admin)
    finally:
        for user in users:
            remove_user(cluster, user)


@pytest.fixture
def drained(site: Site) -> Iterator[None]:
    """The QPU takes jobs but starts none, so a session's jobs stay queued."""
    site.admin.post("/admin/drain").raise_for_status()
    try:
        yield
    finally:
        site.admin.post("/admin/resume").raise_for_status()


def test_sbatch_job_runs_on_the_qpu(site: Site, report: Callable[[str], None]) -> None:
    job_id, output = site.sbatch(
        site.alice, "-L", "qpu:1", "--account", "physics", command=site.python_job()
    )
    assert site.wait_job(job_id) == "COMPLETED", output.read_text()
    text = output.read_text()
    assert "target qpu" in text and EMULATOR_ANNOUNCED not in text, text
    assert sum(printed_counts(text).values()) == 100
    [qpu_job] = site.qpu_jobs(job_id)
    assert (qpu_job["status"], qpu_job["user_id"]) == ("DONE", str(site.alice.uid))
    session = site.revoked_session(job_id)
    assert (session["user_id"], session["qpu_slots"]) == (str(site.alice.uid), 1)
    assert session["slurm_account"] == "physics"  # the Slurm account, which account quotas charge
    assert session["revoke_reason"] == REVOKE_REASON
    assert not site.session_file(job_id).exists()
    report("sbatch -L qpu:1: Pulser sequence on the QPU, session opened and revoked")


def test_salloc_srun_job_runs_on_the_qpu(site: Site, report: Callable[[str], None]) -> None:
    done = site.run_as(site.alice, "salloc", "-L", "qpu:2", "srun", *site.python_job().split())
    assert done.returncode == 0, done.stderr
    assert "target qpu" in done.stdout, done.stdout + done.stderr
    assert sum(printed_counts(done.stdout).values()) == 100
    job_id = re.search(r"Granted job allocation (\d+)", done.stderr).group(1)
    assert site.revoked_session(job_id)["qpu_slots"] == 2
    assert site.qpu_jobs(job_id)[0]["status"] == "DONE"
    report("salloc -L qpu:2 + srun: on the QPU")


def test_srun_with_gres_exports_the_qrmi_variables(
    site: Site, report: Callable[[str], None]
) -> None:
    done = site.run_as(site.alice, "srun", "--gres=qpu:3", "env")
    assert done.returncode == 0, done.stderr
    env = dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)
    job_id = env["SLURM_JOB_ID"]
    assert env["QRMI_JOB_QPU_RESOURCES"] == "qpu"
    assert env["QRMI_JOB_QPU_TYPES"] == "pasqal-local"
    assert env["qpu_QRMI_WARDEN_URL"] == site.cluster.scheduler_url
    assert env["QRMI_JOB_UID"] == str(site.alice.uid) and env["QRMI_JOB_ID"] == job_id
    assert env["qpu_QRMI_JOB_TIMEOUT_SECONDS"] == "86400"  # no time limit: the default
    session = site.revoked_session(job_id)
    assert session["id"] == env["qpu_QRMI_JOB_ACQUISITION_TOKEN"]
    assert session["qpu_slots"] == 3
    report("srun --gres=qpu:3: QRMI variables in the task, 3 slots")


def test_job_end_cancels_its_queued_qpu_jobs(
    site: Site, drained: None, report: Callable[[str], None]
) -> None:
    job_id, output = site.sbatch(site.alice, "-L", "qpu:1", command=site.python_job("queue", "2"))
    assert site.wait_job(job_id) == "COMPLETED", output.read_text()
    assert site.revoked_session(job_id)["revoke_reason"] == REVOKE_REASON
    qpu_jobs = site.qpu_jobs(job_id)
    assert len(qpu_jobs) == 2
    for qpu_job in qpu_jobs:
        assert qpu_job["status"] == "CANCELED"
        assert REVOKE_REASON in qpu_job["error"]
    report("job ends: session revoked, 2 queued QPU jobs cancelled")


def test_scancel_revokes_the_session(
    site: Site, drained: None, report: Callable[[str], None]
) -> None:
    command = f"{site.python_job('queue', '2')} && sleep 600"
    job_id, output = site.sbatch(site.alice, "-L", "qpu:1", command=command)
    poll_until(
        lambda: output.exists() and "queued" in output.read_text(), "the jobs are queued", 240
    )
    session_file = site.session_file(job_id)
    info = session_file.stat()
    assert (info.st_uid, info.st_mode & 0o777) == (site.alice.uid, 0o600)
    assert [j["status"] for j in site.qpu_jobs(job_id)] == ["PENDING", "PENDING"]
    cancel = subprocess.run(
        ["scancel", job_id], env={**os.environ, **site.cluster.environ}, capture_output=True
    )
    assert cancel.returncode == 0, cancel.stderr
    assert site.wait_job(job_id) == "CANCELLED"
    assert site.revoked_session(job_id)["revoke_reason"] == REVOKE_REASON
    for qpu_job in site.qpu_jobs(job_id):
        assert qpu_job["status"] == "CANCELED" and REVOKE_REASON in qpu_job["error"]
    poll_until(lambda: not session_file.exists(), "the Epilog removes the session file", 30)
    report("scancel: session revoked, queued QPU jobs cancelled, file removed")


def test_another_user_cannot_use_the_session(site: Site, report: Callable[[str], None]) -> None:
    job_id, _ = site.sbatch(site.alice, "-L", "qpu:1", command="sleep 600")
    session_file = site.session_file(job_id)
    poll_until(session_file.exists, "the Prolog writes the session file", 60)
    token = json.loads(session_file.read_text())["session"]
    try:
        peek = site.run_as(site.bob, "cat", str(session_file))
        assert peek.returncode != 0 and "Permission denied" in peek.stderr
        stolen = {
            "QRMI_JOB_QPU_RESOURCES": "qpu",
            "QRMI_JOB_QPU_TYPES": "pasqal-local",
            "qpu_QRMI_WARDEN_URL": site.cluster.scheduler_url,
            "qpu_QRMI_JOB_ACQUISITION_TOKEN": token,
        }
        done = site.run_as(site.bob, *site.python_job().split(), env=stolen)
        assert done.returncode != 0
        assert "refused (403)" in done.stderr and "belongs to another user" in done.stderr
        assert site.qpu_jobs(job_id) == []
    finally:
        subprocess.run(["scancel", job_id], env={**os.environ, **site.cluster.environ})
    report("another user with the session token: 403")


def test_job_without_licence_gets_the_emulator(site: Site, report: Callable[[str], None]) -> None:
    job_id, output = site.sbatch(site.alice, command=site.python_job())
    assert site.wait_job(job_id) == "COMPLETED", output.read_text()
    text = output.read_text()
    assert "target emulator" in text and EMULATOR_ANNOUNCED in text, text
    assert sum(printed_counts(text).values()) == 100
    assert site.sessions(job_id) == [] and site.qpu_jobs(job_id) == []
    report("no licence: the emulator, announced")


def test_unreachable_scheduler_does_not_fail_the_job(
    site: Site, report: Callable[[str], None]
) -> None:
    with scheduler_unreachable(site.cluster.hooks_config):
        job_id, output = site.sbatch(site.alice, "-L", "qpu:1", command=site.python_job())
        assert site.wait_job(job_id) == "COMPLETED", output.read_text()
    text = output.read_text()
    assert "got no scheduler session" in text and "target emulator" in text, text
    assert sum(printed_counts(text).values()) == 100
    log = site.cluster.hooks_log.read_text()
    assert f"prolog job {job_id} ERROR: no QPU session" in log and "unreachable" in log
    assert site.cluster.node_state() in ("idle", "mixed")  # not drained
    report("scheduler unreachable: the job runs on the emulator, node not drained")


def test_epilog_retries_a_revocation_that_failed(
    site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, report: Callable[[str], None]
) -> None:
    """The hooks in-process against the cluster's scheduler: a session whose Epilog could not
    reach the scheduler is revoked by the next hook that can."""
    config = HookConfig(
        scheduler_url=site.cluster.scheduler_url, run_dir=str(tmp_path / "run"), log_file=""
    )
    monkeypatch.setattr(
        slurm, "job_details", lambda job_id, *_: squeue_job("qpu:1", uid=site.alice.uid)
    )
    uid = str(site.alice.uid)
    jobs = [str(90000 + secrets.randbelow(9999) * 2 + i) for i in range(2)]

    def env(job: str) -> dict[str, str]:
        return {"SLURM_JOB_ID": job, "SLURM_JOB_UID": uid, "SLURM_JOB_GID": uid}

    for job in jobs:
        [record] = slurm.prolog(config, env(job))
        assert record.session
        assert slurm.user_file(config, job).stat().st_uid == site.alice.uid
    unreachable = config.replaced(scheduler_url=f"http://127.0.0.1:{free_port()}")
    slurm.epilog(unreachable, env(jobs[0]))
    assert not slurm.user_file(config, jobs[0]).exists()
    assert (tmp_path / "run" / "private" / f"stale-job-{jobs[0]}.json").exists()
    assert site.sessions(jobs[0])[0]["revoked_at"] is None
    slurm.epilog(config, env(jobs[1]))
    for job in jobs:
        assert site.sessions(job)[0]["revoke_reason"] == REVOKE_REASON
    assert list((tmp_path / "run" / "private").iterdir()) == []
    report("Epilog could not reach the scheduler: revoked by the next hook")


# -- the attacks of a hostile user (the hooks run as root) -----------------------------------


def test_fields_users_write_do_not_open_or_widen_a_session(
    site: Site, report: Callable[[str], None]
) -> None:
    """The attack on ``scontrol show job``'s text, re-run: a job without a licence whose name
    and comment read ``Licenses=qpu:64 Account=chem42``; a job charged to ``physics`` whose
    name says ``Account=chem42``; one whose name holds a newline and ``TresPerNode=gres:qpu:7``.
    The Prolog reads squeue's JSON: the first gets no session, the others their real slots and
    account."""
    forged = "vqe Licenses=qpu:64 Account=chem42 TimeLimit=UNLIMITED"
    no_licence, output = site.sbatch(
        site.bob, "-J", forged, "--comment", "Licenses=qpu:9", command="env"
    )
    renamed, _ = site.sbatch(
        site.bob, "-L", "qpu:1", "-A", "physics", "-J", "x Account=chem42", command="env"
    )
    newline, _ = site.sbatch(
        site.bob,
        "-L",
        "qpu:1",
        "-J",
        "x\nTresPerNode=gres:qpu:7 Licenses=qpu:7",
        "--comment",
        "y\nAccount=chem42",
        command="env",
    )
    for job_id in (no_licence, renamed, newline):
        assert site.wait_job(job_id) == "COMPLETED"
    assert site.sessions(no_licence) == []
    assert "QRMI_JOB_QPU_RESOURCES" not in output.read_text()
    for job_id, account in ((renamed, "physics"), (newline, None)):
        session = site.revoked_session(job_id)
        assert (session["qpu_slots"], session["slurm_account"]) == (1, account), session
    report("job name/comment injection: no session without a licence; real slots and account")


def test_the_prolog_ignores_what_the_job_exports(site: Site, report: Callable[[str], None]) -> None:
    """A job exporting a PATH to its own squeue and scontrol, the hooks' settings as
    QHPC_SLURM_* variables (a listener's URL, a settings file of its own), a proxy and a
    MUNGE socket: the session opens on the configured scheduler, the listener hears nothing
    and no program of the user's runs as root."""
    with hostile_listener() as listener:
        folder, marker = hostile_bin(site.bob.home, site.bob, ("squeue", "scontrol"))
        settings = folder / "slurm.toml"
        settings.write_text(f'scheduler_url = "{listener.url}"\n')
        exported = {
            "PATH": f"{folder}:/usr/bin:/bin",
            "QHPC_SLURM_SCHEDULER_URL": listener.url,
            "QHPC_SLURM_CONFIG": str(settings),
            "QHPC_SLURM_SQUEUE": str(folder / "squeue"),
            "HTTP_PROXY": listener.url,
            "http_proxy": listener.url,
            "MUNGE_SOCKET": str(folder / "munge.socket"),
        }
        export = ",".join(["ALL", *(f"{k}={v}" for k, v in exported.items())])
        job_id, output = site.sbatch(site.bob, "-L", "qpu:1", f"--export={export}", command="env")
        assert site.wait_job(job_id) == "COMPLETED"
        assert f"qpu_QRMI_WARDEN_URL={site.cluster.scheduler_url}" in output.read_text()
        assert site.revoked_session(job_id)["qpu_slots"] == 1
        assert listener.requests == [] and not marker.exists()
    report("exported PATH/QHPC_SLURM_*/proxy: the configured scheduler only, no user program")
