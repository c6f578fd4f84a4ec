"""The kernel client against a plain Warden (tests/support/warden_standin.py): Warden's routes and
fields only, so no /device, /events, position, ETA or timeline; and answers it must not
choke on, each ending in one clear ClientError that names the target and the value."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from IPython.core.interactiveshell import InteractiveShell

import qhpc_lab
from qhpc_lab.client import (
    AnswerError,
    Client,
    ClientError,
    JobError,
    RefusedError,
    TargetError,
)
from qhpc_lab.client import _scheduler as scheduler_target
from qhpc_lab.programs import Program
from tests.support.client_env import lab_env, make_default
from tests.support.magics import SEQUENCE_CELL, magics_on
from tests.support.polling import poll_until
from tests.support.warden_standin import CORRUPTIONS, WardenStandin, serve

pytestmark = pytest.mark.munge

POLL_S = 0.2
"""The client's poll interval in these tests (2 s by default): jobs here last under 1 s."""


@pytest.fixture(scope="module")
def standin(munged: None) -> Iterator[WardenStandin]:
    """One stand-in Warden for the module, served by uvicorn on a free port."""
    warden = WardenStandin()
    with serve(warden):
        yield warden


@pytest.fixture(autouse=True)
def behaving(standin: WardenStandin, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test starts with a well-behaved stand-in and a quick poll."""
    monkeypatch.setattr(scheduler_target, "POLL_S", POLL_S)
    yield
    standin.corrupt = None
    standin.pending_s, standin.running_s = 0.3, 0.5
    standin.accessible = standin.accessible.model_copy(
        update={"is_accessible": True, "message": "Warden ok."}
    )


@pytest.fixture
def client(standin: WardenStandin, tmp_path: Path) -> Iterator[Client]:
    """A client discovering the stand-in from the QRMI variables, with a session of this
    process's user (the Slurm prolog's ``POST /sessions``)."""
    session = standin.open_session(str(os.getuid()))
    env = lab_env(standin.url, lab_QRMI_JOB_ACQUISITION_TOKEN=session, HOME=str(tmp_path))
    made = Client(environ=env)
    yield made
    made.close()


@pytest.fixture
def program(sequence_json: str) -> Program:
    return Program("pulser", sequence_json, 40)


def test_discovery_lists_warden_with_its_state_unknown(client: Client, standin: WardenStandin):
    lab = client.targets()[0]
    assert (lab.name, lab.kind, lab.type, lab.reachable, lab.selected) == (
        "lab",
        "scheduler",
        "pasqal-local",
        True,
        True,
    )
    assert lab.device == "QHPC-Test" and lab.spec is not None and lab.spec.max_atom_num == 16
    assert lab.state is None and lab.calibration_age_s is None and lab.queued is None
    assert lab.message == "Warden ok." and "QHPC-Test" in str(lab)
    assert lab.formats == ("pulser",)  # Warden's /qpu/specs does not say: Warden runs pulser
    standin.accessible = standin.accessible.model_copy(
        update={"is_accessible": False, "message": "QPU maintenance until 14:00"}
    )
    lab = client.targets()[0]
    assert lab.state == "MAINTENANCE" and lab.message == "QPU maintenance until 14:00"


def test_submit_waits_by_polling_without_position_eta_or_timeline(
    client: Client, standin: WardenStandin, program: Program, monkeypatch: pytest.MonkeyPatch
):
    make_default(monkeypatch, client)
    standin.pending_s = 0.6
    job = qhpc_lab.submit(program, name="bell", job_class="development")
    assert job.status == "PENDING" and job.target == "lab"
    assert job.position is None and job.end_in_s is None
    result = job.result(timeout=60)
    assert result.shots == 40 and result.device == "QHPC-Test"
    assert all(len(bits) == 2 and set(bits) <= {"0", "1"} for bits in result.counts)
    assert result.created_at is not None and job.timeline() is None
    assert result.timeline() is None
    assert "GET /events" in standin.requests  # refused (404): the client polls instead
    assert standin.requests.count(f"GET /jobs/{job.id}") >= 2
    assert str(job) == f"job {job.id} on lab: DONE"


def test_cancel_a_waiting_and_a_running_job(
    client: Client, standin: WardenStandin, program: Program
):
    standin.pending_s = 30
    waiting = client.submit(program)
    assert waiting.cancel() == "CANCELED"
    assert waiting.cancel() == "CANCELED"  # Warden's 409 for a finished job: its state
    with pytest.raises(JobError, match="ended CANCELED"):
        waiting.result()
    standin.pending_s, standin.running_s = 0.0, 2.0
    running = client.submit(program)
    poll_until(lambda: running.refresh().status == "RUNNING", "the job to start", timeout=30)
    assert running.cancel() == "RUNNING"  # Warden stops it; it ends CANCELED afterwards
    assert running.cancel() == "RUNNING"  # 409: already requested to be stopped
    assert running.wait(timeout=30) == "CANCELED"


def test_qpu_cell_through_warden(
    shell: InteractiveShell,
    client: Client,
    capsys: pytest.CaptureFixture[str],
):
    magics_on(shell, client)
    shell.run_line_magic("qpu", "targets")
    assert capsys.readouterr().out.startswith("* lab")
    shell.run_cell_magic("qpu", "--shots 20 -o r", SEQUENCE_CELL)
    result = shell.user_ns.pop("r")
    assert result.target == "lab" and result.shots == 20 and result.device == "QHPC-Test"


# -- answers the client must not choke on -----------------------------------------------------

WHEN_PROBED = {
    "specs-not-json": "sent device specs this client cannot read (JSONDecodeError",
    "specs-not-string": "sent device specs this client cannot read: specs is 42",
    "specs-not-a-device": "(KeyError: 'name'): '{\"atoms\": 16}'",
    "accessible-missing": "sent its accessibility this client cannot read: no 'is_accessible'",
    "not-json": "answered GET /accessible with text/plain 'OK', not JSON",
    "html-error": "refused (502): text/html '502 Bad Gateway 502 Bad Gateway nginx'",
}
WHEN_SUBMITTED = {
    "status-unknown": "sent a job this client cannot read: status is 'FINISHED': Input should be",
    "status-missing": "sent a job this client cannot read: no 'status' in {'id': ",
    "id-not-int": "sent a job this client cannot read: id is 'job-",
    "job-not-object": "cannot read: the answer is [['id', ",
    "not-json": "answered POST /jobs with text/plain 'OK', not JSON",
    "html-error": "refused (502): text/html '502 Bad Gateway 502 Bad Gateway nginx'",
}
WHEN_DONE = {
    "results-not-string": "results is {'counter': {'00': 40}}: JSON input should be string",
    "results-not-json": "results is 'counter 00=40': Invalid JSON",
    "counter-not-mapping": "results.counter is [['00', 40]]: Input should be a valid dictionary",
    "counts-not-ints": "results.counter.00 is '40': Input should be a valid integer",
    "counter-not-bitstrings": "results.counter.up is 'up': String should match pattern",
}


def test_every_corruption_is_tested():
    assert set(CORRUPTIONS) == {*WHEN_PROBED, *WHEN_SUBMITTED, *WHEN_DONE}


def one_clear_line(err: ClientError, expected: str) -> None:
    message = str(err)
    assert message.startswith("target 'lab' ") and "\n" not in message
    assert expected in message, message


@pytest.mark.parametrize("corruption", WHEN_PROBED)
def test_a_probe_that_cannot_be_read_makes_the_target_unreachable(
    client: Client, standin: WardenStandin, program: Program, corruption: str
):
    standin.corrupt = corruption
    lab = client.targets()[0]
    assert not lab.reachable
    one_clear_line(ClientError(lab.message), WHEN_PROBED[corruption])
    with pytest.raises(TargetError) as refused:
        client.submit(program, target="lab")
    one_clear_line(refused.value, WHEN_PROBED[corruption])


@pytest.mark.parametrize("corruption", WHEN_SUBMITTED)
def test_a_job_that_cannot_be_read_fails_its_submission(
    client: Client, standin: WardenStandin, program: Program, corruption: str
):
    client.use("lab")
    standin.corrupt = corruption
    expected = RefusedError if corruption == "html-error" else AnswerError
    with pytest.raises(expected) as failed:
        client.submit(program)
    one_clear_line(failed.value, WHEN_SUBMITTED[corruption])


@pytest.mark.parametrize("corruption", WHEN_DONE)
def test_results_that_cannot_be_read_fail_the_wait(
    client: Client, standin: WardenStandin, program: Program, corruption: str
):
    standin.pending_s, standin.running_s = 0.0, 0.2  # RUNNING when submitted, soon DONE
    standin.corrupt = corruption
    job = client.submit(program)
    with pytest.raises(AnswerError) as failed:
        job.result(timeout=30)
    one_clear_line(failed.value, WHEN_DONE[corruption])
