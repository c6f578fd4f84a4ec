"""The everyday calls of a cloud QPU SDK, through the real daemon: my jobs from any kernel,
a job's logs, my quotas, an estimate before submitting, the device time a result used, and
``%qpu help`` (docs/client.md, "Python API" and "Magics")."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from IPython.core.interactiveshell import InteractiveShell

import qhpc_lab
from qhpc_lab.client import Client, Job, JobState, Quota, TargetError, call
from qhpc_lab.client._qrmi import QRMITarget
from qhpc_lab.jupyter.magics import COMMANDS, QPUMagics
from qhpc_lab.programs import Program
from qhpc_lab.scheduler.auth import make_token
from tests.support.client_env import lab_env, make_default
from tests.support.daemons import Daemon, daemon, free_port
from tests.support.identities import ADMIN, OTHER, SECRET, USER, auth_header
from tests.support.magics import magics_on, run
from tests.support.polling import poll_until
from tests.support.programs import pulser_sequence_json

TIME_PER_SHOT_S = 0.0005
"""The ``test`` profile's."""
LONG_SHOTS = 10_000
"""5 s on the test profile: a job that is still there when the test looks again."""
QUOTA_USER = "1002"
"""A user of the quota test alone, so that what it has used is what that test submitted."""


@pytest.fixture(scope="module")
def scheduler(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    with daemon(tmp_path_factory.mktemp("scheduler")) as handle:
        yield handle


@pytest.fixture(scope="module")
def program() -> Program:
    return Program("pulser", pulser_sequence_json(), 40)


@pytest.fixture
def kernel(scheduler: Daemon, tmp_path: Path) -> Iterator[Callable[..., Client]]:
    """``kernel(uid)``: the client of one more kernel of user ``uid`` in a Slurm job whose QPU
    is the daemon; closed after the test."""
    made: list[Client] = []

    def make(uid: str = USER, **extra: str) -> Client:
        env = lab_env(scheduler.url, QHPC_TOKEN=make_token(SECRET, uid), **extra)
        made.append(Client(environ={"HOME": str(tmp_path), **env}))
        return made[-1]

    yield make
    for client in made:
        client.close()


@pytest.fixture
def shell() -> InteractiveShell:
    return InteractiveShell.instance()


def ids_on(jobs: list[Job], target: str = "lab") -> list[str]:
    return [job.id for job in jobs if job.target == target]


# -- my jobs, from every kernel -------------------------------------------------------------


def test_jobs_all_finds_my_other_kernels_jobs_and_never_another_users(
    kernel, program, shell, capsys
):
    mine, other_kernel, someone_else = kernel(), kernel(), kernel(OTHER)
    theirs = someone_else.submit(program, target="lab")
    done_there = other_kernel.submit(program, target="lab")
    long_there = other_kernel.submit(
        Program("pulser", program.body, LONG_SHOTS), target="lab", job_class="production"
    )
    here = mine.submit(program, target="lab")

    assert mine.jobs() == [here]  # the default is unchanged: this process's jobs
    found = mine.jobs(all=True)
    ids = ids_on(found)
    assert {done_there.id, long_there.id, here.id} <= set(ids) and theirs.id not in ids
    assert ids == sorted(ids, key=int)  # oldest first
    assert next(job for job in found if job.id == here.id) is here  # one Job per job here
    found_done = next(job for job in found if job.id == done_there.id)
    found_long = next(job for job in found if job.id == long_there.id)
    assert found_done.result(60).shots == 40
    assert found_long.cancel() == "CANCELED"
    assert long_there.wait(60) == "CANCELED"  # the other kernel sees its job canceled
    assert found_long.wait() == "CANCELED"

    magics_on(shell, mine)
    shell.run_line_magic("qpu", "jobs --all")
    shown = [line.split(":")[0] for line in capsys.readouterr().out.splitlines()]
    assert {f"job {i} on lab" for i in (done_there.id, long_there.id, here.id)} <= set(shown)
    assert f"job {theirs.id} on lab" not in shown
    shell.run_line_magic("qpu", "jobs")
    assert capsys.readouterr().out.splitlines() == [str(here)]
    shell.run_line_magic("qpu", "jobs --target emulator")
    assert capsys.readouterr().out == "no job submitted from this kernel on 'emulator' yet\n"
    assert theirs.wait(60) == "DONE"


def test_an_unreachable_scheduler_is_said_and_named_one_fails_the_cell(
    tmp_path, program, shell, capsys
):
    client = Client(environ={"HOME": str(tmp_path), **lab_env(f"http://127.0.0.1:{free_port()}")})
    try:
        here = client.submit(program, target="emulator")
        assert client.jobs(all=True) == [here]
        said = capsys.readouterr().err
        assert said.startswith("qhpc: target 'lab' is unreachable at http://127.0.0.1:")
        assert said.endswith("; of the jobs there, only this process's are listed, as last seen\n")
        magics_on(shell, client)
        success, shown = run(shell, capsys, "%qpu jobs --all --target lab")
        assert not success and shown.startswith("qpu: target 'lab' is unreachable at "), shown
        assert shown.count("\n") == 1
    finally:
        client.close()


# -- logs ------------------------------------------------------------------------------------


def test_logs_of_a_canceled_job_and_of_an_emulator_job(kernel, program, shell, capsys):
    client = kernel()
    job = client.submit(
        Program("pulser", program.body, LONG_SHOTS), target="lab", job_class="production"
    )
    assert job.cancel() == "CANCELED"
    story = job.logs().splitlines()
    assert story[0].startswith(f"job {job.id} (pulser, {LONG_SHOTS} shots, class production): ")
    assert "CANCELED" in story[0] and story[1].endswith("queued as production")
    assert story[-1].endswith("finished CANCELED: canceled by user")
    magics_on(shell, client)
    shell.run_line_magic("qpu", f"logs {job.id}")
    assert capsys.readouterr().out.splitlines() == story

    local = client.submit(program, target="emulator")
    assert local.wait(60) == "DONE"
    told = local.logs().splitlines()
    assert told[:2] == [
        f"emulator keeps no log; what this process knows of job {local.id}:",
        f"job {local.id} (emulator): DONE, 40/40 shots done",
    ]
    assert [line.split("  ")[1] for line in told[2:]] == ["queued", "started", "finished DONE"]


@pytest.mark.munge
def test_logs_of_a_qrmi_task_are_what_the_resource_keeps(munged, tmp_path, monkeypatch, program):
    """The real ``qrmi`` wheel's ``pasqal-local`` resource on a daemon with MUNGE auth (as
    QRMI's Slurm plugin sets it up): its ``task_logs`` are the scheduler's story."""
    from qrmi import QuantumResource, ResourceType

    with daemon(tmp_path, "--auth", "munge") as warden:
        monkeypatch.setenv("qpu_logs_QRMI_WARDEN_URL", warden.url)
        monkeypatch.setenv("QRMI_JOB_UID", str(os.getuid()))
        monkeypatch.setenv("QRMI_JOB_ID", "301")
        session = QuantumResource("qpu_logs", ResourceType.PasqalLocal).acquire()  # the prolog
        monkeypatch.setenv("qpu_logs_QRMI_JOB_ACQUISITION_TOKEN", session)
        target = QRMITarget("qpu_logs", "pasqal-local", origin="test")
        try:
            job = Job(target, call(target.submit(program, None)), None)
            assert job.wait(60) == "DONE"
            assert job.logs().startswith(f"job {job.id} (pulser, 40 shots, class ")
            unknown = Job(target, JobState("999999", "PENDING"), None)
            with pytest.raises(TargetError) as failed:
                unknown.logs()
            message = str(failed.value)
            assert message.startswith("QRMI resource 'qpu_logs' (pasqal-local): ")
            assert message.endswith("(while reading the logs of task 999999)")
        finally:
            call(target.aclose())


# -- quotas ----------------------------------------------------------------------------------


def test_quotas_when_an_admin_set_one_and_when_none_is_set(
    kernel, scheduler, program, shell, capsys, monkeypatch
):
    client = kernel(QUOTA_USER)
    magics_on(shell, client)
    assert client.quotas() == []
    shell.run_line_magic("qpu", "quotas")
    assert capsys.readouterr().out == "no quota applies to your jobs\n"

    admin = httpx.Client(base_url=scheduler.url, headers=auth_header(ADMIN, admin=True))
    quota = {"kind": "user", "subject": QUOTA_USER, "unit": "shots", "budget": 500}
    admin.put("/admin/quotas", json={**quota, "period": "day"}).raise_for_status()
    try:
        assert client.submit(program, target="lab").result(60).shots == 40
        make_default(monkeypatch, client)
        (mine,) = qhpc_lab.quotas()
        assert mine == Quota(
            "lab", "user", QUOTA_USER, "shots", 500, 40, 460, "day", mine.resets_at
        )
        assert mine.resets_at > datetime.now(UTC) and mine.resets_at.hour == 0
        resets = f"{mine.resets_at:%Y-%m-%d %H:%M}Z"
        assert str(mine) == f"lab: user {QUOTA_USER}: 40 of 500 shots used this day (8%), " + (
            f"resets at {resets}"
        )
        shell.run_line_magic("qpu", "quotas")
        table = [line.split() for line in capsys.readouterr().out.splitlines()]
        assert table == [
            ["target", "quota", "unit", "used", "budget", "used", "%", "period", "resets", "at"],
            ["lab", "user", QUOTA_USER, "shots", "40", "500", "8%", "day", *resets.split()],
        ]
    finally:
        admin.delete(f"/admin/quotas/user/{QUOTA_USER}/shots").raise_for_status()
        admin.close()
    shell.run_line_magic("qpu", "quotas --target emulator")
    assert capsys.readouterr().out == "no quota applies to your jobs on 'emulator'\n"


def test_a_target_that_reports_no_quotas_says_so(kernel, shell, capsys):
    """A QRMI resource (here a Pasqal Cloud one, never contacted) cannot report quotas."""
    client = kernel(
        QRMI_JOB_QPU_RESOURCES="lab,cloud", QRMI_JOB_QPU_TYPES="pasqal-local,pasqal-cloud"
    )
    magics_on(shell, client)
    success, shown = run(shell, capsys, "%qpu quotas --target cloud")
    assert not success
    assert shown == (
        "qpu: target 'cloud' (pasqal-cloud) reports no quotas: its provider keeps them, if any; "
        "a QPU's scheduler target reports yours\n"
    )
    assert client.quotas() == []  # the scheduler has none for this user; the resource is left out


# -- the estimate ----------------------------------------------------------------------------


def test_estimate_on_a_busy_queue(kernel, program, shell, capsys):
    """My running job, and my job of the same class waiting behind it: a third would be
    second in line, starting after the waiting one's 5 s."""
    client = kernel()
    long = Program("pulser", program.body, LONG_SHOTS)
    running = client.submit(long, target="lab", job_class="production")
    try:
        poll_until(lambda: running.status == "RUNNING", "the first job to run")
        waiting = client.submit(long, target="lab", job_class="production")
        estimate = client.estimate(program, job_class="production")
        magics_on(shell, client)
        shell.user_ns["bell"] = program
        shell.run_line_magic("qpu", "estimate --class production bell")
        shown = capsys.readouterr().out
        assert waiting.status == "PENDING"  # so it stood ahead of both estimates
    finally:
        for job in client.jobs():
            job.cancel()
    assert estimate is not None
    assert (estimate.target, estimate.position, estimate.waiting) == ("lab", 2, 1)
    assert estimate.start_in_s is not None and estimate.start_in_s >= LONG_SHOTS * TIME_PER_SHOT_S
    assert estimate.done_in_s == pytest.approx(estimate.start_in_s + 40 * TIME_PER_SHOT_S)
    assert re.fullmatch(
        r"lab: 2nd of 2 waiting, starts in ~\d+ s, ends in ~\d+ s "
        r"\(its own run ~0 s\)\n",
        shown,
    ), shown


def test_estimate_mistakes_name_the_magics_options(kernel, program, shell, capsys):
    magics_on(shell, kernel())
    shell.user_ns["bell"] = program
    cases = {
        "estimate": "qpu: the following arguments are required: VARIABLE (usage: %qpu estimate "
        "[--shots N] [--class C] [--target T] VARIABLE)",
        "estimate belle": "qpu: no variable named 'belle': %qpu estimate takes the name of the "
        "variable that holds the program",
        "estimate --class urgent bell": "qpu: target 'lab' refused (422): unknown job_class "
        "'urgent'; use one of development, test, production (--class)",
        "estimate --shots 0 bell": "qpu: shots must be a positive integer, got 0 (--shots)",
    }
    for line, message in cases.items():
        success, shown = run(shell, capsys, f"%qpu {line}")
        assert not success and shown == message + "\n", shown
    shell.run_line_magic("qpu", "estimate --target emulator bell")
    assert capsys.readouterr().out == (
        "no estimate from target 'emulator': only a scheduler target gives one "
        "(--target NAME; %qpu targets lists them)\n"
    )


# -- device time -----------------------------------------------------------------------------


def test_qpu_seconds_of_a_done_job(kernel, program):
    client = kernel()
    result = client.submit(program, target="lab").result(60)
    assert result.qpu_seconds is not None and result.qpu_seconds > 0
    assert result.qpu_seconds == pytest.approx(40 * TIME_PER_SHOT_S)
    assert client.submit(program, target="emulator").result(60).qpu_seconds is None


# -- help ------------------------------------------------------------------------------------


def test_help_lists_the_commands_and_tells_one(shell, tmp_path, capsys):
    client = magics_on(shell, Client(environ={"HOME": str(tmp_path)}))
    try:
        shell.run_line_magic("qpu", "help")
        listing = capsys.readouterr().out
        for synopsis, _ in COMMANDS.values():
            assert f"\n  {synopsis}\n" in listing
        assert listing.rstrip("\n") in QPUMagics.qpu.__doc__  # %qpu? says the same
        shell.run_line_magic("qpu", "help jobs")
        assert capsys.readouterr().out.splitlines()[:2] == [
            "%qpu jobs [--all] [--target T]",
            "  this kernel's jobs",
        ]
        shell.run_line_magic("qpu", "help %%qpu")
        assert capsys.readouterr().out.startswith("%%qpu [VARIABLE] [--shots N]")
        success, shown = run(shell, capsys, "%qpu help frobnicate")
        assert not success and shown == "qpu: no %qpu command 'frobnicate'; %qpu help lists them\n"
    finally:
        client.close()
