"""The server extension's batch routes: the user's batch runs for the sidebar, the "Run as batch
job" dialog's parameters and submission, Cancel; what a browser sends is checked.

No scheduler and no batch system: the ledger is seeded with runs whose final state the ledger
records (as ``qhpc_lab.runs`` keeps it once the batch job has ended), and every refusal tested
comes before a batch system is asked. Tests are plain functions driving pytest-jupyter's loop
(see tests/test_server_extension.py).
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pytest_jupyter.jupyter_server import *  # noqa: F403 (fixtures for this module only)
from tornado.httpclient import HTTPClientError

from qhpc_lab.batch import BatchEntry, BatchLedger
from tests.support.notebook_runs import write_notebook

Run = Callable[[Coroutine[Any, Any, Any]], Any]


@pytest.fixture
def run(jp_asyncio_loop: asyncio.AbstractEventLoop) -> Run:
    return jp_asyncio_loop.run_until_complete


@pytest.fixture
def ledger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> BatchLedger:
    """The user's batch ledger, and a targets file naming no QPU (the emulator only)."""
    (tmp_path / "targets.toml").write_text("")
    monkeypatch.setenv("QHPC_TARGETS_FILE", str(tmp_path / "targets.toml"))
    monkeypatch.setenv("QHPC_BATCH_DIR", str(tmp_path / "batch"))
    return BatchLedger(tmp_path / "batch")


@pytest.fixture
def jp_server_config(ledger: BatchLedger) -> dict[str, Any]:
    return {"ServerApp": {"jpserver_extensions": {"qhpc_lab.jupyter.server": True}}}


@pytest.fixture
def notebook(jp_root_dir: Path, jp_data_dir: Path) -> Path:
    """A notebook with a parameters cell, in the kernel the server finds installed."""
    spec = jp_data_dir / "kernels" / "python3-qpu" / "kernel.json"
    spec.parent.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    spec.write_text(json.dumps({"argv": argv, "display_name": "QPU", "language": "python"}))
    (jp_root_dir / "study").mkdir()
    return write_notebook(jp_root_dir / "study" / "chain.ipynb")


def api(run: Run, jp_fetch: Any, *path: str, **kwargs: Any) -> Any:
    return json.loads(run(jp_fetch("qhpc", "api", *path, **kwargs)).body)


def refused(run: Run, jp_fetch: Any, *path: str, **kwargs: Any) -> tuple[int, str]:
    """The status and message of a request the server refuses."""
    with pytest.raises(HTTPClientError) as error:
        run(jp_fetch("qhpc", "api", *path, **kwargs))
    return error.value.code, json.loads(error.value.response.body)["message"]


def seed_run(
    ledger: BatchLedger, notebook: Path, executed: Path, ago_s: float, batch: dict[str, Any]
) -> BatchEntry:
    """A notebook run whose batch job has ended, as its entry records it."""
    folder = ledger.new_folder("notebook")
    submitted = datetime.now(UTC) - timedelta(seconds=ago_s)
    return ledger.add(
        BatchEntry(
            id=folder.name,
            kind="notebook",
            title=str(notebook),
            system="slurm",
            job_id=str(4000 + int(ago_s)),
            submitted_at=submitted,
            folder=folder,
            files={
                "notebook": str(notebook),
                "executed": str(executed),
                "output": str(folder / "output.log"),
            },
            details={
                "parameters": {"omega": 3.5},
                "qpus": 1,
                "job_class": "production",
                "batch": {"id": str(4000 + int(ago_s)), "system": "slurm", **batch},
            },
        )
    )


def test_batch_runs_are_listed_newest_first_with_their_state(
    run: Run, jp_fetch: Any, ledger: BatchLedger, notebook: Path, tmp_path: Path
) -> None:
    executed = notebook.with_name("chain.run-1.ipynb")
    executed.write_text(notebook.read_text())
    done = seed_run(
        ledger, notebook, executed, 60, {"state": "COMPLETED", "node": "node01", "exit_code": 0}
    )
    timed_out = seed_run(
        ledger,
        notebook,
        notebook.with_name("chain.run-2.ipynb"),
        600,
        {"state": "FAILED", "node": "node01", "exit_code": 1, "limit": "time limit 0:01:00"},
    )
    elsewhere = tmp_path / "elsewhere" / "other.ipynb"
    outside = seed_run(ledger, elsewhere, elsewhere, 3600, {"state": "CANCELLED"})

    folder = ledger.new_folder("emulation")
    emulation = ledger.add(
        BatchEntry(
            id=folder.name,
            kind="emulation",
            title="chain-24",
            system="slurm",
            job_id="77",
            submitted_at=datetime.now(UTC) - timedelta(seconds=7200),
            folder=folder,
            files={"program": str(folder / "program.json"), "result": str(folder / "result.json")},
            details={"engine": "emu-mps"},
        )
    )

    entries = api(run, jp_fetch, "batch")["entries"]
    assert [e["id"] for e in entries] == [done.id, timed_out.id, outside.id, emulation.id]
    first, second, third, fourth = entries
    assert first["kind"] == "notebook" and first["finished"] is True
    assert first["batch"]["state"] == "COMPLETED" and first["batch"]["node"] == "node01"
    assert first["notebook"] == "study/chain.ipynb"
    assert first["executed"] == "study/chain.run-1.ipynb"  # what Lab opens
    assert first["parameters"] == {"omega": 3.5} and first["job_class"] == "production"
    assert first["failure"] is None and first["qpu_jobs"] == []
    assert second["batch"]["state"] == "FAILED"
    assert second["executed"] is None  # never written
    assert "time limit 0:01:00" in second["failure"]
    assert third["notebook"] is None and third["executed"] is None  # outside the root
    assert third["batch"]["state"] == "CANCELLED"
    # No Slurm controller answers here: the entry says why its state is unknown, not a 500.
    assert fourth["kind"] == "emulation" and fourth["engine"] == "emu-mps"
    assert fourth["batch"] is None and fourth["finished"] is False
    assert fourth["error"].startswith("squeue")


def test_a_run_whose_batch_system_cannot_answer_is_unknown_not_failed(
    run: Run, jp_fetch: Any, ledger: BatchLedger, notebook: Path
) -> None:
    """An outage says nothing of the run: no FAILED, no "run ended" in the sidebar."""
    folder = ledger.new_folder("notebook")
    ledger.add(
        BatchEntry(
            id=folder.name,
            kind="notebook",
            title=str(notebook),
            system="slurm",
            job_id="4711",
            submitted_at=datetime.now(UTC),
            folder=folder,
            files={"notebook": str(notebook), "output": str(folder / "output.log")},
        )
    )
    [entry] = api(run, jp_fetch, "batch")["entries"]
    assert entry["batch"] is None and entry["finished"] is False
    assert entry["error"].startswith(f"cannot read the state of run {folder.name}: ")


def test_a_run_is_checked_before_anything_is_submitted(
    run: Run, jp_fetch: Any, ledger: BatchLedger, notebook: Path
) -> None:
    defaults = api(run, jp_fetch, "batch", "parameters", params={"path": "study/chain.ipynb"})
    assert defaults["parameters"] == {"omega": 2.0, "label": "dev"}

    def submit(form: dict[str, Any] | bytes) -> tuple[int, str]:
        body = form if isinstance(form, bytes) else json.dumps(form).encode()
        return refused(run, jp_fetch, "batch", method="POST", body=body)

    path = "study/chain.ipynb"
    status, message = submit({"path": path, "parameters": {"omeg": 5}})
    assert status == 422
    assert message == "no parameter 'omeg' in chain.ipynb's parameters cell (it has omega, label)"
    status, message = submit({"path": path, "job_class": "urgent"})
    assert status == 422 and message.startswith("no job class 'urgent'; use one of")
    assert submit({"path": path, "qpus": "all"})[0] == 400
    assert submit({"path": path, "qpus": 1, "shots": 5}) == (
        400,
        "shots: Extra inputs are not permitted",
    )
    assert submit(b"{not json")[0] == 400
    write_notebook(notebook.with_name("elsewhere.ipynb"), kernel="nowhere")
    status, message = submit({"path": "study/elsewhere.ipynb"})
    assert status == 422
    assert "runs in kernel 'nowhere', which is not installed where the batch job runs" in message
    assert submit({"path": "study/missing.ipynb"}) == (404, "no notebook at study/missing.ipynb")
    assert ledger.entries() == []
    assert not ledger.directory.exists() or not any(ledger.directory.iterdir())


def test_ids_and_paths_from_the_browser_are_checked(
    run: Run, jp_fetch: Any, ledger: BatchLedger, notebook: Path, jp_root_dir: Path, tmp_path: Path
) -> None:
    for bad in ("..", "a%2Fb", "%2E%2E", ".hidden", "a%00b"):
        status, _ = refused(run, jp_fetch, "batch", bad, "cancel", method="POST", body=b"")
        assert status == 400, bad
    status, message = refused(
        run,
        jp_fetch,
        "batch",
        "notebook-20261207T000000Z-abcdef",
        "cancel",
        method="POST",
        body=b"",
    )
    assert status == 404 and message.startswith("no batch run notebook-20261207T000000Z-abcdef")

    secret = tmp_path / "secret.ipynb"
    secret.write_text(notebook.read_text())
    (jp_root_dir / "link.ipynb").symlink_to(secret)
    for path in ("../secret.ipynb", str(secret), "link.ipynb", "study/../../secret.ipynb"):
        status, message = refused(run, jp_fetch, "batch", "parameters", params={"path": path})
        assert status == 403, path
        assert message.endswith("is outside the Jupyter root; runs start from there")
        status, _ = refused(
            run, jp_fetch, "batch", method="POST", body=json.dumps({"path": path}).encode()
        )
        assert status == 403, path
    (jp_root_dir / "notes.txt").write_text("")
    assert refused(run, jp_fetch, "batch", "parameters", params={"path": "notes.txt"})[0] == 400
    assert refused(run, jp_fetch, "batch", "parameters", params={"path": ""})[0] == 400
    assert ledger.entries() == []

    routes = [("GET", "batch"), ("POST", "batch"), ("GET", "batch/parameters"),
              ("POST", "batch/x/cancel")]  # fmt: skip
    for method, route in routes:
        with pytest.raises(HTTPClientError) as unauthenticated:
            run(
                jp_fetch(
                    "qhpc", "api", route, method=method, body=b"" if method == "POST" else None,
                    headers={"Authorization": "token not-the-token"},
                )
            )  # fmt: skip
        assert unauthenticated.value.code in (401, 403), route
