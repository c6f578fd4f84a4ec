"""Live panels: followed from the caller's event loop, fed by the scheduler's event stream;
and, in a real kernel, a ``%%qpu`` cell that is awaited so its panel and cancel button work
while it waits."""

from __future__ import annotations

import os
import queue
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import ipywidgets as widgets
import pytest
from IPython.core.interactiveshell import InteractiveShell

from qhpc_lab.client import Client, JobError
from qhpc_lab.jupyter import magics
from qhpc_lab.jupyter.widgets import JobPanel, TargetsPanel
from qhpc_lab.programs import Program
from tests.support.client_env import lab_env
from tests.support.daemons import Daemon, daemon
from tests.support.identities import ADMIN, OTHER, auth_header
from tests.support.polling import apoll_until
from tests.support.programs import pulser_sequence_json
from tests.support.transport import RecordingTransport

LONG = 8000
"""Shots that keep the test device busy for seconds (0.5 ms a shot)."""


@pytest.fixture(scope="module")
def scheduler(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    with daemon(tmp_path_factory.mktemp("scheduler")) as handle:
        yield handle


@pytest.fixture(scope="module")
def program() -> Program:
    return Program("pulser", pulser_sequence_json(), 20)


@pytest.fixture
def recorded() -> RecordingTransport:
    """What the ``lab`` client sends its scheduler."""
    return RecordingTransport()


@pytest.fixture
def lab(scheduler: Daemon, tmp_path: Path, recorded: RecordingTransport) -> Iterator[Client]:
    client = Client(environ={"HOME": str(tmp_path), **lab_env(scheduler.url)}, transport=recorded)
    yield client
    client.close()


def parts(widget: widgets.Widget) -> Iterator[widgets.Widget]:
    """The widget and everything inside it, as the frontend renders them."""
    yield widget
    for child in getattr(widget, "children", ()):
        yield from parts(child)


def shown(panel: widgets.Widget) -> str:
    """The panel's rendered HTML, every part of it."""
    return "\n".join(w.value for w in parts(panel) if isinstance(w, widgets.HTML))


def button(panel: widgets.Widget, icon: str) -> widgets.Button:
    (found,) = (w for w in parts(panel) if isinstance(w, widgets.Button) and w.icon == icon)
    return found


def progress(panel: widgets.Widget) -> widgets.IntProgress:
    (found,) = (w for w in parts(panel) if isinstance(w, widgets.IntProgress))
    return found


async def until_shown(panel: widgets.Widget, text: str, what: str) -> None:
    """Let the loop run until the panel shows ``text`` (a deadline only against hanging)."""

    async def check() -> bool:
        return text in shown(panel)

    await apoll_until(check, what)


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
    assert "DONE" in shown(panel) and button(panel, "stop").disabled
    assert progress(panel).value == progress(panel).max == 20
    assert "Result of job 1 on emulator" in shown(panel)
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
    await until_shown(first, "running", "the first job to run")
    await until_shown(second, "1st of 1 waiting", "k of n")
    await until_shown(second, "calibrated", "the device line")
    assert "QHPC-Test · ONLINE" in shown(second)

    async with httpx.AsyncClient(base_url=scheduler.url) as http:
        admin = auth_header(ADMIN, admin=True)
        (await http.post("/admin/calibrate", headers=admin)).raise_for_status()
    await until_shown(second, "CALIBRATING", "the calibration event")

    cancel = button(first, "stop")
    cancel.click()  # what the frontend's click runs, on this loop
    assert cancel.disabled
    with pytest.raises(JobError, match="CANCELED"):
        await first.wait()
    assert "CANCELED" in shown(first)
    result = await second.wait()  # moved up by the cancel, without an event of its own
    assert result.shots == 10 and "DONE" in shown(second)
    # why it waited, from its timeline: the first job's chunks and the calibration
    assert re.search(r"waited for \d+ production chunks?, calibration \(", shown(second))
    (calibration,) = result.calibrations
    assert shown(second).count(f"calibration #{calibration.id}") == 1  # said once, by the result
    assert f"{calibration.label} · queued" in shown(second)


@pytest.mark.anyio
async def test_another_users_submission_moves_my_panel_at_once_with_no_re_read(
    lab, program, scheduler, recorded
):
    """'Position k of n' follows the queue event: a second user's job that outranks mine
    (class test) moves me back, its cancellation forward again, each well before any refresh
    period would, and with no GET of /jobs or /device."""
    blocker = lab.submit(program, shots=LONG)
    mine = lab.submit(program, shots=10)
    panel = JobPanel(mine)
    panel.show()
    await until_shown(panel, "1st of 1 waiting", "k of n")
    await until_shown(panel, "calibrated", "the device line")
    recorded.clear()
    seconds: dict[str, float] = {}
    async with httpx.AsyncClient(base_url=scheduler.url, headers=auth_header(OTHER)) as other:
        sent = time.monotonic()
        answer = await other.post(
            "/jobs", json={"sequence": pulser_sequence_json(), "shots": LONG, "job_class": "test"}
        )
        answer.raise_for_status()
        await until_shown(panel, "2nd of 2 waiting", "moved back")
        seconds["submitted"] = time.monotonic() - sent
        sent = time.monotonic()
        (await other.post(f"/jobs/{answer.json()['id']}/cancel")).raise_for_status()
        await until_shown(panel, "1st of 1 waiting", "moved forward")
        seconds["canceled"] = time.monotonic() - sent
    assert all(s < 2.0 for s in seconds.values()), seconds  # the old refresh came every 10 s
    assert recorded.sent == [], recorded.sent  # no /device, no /jobs: the stream carried it
    mine.cancel()
    blocker.cancel()
    with pytest.raises(JobError):
        await panel.wait()


@pytest.mark.anyio
async def test_targets_panel_lists_and_refreshes_without_blocking(lab):
    panel = TargetsPanel(await lab.atargets(), lab)
    panel.show()
    assert "<code>lab</code>" in shown(panel) and "QHPC-Test" in shown(panel)
    assert panel.text().splitlines()[0].startswith("* lab")
    refresh = button(panel, "refresh")
    refresh.click()
    assert refresh.disabled and "probing…" in shown(panel)

    async def refreshed() -> bool:
        return not refresh.disabled

    await apoll_until(refreshed, "the refresh")
    assert "probing…" not in shown(panel) and "ONLINE" in shown(panel)


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
    home = str(tmp_path_factory.mktemp("home"))
    handle = Kernel({**os.environ, "HOME": home, **lab_env(scheduler.url)})
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

    kernel.execute("shots = 12")
    assert kernel.execute(CELL.format(shots="{shots}"))["stderr"] == ""
    assert kernel.execute("print(result.shots)")["stdout"] == "12\n", "{shots} is not expanded"


@pytest.mark.slow
def test_kernel_interrupt_stops_waiting_and_the_panel_goes_on(kernel):
    def interrupt_when_running(kind: str, content: dict) -> None:
        html = content.get("data", {}).get("state", {}).get("value")
        if kind == "comm_msg" and isinstance(html, str) and ">RUNNING<" in html:
            kernel.manager.interrupt_kernel()

    out = kernel.execute(CELL.format(shots=LONG), interrupt_when_running)
    assert "qpu: stopped waiting; job" in out["error"] and "goes on" in out["error"]
    status = kernel.execute("import qhpc_lab; print(qhpc_lab.job().status)")["stdout"]
    assert status.strip() == "RUNNING"  # a started job stays RUNNING until it ends
    kernel.execute("qhpc_lab.job().cancel()")


# -- a failing %%qpu cell in a real kernel: IPython's pointer, and the cell fails ----------
# (the kernel answers ``error`` and drops the cells queued after it, as Run All sends them)


def shown_error(kernel: Kernel, code: str) -> str:
    """The error output of ``code``'s cell, colours removed; "" if it had none."""
    return re.sub(r"\x1b\[[0-9;]*m", "", kernel.execute(code)["error"])


def run_all(kernel: Kernel, *cells: str) -> list[str]:
    """Send ``cells`` at once, as "Run All" does; the status of each reply."""
    sent = [kernel.client.execute(cell) for cell in cells]
    replies: dict[str, str] = {}
    for _ in range(100):  # bounded: replies to earlier requests may come first
        if len(replies) == len(sent):
            break
        reply = kernel.client.get_shell_msg(timeout=120)
        if reply["parent_header"].get("msg_id") in sent:
            replies[reply["parent_header"]["msg_id"]] = reply["content"]["status"]
    return [replies.get(msg_id, "no reply") for msg_id in sent]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("cell", "pointer", "error"),
    [
        ("%%qpu\nx = 1\ny = (\n", ["Cell In[{n}], line 3"], "SyntaxError"),
        (
            CELL.format(shots=5).replace("\nsequence\n", '\nsequence.add(1, "g")\nsequence\n'),
            ["Cell In[{n}], line 8\n", '----> 8 sequence.add(1, "g")\n'],
            "TypeError: 'pulse' must be of type Pulse",
        ),
    ],
)
def test_errors_in_a_cells_code_point_into_the_cell_not_into_the_magic(
    kernel, cell, pointer, error
):
    following = int(kernel.execute("print(get_ipython().execution_count)")["stdout"])
    shown = shown_error(kernel, cell)
    assert all(line.format(n=following) in shown for line in pointer) and error in shown, shown
    for internal in ("qhpc_lab", "qpu_async", "interactiveshell.py", "magics_manager"):
        assert internal not in shown, shown


@pytest.mark.slow
def test_a_refused_cell_fails_and_run_all_stops_there(kernel, scheduler):
    """In maintenance the scheduler refuses the job (503): the cell's error is the reason in
    one line, and the next cell, which reads the cell's -o variable, never runs."""
    admin = auth_header(ADMIN, admin=True)
    closed = {"is_accessible": False, "message": "laser swap until 14:00"}
    httpx.post(f"{scheduler.url}/accessible", json=closed, headers=admin).raise_for_status()
    try:
        shown = shown_error(kernel, CELL.format(shots=5))
        statuses = run_all(kernel, CELL.format(shots=5), "print(result)")
    finally:
        opened = {"is_accessible": True}
        httpx.post(f"{scheduler.url}/accessible", json=opened, headers=admin).raise_for_status()
    assert shown.startswith("qpu: ") and "laser swap until 14:00" in shown, shown
    assert "\n" not in shown.strip(), shown
    assert statuses == ["error", "aborted"]
    assert run_all(kernel, CELL.format(shots=5), "print(result.shots)") == ["ok", "ok"]
