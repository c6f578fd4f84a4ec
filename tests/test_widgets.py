"""Live panels: followed from the caller's event loop, fed by the scheduler's event stream;
and, in a real kernel, a ``%%qpu`` cell that is awaited so its panel and cancel button work
while it waits."""

from __future__ import annotations

import asyncio
import os
import queue
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from IPython.core.interactiveshell import InteractiveShell

from qhpc_lab.client import Client, JobError
from qhpc_lab.jupyter import magics
from qhpc_lab.jupyter.widgets import JobPanel, TargetsPanel
from qhpc_lab.programs import Program
from qhpc_lab.scheduler.auth import make_token
from tests.conftest import (
    ADMIN,
    OTHER,
    SECRET,
    USER,
    Daemon,
    auth_header,
    daemon,
    pulser_sequence_json,
)

LONG = 8000
"""Shots that keep the test device busy for seconds (0.5 ms a shot)."""


@pytest.fixture(scope="module")
def scheduler(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    with daemon(tmp_path_factory.mktemp("scheduler")) as handle:
        yield handle


@pytest.fixture(scope="module")
def program() -> Program:
    return Program("pulser", pulser_sequence_json(), 20)


def lab_env(scheduler: Daemon, home: Path) -> dict[str, str]:
    return {
        "HOME": str(home),
        "QRMI_JOB_QPU_RESOURCES": "lab",
        "QRMI_JOB_QPU_TYPES": "pasqal-local",
        "lab_QRMI_WARDEN_URL": scheduler.url,
        "QHPC_TOKEN": make_token(SECRET, USER),
    }


@pytest.fixture
def lab(scheduler: Daemon, tmp_path: Path) -> Iterator[Client]:
    client = Client(environ=lab_env(scheduler, tmp_path))
    yield client
    client.close()


async def until(condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    """Let the loop run until ``condition`` holds (a deadline only against hanging)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def test_outside_a_kernel_output_stays_text(tmp_path, capsys):
    shell = InteractiveShell.instance()
    assert not magics.live(shell) and not magics.awaits_cells(shell)
    cell = ["get_ipython().run_cell_magic('qpu', '--shots 5', 'sequence\\n')\n"]
    assert magics.await_qpu_cells(cell) == cell
    client = Client(environ={"HOME": str(tmp_path)})
    try:
        assert magics.show(client.targets(), client) is None
        assert capsys.readouterr().out.startswith("* emulator")
    finally:
        client.close()


def test_in_a_kernel_qpu_cells_become_awaited_calls(monkeypatch):
    monkeypatch.setattr(magics, "awaits_cells", lambda shell=None: True)
    cell = "get_ipython().run_cell_magic('qpu', '--shots 5', 'sequence\\n')\n"
    (line,) = magics.await_qpu_cells([cell])
    assert line == (
        "await get_ipython().magics_manager.registry['QPUMagics']"
        ".qpu_async('--shots 5', 'sequence\\n')\n"
    )
    other = ["get_ipython().run_line_magic('qpu', 'jobs')\n"]
    assert magics.await_qpu_cells(other) == other


@pytest.mark.anyio
async def test_job_panel_follows_an_emulator_job_to_its_histogram(tmp_path, program, capsys):
    client = Client(environ={"HOME": str(tmp_path)})
    try:
        job = client.submit(program, target="emulator")
        panel = JobPanel(job)
        panel.show()
        result = await panel.wait()
    finally:
        client.close()
    assert result.shots == 20
    assert "DONE" in panel._status.value and panel._cancel.disabled
    assert panel._progress.value == panel._progress.max == 20
    assert "Result of job 1 on emulator" in panel._outcome.value
    text = capsys.readouterr().out  # what a frontend without widgets shows, first and last
    assert text.startswith("job 1 on emulator: PENDING")
    assert "job 1 on emulator: DONE, 20/20 shots\nResult of job 1 on emulator" in text
    bundle = panel._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert bundle["text/html"].startswith('<div class="qhpc-result">')


@pytest.mark.anyio
async def test_job_panels_show_queue_and_device_and_cancel_through_the_scheduler(
    lab, program, scheduler
):
    running = lab.submit(program, shots=LONG)
    waiting = lab.submit(program, shots=10)
    first, second = JobPanel(running), JobPanel(waiting)
    first.show()
    second.show()
    await until(lambda: "running" in first._status.value, "the first job to run")
    await until(lambda: "position 1 of 1" in second._status.value, "k of n")
    await until(lambda: "calibrated" in second._status.value, "the device line")
    assert "QHPC-Test · ONLINE" in second._status.value

    async with httpx.AsyncClient(base_url=scheduler.url) as http:
        admin = auth_header(ADMIN, admin=True)
        (await http.post("/admin/calibrate", headers=admin)).raise_for_status()
    await until(lambda: "CALIBRATING" in second._status.value, "the calibration event")

    first._cancel.click()  # what the frontend's click runs, on this loop
    assert first._cancel.disabled
    with pytest.raises(JobError, match="CANCELED"):
        await first.wait()
    assert "CANCELED" in first._status.value
    result = await second.wait()  # moved up by the cancel, without an event of its own
    assert result.shots == 10 and "DONE" in second._status.value
    assert "calibration age when the shots ran" in second._status.value


@pytest.mark.anyio
async def test_another_users_submission_moves_my_panel_at_once_with_no_re_read(
    lab, program, scheduler
):
    """'Position k of n' follows the queue event: a second user's job that outranks mine
    (class test) moves me back, its cancellation forward again, each well before any refresh
    period would, and with no GET of /jobs or /device."""
    blocker = lab.submit(program, shots=LONG)
    mine = lab.submit(program, shots=10)
    panel = JobPanel(mine)
    panel.show()
    await until(lambda: "position 1 of 1" in panel._status.value, "k of n")
    await until(lambda: "calibrated" in panel._status.value, "the device line")
    reads: list[str] = []

    async def count(request: httpx.Request) -> None:
        reads.append(f"{request.method} {request.url.path}")

    lab._targets["lab"]._http.event_hooks["request"].append(count)
    seconds: dict[str, float] = {}
    async with httpx.AsyncClient(base_url=scheduler.url, headers=auth_header(OTHER)) as other:
        sent = time.monotonic()
        answer = await other.post(
            "/jobs", json={"sequence": pulser_sequence_json(), "shots": LONG, "job_class": "test"}
        )
        answer.raise_for_status()
        await until(lambda: "position 2 of 2" in panel._status.value, "moved back")
        seconds["submitted"] = time.monotonic() - sent
        sent = time.monotonic()
        (await other.post(f"/jobs/{answer.json()['id']}/cancel")).raise_for_status()
        await until(lambda: "position 1 of 1" in panel._status.value, "moved forward")
        seconds["canceled"] = time.monotonic() - sent
    assert all(s < 2.0 for s in seconds.values()), seconds  # the old refresh came every 10 s
    assert reads == [], reads  # no /device, no /jobs: the stream carried it
    mine.cancel()
    blocker.cancel()
    with pytest.raises(JobError):
        await panel.wait()


@pytest.mark.anyio
async def test_targets_panel_lists_and_refreshes_without_blocking(lab):
    panel = TargetsPanel(await lab.atargets(), lab)
    panel.show()
    assert "<code>lab</code>" in panel._table.value and "QHPC-Test" in panel._table.value
    assert panel.text().splitlines()[0].startswith("* lab")
    panel._refresh.click()
    assert panel._refresh.disabled
    await until(lambda: not panel._refresh.disabled, "the refresh")
    assert panel._note.value == "" and "ONLINE" in panel._table.value


# -- a real kernel ------------------------------------------------------------------------------

CELL = """%%qpu --shots {shots} -o result
from pulser import Pulse, Register, Sequence
from pulser.devices import AnalogDevice

sequence = Sequence(Register.from_coordinates([(0, 0), (6, 0)], prefix="q"), AnalogDevice)
sequence.declare_channel("g", "rydberg_global")
sequence.add(Pulse.ConstantPulse(100, 2.0, 0.0, 0.0), "g")
sequence
"""


class Kernel:
    """An ipykernel driven as a frontend would: execute, read iopub, send comm messages."""

    def __init__(self, env: dict[str, str]) -> None:
        from jupyter_client.manager import start_new_kernel

        self.manager, self.client = start_new_kernel(kernel_name="python3", env=env)
        self.comms: dict[str, dict] = {}
        """Widget models opened by the kernel, by comm id: their latest state."""

    def execute(self, code: str, on_message: Callable[[str, dict], None] | None = None) -> dict:
        """Run ``code``; calls ``on_message`` for each iopub message until the kernel idles.
        Returns its streams and its error (the lines of its traceback)."""
        msg_id = self.client.execute(code)
        outputs: dict[str, str] = {"stdout": "", "stderr": "", "error": ""}
        while True:
            msg = self.client.get_iopub_msg(timeout=120)
            kind, content = msg["msg_type"], msg["content"]
            if kind == "comm_open":
                self.comms[content["comm_id"]] = dict(content["data"].get("state", {}))
            elif kind == "comm_msg" and content["comm_id"] in self.comms:
                self.comms[content["comm_id"]].update(content["data"].get("state", {}))
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            if kind == "stream":
                outputs[content["name"]] += content["text"]
            elif kind == "error":
                outputs["error"] = "\n".join(content["traceback"])
            if on_message is not None:
                on_message(kind, content)
            if kind == "status" and content["execution_state"] == "idle":
                return outputs

    def widgets(self, model: str) -> list[str]:
        return [cid for cid, state in self.comms.items() if state.get("_model_name") == model]

    def click(self, comm_id: str) -> None:
        """What a browser sends when a button is clicked."""
        content = {"comm_id": comm_id, "data": {"method": "custom", "content": {"event": "click"}}}
        msg = self.client.session.msg("comm_msg", content)
        self.client.shell_channel.send(msg)

    def close(self) -> None:
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=True)


@pytest.fixture(scope="module")
def kernel(scheduler: Daemon, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kernel]:
    handle = Kernel({**os.environ, **lab_env(scheduler, tmp_path_factory.mktemp("home"))})
    try:
        assert handle.execute("%load_ext qhpc_lab")["stderr"] == ""
        yield handle
    finally:
        handle.close()


@pytest.mark.slow
def test_kernel_awaits_qpu_cells_with_a_live_panel_and_a_working_cancel(kernel):
    seen: queue.SimpleQueue[str] = queue.SimpleQueue()

    def click_when_running(kind: str, content: dict) -> None:
        html = content.get("data", {}).get("state", {}).get("value")
        if kind == "comm_msg" and isinstance(html, str) and ">RUNNING<" in html:
            seen.put(html)
            (button,) = kernel.widgets("ButtonModel")
            kernel.click(button)

    out = kernel.execute(CELL.format(shots=LONG), click_when_running)
    assert not seen.empty(), "the panel was not updated while the cell ran"
    assert out["error"].startswith("qpu: job") and "ended CANCELED" in out["error"]
    titles = [s["value"] for s in kernel.comms.values() if ">CANCELED<" in str(s.get("value"))]
    assert titles, "the panel does not show the cancel"
    assert kernel.execute("print('result' in dir())")["stdout"] == "False\n"

    assert kernel.execute(CELL.format(shots=30))["stderr"] == ""
    assert kernel.execute("print(type(result).__name__, result.shots)")["stdout"] == "Result 30\n"


@pytest.mark.slow
def test_kernel_interrupt_stops_waiting_and_the_panel_goes_on(kernel):
    def interrupt_when_running(kind: str, content: dict) -> None:
        html = content.get("data", {}).get("state", {}).get("value")
        if kind == "comm_msg" and isinstance(html, str) and ">RUNNING<" in html:
            kernel.manager.interrupt_kernel()

    out = kernel.execute(CELL.format(shots=LONG), interrupt_when_running)
    assert "qpu: stopped waiting; job" in out["error"] and "goes on" in out["error"]
    status = kernel.execute("import qhpc_lab; print(qhpc_lab.job().status)")["stdout"]
    assert status.strip() in ("RUNNING", "PENDING")
    kernel.execute("qhpc_lab.job().cancel()")
