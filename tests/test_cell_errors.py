"""What a failing ``%%qpu`` cell shows in a real kernel, and that it fails the cell: the
kernel answers ``error`` and drops the cells queued after it, as "Run All" sends them."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import ADMIN, Daemon, auth_header, daemon
from tests.test_widgets import CELL, Kernel, lab_env


@pytest.fixture(scope="module")
def scheduler(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    with daemon(tmp_path_factory.mktemp("scheduler")) as handle:
        yield handle


@pytest.fixture(scope="module")
def kernel(scheduler: Daemon, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kernel]:
    handle = Kernel({**os.environ, **lab_env(scheduler, tmp_path_factory.mktemp("home"))})
    try:
        assert handle.execute("%load_ext qhpc_lab")["stderr"] == ""
        yield handle
    finally:
        handle.close()


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
