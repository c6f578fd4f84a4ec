"""The %qpu magics, driven through a real IPython shell, on the emulator and the scheduler."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from IPython.core.interactiveshell import InteractiveShell

from qhpc_lab.client import Client, Job, Result
from qhpc_lab.programs import Program
from qhpc_lab.scheduler.auth import make_token
from tests.support.client_env import make_default
from tests.support.daemons import Daemon, daemon
from tests.support.identities import ADMIN, OTHER, SECRET, USER, auth_header
from tests.support.magics import SEQUENCE_CELL, magics_on, run
from tests.support.polling import poll_until
from tests.support.programs import pulser_sequence_json


@pytest.fixture(scope="module")
def scheduler(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    with daemon(tmp_path_factory.mktemp("scheduler")) as handle:
        yield handle


@pytest.fixture
def emulator(shell: InteractiveShell, tmp_path: Path) -> Iterator[Client]:
    client = magics_on(shell, Client(environ={"HOME": str(tmp_path)}))
    client.use("emulator")
    yield client
    client.close()


@pytest.fixture
def lab(shell: InteractiveShell, scheduler: Daemon, tmp_path: Path) -> Iterator[Client]:
    env = {
        "HOME": str(tmp_path),
        "QRMI_JOB_QPU_RESOURCES": "lab",
        "QRMI_JOB_QPU_TYPES": "pasqal-local",
        "lab_QRMI_WARDEN_URL": scheduler.url,
        "QHPC_TOKEN": make_token(SECRET, USER),
    }
    client = magics_on(shell, Client(environ=env))
    yield client
    client.close()


def test_load_ext_registers_the_magics_on_the_default_client(shell, tmp_path, monkeypatch):
    # the file's default is a scheduler nobody runs: only `use` makes the emulator the target
    targets = tmp_path / "targets.toml"
    targets.write_text(
        'default = "lab"\n[targets.lab]\ntype = "scheduler"\nurl = "http://127.0.0.1:9"\n'
    )
    client = Client(environ={"HOME": str(tmp_path), "QHPC_TARGETS_FILE": str(targets)})
    make_default(monkeypatch, client)
    shell.run_line_magic("load_ext", "qhpc_lab")
    assert "qpu" in shell.magics_manager.magics["cell"]
    shell.run_line_magic("qpu", "use emulator")
    assert client.target_info().name == "emulator"


def test_cell_runs_on_the_emulator_and_stores_the_result(shell, emulator, capsys):
    shell.run_cell_magic("qpu", "--shots 25 -o counts_result", SEQUENCE_CELL)
    result = shell.user_ns["counts_result"]
    assert isinstance(result, Result) and result.shots == 25 and result.target == "emulator"
    out = capsys.readouterr().out
    assert "job 1 on emulator" in out and "Result of job 1 on emulator" in out
    shell.run_line_magic("qpu", "jobs")
    assert capsys.readouterr().out.strip() == "job 1 on emulator: DONE, 25/25 shots"


def test_named_variable_no_wait_status_result_and_cancel(shell, emulator, capsys):
    shell.run_cell_magic("qpu", "sequence --shots 10 --no-wait -o job", SEQUENCE_CELL + "x = 1")
    job = shell.user_ns["job"]
    assert isinstance(job, Job) and job.target == "emulator"
    shell.run_cell("awaited = await job")  # top-level await, as in a notebook
    assert shell.user_ns["awaited"].shots == 10
    shell.run_line_magic("qpu", "result")
    shell.run_line_magic("qpu", f"status {job.id}")
    out = capsys.readouterr().out
    assert f"Result of job {job.id} on emulator" in out
    assert out.strip().endswith(f"job {job.id} on emulator: DONE, 10/10 shots")
    shell.run_line_magic("qpu", f"cancel {job.id}")
    assert capsys.readouterr().out.strip() == f"job {job.id} on emulator: DONE, 10/10 shots"


@pytest.mark.parametrize(
    ("line", "cell", "message"),
    [
        ("use nowhere", None, "qpu: no target named 'nowhere'; known: emulator"),
        ("frobnicate", None, "qpu: unknown command 'frobnicate'; use %qpu targets"),
        ("", None, "qpu: %qpu targets | use NAME"),
        ("cancel", None, "qpu: %qpu cancel takes 1 argument"),
        ("status", None, "qpu: no job has been submitted from this process yet"),
        ("status 'unclosed", None, "qpu: No closing quotation"),
        ("--shots many", "x = 1", "qpu: argument --shots: invalid int value: 'many'"),
        ("", "x = 1", "qpu: the cell must end with the program to submit"),
        ("missing", "x = 1", "qpu: the cell left no variable named 'missing' to submit"),
        ("", "42", "qpu: cannot turn a int into a program"),
    ],
)
def test_mistakes_fail_the_cell_with_one_line(shell, emulator, capsys, line, cell, message):
    success, shown = run(shell, capsys, f"%qpu {line}" if cell is None else f"%%qpu {line}\n{cell}")
    assert not success
    assert shown.startswith(message) and shown.count("\n") == 1, shown


PULSER_MISTAKE = SEQUENCE_CELL.replace(
    "\nsequence\n", '\nsequence.add(1, "g")\nsequence\n'
).lstrip()
"""A cell whose line 8 hands Pulser a pulse that is not one."""


@pytest.mark.parametrize(
    ("body", "pointer", "error"),
    [
        (PULSER_MISTAKE, '----> 8 sequence.add(1, "g")', "TypeError"),
        ("x = 1\n\ny = (\n", "line 4", "SyntaxError"),
        ("sequence = 1\n1 / 0", "----> 3 1 / 0", "ZeroDivisionError: division by zero"),
    ],
)
def test_errors_in_the_cell_code_show_the_cells_own_traceback(
    shell, emulator, capsys, body, pointer, error
):
    """IPython's pointer into the cell, lines counted from the %%qpu line; none of our frames."""
    success, shown = run(shell, capsys, f"%%qpu --shots 5\n{body}")
    assert not success
    assert f"Cell In[{shell.execution_count}], line" in shown and pointer in shown, shown
    assert error in shown and "qhpc_lab" not in shown and "run_cell_magic" not in shown, shown


def test_interrupted_wait_leaves_the_job_running(shell, emulator, capsys, monkeypatch):
    def interrupted(self, timeout=None):
        raise KeyboardInterrupt

    monkeypatch.setattr(Job, "result", interrupted)
    success, shown = run(shell, capsys, f"%%qpu -o kept{SEQUENCE_CELL}")
    assert not success and shown.endswith("qpu: stopped waiting; job 1 goes on (%qpu status 1)\n")
    assert "kept" not in shell.user_ns


def test_targets_use_and_cells_through_the_scheduler(shell, lab, capsys):
    shell.run_line_magic("qpu", "targets")
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("* lab") and "QHPC-Test, ONLINE" in lines[0]
    assert lines[1].startswith("  emulator")
    shell.run_line_magic("qpu", "use lab")
    assert capsys.readouterr().out.startswith("* lab")
    shell.run_cell_magic("qpu", "--class development --name demo --shots 20 -o r", SEQUENCE_CELL)
    result = shell.user_ns["r"]
    assert result.target == "lab" and result.device == "QHPC-Test" and result.shots == 20
    assert "shots · calibration #" in capsys.readouterr().out  # which one its shots ran under


def test_cancel_and_device_refusal_through_the_scheduler(shell, lab, capsys):
    shell.run_cell_magic("qpu", "--shots 10000 --no-wait -o long", SEQUENCE_CELL)
    job = shell.user_ns["long"]
    capsys.readouterr()
    shell.run_line_magic("qpu", f"cancel {job.id}")
    assert capsys.readouterr().out.startswith(f"job {job.id} on lab: CANCELED")
    success, shown = run(shell, capsys, f"%%qpu --shots 20000{SEQUENCE_CELL}")
    assert not success and shown.startswith("qpu: max_runs: 20000 shots requested")
    success, shown = run(shell, capsys, f"%%qpu --target lab --class urgent{SEQUENCE_CELL}")
    assert not success and "unknown job_class 'urgent'" in shown
    success, shown = run(shell, capsys, f"%qpu result {job.id}")
    assert not success and shown.startswith(f"qpu: job {job.id}") and "CANCELED" in shown


def test_cells_run_as_development_unless_told(shell, lab, scheduler, capsys):
    """Cells are interactive work; the Python API leaves the class to the scheduler."""
    classes = []
    for cell in ("%%qpu --no-wait -o job", "%%qpu --no-wait --class test -o job"):
        assert run(shell, capsys, cell + SEQUENCE_CELL)[0]
        job = shell.user_ns["job"]
        answer = httpx.get(f"{scheduler.url}/jobs/{job.id}", headers=auth_header(USER))
        classes.append(answer.raise_for_status().json()["job_class"])
        job.cancel()
    assert classes == ["development", "test"]


def test_a_refusal_in_maintenance_fails_the_cell_with_its_reason(shell, lab, scheduler, capsys):
    admin = auth_header(ADMIN, admin=True)
    closed = {"is_accessible": False, "message": "laser swap until 14:00"}
    httpx.post(f"{scheduler.url}/accessible", json=closed, headers=admin).raise_for_status()
    try:
        success, shown = run(shell, capsys, f"%%qpu -o refused{SEQUENCE_CELL}")
    finally:
        opened = {"is_accessible": True}
        httpx.post(f"{scheduler.url}/accessible", json=opened, headers=admin).raise_for_status()
    assert not success and "refused" not in shell.user_ns
    assert shown.startswith("qpu: ") and "laser swap until 14:00" in shown, shown
    assert shown.count("\n") == 1 and "Traceback" not in shown, shown


def test_loop_start_and_stop_make_cells_one_hybrid_loop(shell, lab, scheduler, capsys):
    """``%qpu loop start`` marks later cells' jobs with the loop and its think time (the job
    views echo both), ``%qpu loop stop`` ends it; ``%qpu session``, its old name, still works
    and says it is deprecated."""
    with pytest.warns(DeprecationWarning, match="%qpu session is deprecated.*use %qpu loop"):
        shell.run_line_magic("qpu", "session")
    assert capsys.readouterr().out.strip() == "no loop is active"
    shell.run_line_magic("qpu", "loop start vqe-cells --think 0.5")
    assert capsys.readouterr().out.strip() == "started loop vqe-cells (0 jobs, think time: 0.5 s)"
    jobs = []
    for _ in range(2):
        shell.run_cell_magic("qpu", "--target lab --shots 20 -o r", SEQUENCE_CELL)
        jobs.append(lab.job())
    capsys.readouterr()
    shell.run_line_magic("qpu", "loop")
    assert capsys.readouterr().out.strip() == "loop vqe-cells (2 jobs, think time: 0.5 s)"
    shell.run_line_magic("qpu", "loop stop")
    assert capsys.readouterr().out.strip().startswith("stopped loop vqe-cells (2 jobs")
    shell.run_cell_magic("qpu", "--target lab --shots 20 -o r", SEQUENCE_CELL)
    jobs.append(lab.job())
    views = [
        httpx.get(f"{scheduler.url}/jobs/{job.id}", headers=auth_header(USER)).json()
        for job in jobs
    ]
    marks = [(view["loop"], view["think_time_s"]) for view in views]
    assert marks == [("vqe-cells", 0.5), ("vqe-cells", 0.5), (None, None)]
    capsys.readouterr()
    success, shown = run(shell, capsys, "%qpu loop start --think soon")
    assert not success and shown.startswith("qpu: argument --think: invalid float value")


def test_a_loop_holds_the_qpu_while_another_users_job_waits(lab, scheduler, monkeypatch, tmp_path):
    """``qhpc_lab.loop``: three jobs of a loop that declares 20 ms of think time (under
    half a 50 ms chunk of the ``test`` profile), while another user's production job waits
    behind them: the daemon holds the QPU for the loop after its jobs (docs/policy.md rule
    8) and releases it; the other job then finishes; each result names its calibration."""
    import qhpc_lab

    make_default(monkeypatch, lab)
    other_env = {
        "HOME": str(tmp_path),
        "QRMI_JOB_QPU_RESOURCES": "lab",
        "QRMI_JOB_QPU_TYPES": "pasqal-local",
        "lab_QRMI_WARDEN_URL": scheduler.url,
        "QHPC_TOKEN": make_token(SECRET, OTHER),
    }
    other = Client(environ=other_env)
    try:
        other.target_info("lab")  # probed now: its submission below is one request
        sequence = pulser_sequence_json()
        with qhpc_lab.loop("vqe-e2e", think_time_s=0.02) as loop:
            step = Program("pulser", sequence, 200)
            first = qhpc_lab.submit(dataclasses.replace(step, shots=4000), job_class="development")
            waiting = other.submit(
                Program("pulser", sequence, 2000), target="lab", job_class="production"
            )
            results = [first.result(timeout=120)]
            for _ in range(2):
                job = qhpc_lab.submit(step, job_class="development")
                results.append(job.result(timeout=120))
        assert len(loop.jobs) == 3 and lab.active_loop is None
        assert all(result.calibrations for result in results)
        assert waiting.result(timeout=120).shots == 2000

        def released() -> str:
            text = scheduler.log.read_text()
            return text if "QPU released by loop vqe-e2e" in text else ""

        log = poll_until(released, "the hold's release in the daemon's log")
        assert f"QPU held for loop vqe-e2e of user {USER} until" in log
        device = httpx.get(f"{scheduler.url}/device", headers=auth_header(USER)).json()
        assert device["held_for_loop"] is None
    finally:
        other.close()


def test_a_sweep_cell_is_one_job_with_a_result_per_point(shell, lab, capsys, tmp_path):
    cell = (
        "\nfrom tests.support.programs import parametrised_sequence_json\n"
        "from qhpc_lab.programs import Program\n"
        "Program('pulser', parametrised_sequence_json(), 10)\n"
    )
    success, shown = run(shell, capsys, f"%%qpu --sweep omega=1,2.5 --shots 10 -o r{cell}")
    assert success and re.search(r"sets \d of 2 done, \d+/20 shots", shown), shown  # its panel
    result = shell.user_ns["r"]
    assert [(s.variables, s.shots) for s in result.sets] == [
        ({"omega": 1}, 10),
        ({"omega": 2.5}, 10),
    ]
    assert result.shots == 20 and "a sweep of 2 sets" in str(result)
    points = tmp_path / "points.json"
    points.write_text('[{"omega": 1.0}, {"omega": 1.5}, {"omega": 2.0}]')
    assert run(shell, capsys, f"%%qpu --sweep-file {points} --no-wait -o job{cell}")[0]
    job = shell.user_ns["job"]
    assert len(job.result(60).sets) == 3 and "sets 3 of 3 done" in str(job)
    success, shown = run(shell, capsys, f"%%qpu --sweep omega=1,x{cell}")
    assert not success and "--sweep omega=1,x: write NAME=V1,V2,..." in shown
