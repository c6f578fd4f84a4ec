"""Batch runs seeded into a user's ledger for the Lab's tests: what ``qhpc_lab.runs`` leaves
behind once a run's batch job has ended (the entry with its final state, the executed notebook,
the outcome), without a batch system to run it."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import nbformat

from qhpc_lab.batch import BatchEntry, BatchLedger

OUTCOME = "outcome.json"
"""Where a run's executor writes its failure (``qhpc_lab.runs``' own file)."""
JOURNAL = "qpu-jobs.json"
"""Where a run's kernel records the QPU jobs it submitted (``qhpc_lab.runs``' own file)."""


def seed_notebook_run(
    ledger: BatchLedger,
    notebook: Path,
    *,
    state: str,
    job_id: str,
    ago_s: float,
    failure: str | None = None,
    parameters: dict[str, Any] | None = None,
) -> BatchEntry:
    """A notebook run whose batch job ended in ``state`` on ``localhost``; its executed
    notebook (the original's cells, the failing one with its error) beside the original."""
    folder = ledger.new_folder("notebook")
    executed = notebook.with_name(f"{notebook.stem}.run-{folder.name[-6:]}.ipynb")
    content = nbformat.read(notebook, as_version=4)
    if failure:
        cell = next(c for c in reversed(content.cells) if c.cell_type == "code")
        name, _, value = failure.partition(": ")[2].partition(": ")
        cell.outputs = [
            nbformat.v4.new_output(
                "error", ename=name, evalue=value, traceback=[f"{name}: {value}"]
            )
        ]
    nbformat.write(content, executed)
    (folder / OUTCOME).write_text(json.dumps({"failure": failure}))
    (folder / JOURNAL).write_text(json.dumps({"qpu_jobs": []}))
    ended = datetime.now(UTC) - timedelta(seconds=ago_s)
    batch = {
        "id": job_id,
        "system": "slurm",
        "state": state,
        "node": "localhost",
        "exit_code": 1 if failure else 0,
        "started_at": (ended - timedelta(seconds=20)).isoformat(),
        "finished_at": ended.isoformat(),
    }
    return ledger.add(
        BatchEntry(
            id=folder.name,
            kind="notebook",
            title=str(notebook),
            system="slurm",
            job_id=job_id,
            submitted_at=ended - timedelta(seconds=30),
            folder=folder,
            files={
                "notebook": str(notebook),
                "executed": str(executed),
                "output": str(folder / "output.log"),
            },
            details={
                "parameters": parameters or {},
                "qpus": 1,
                "job_class": "production",
                "batch": batch,
            },
        )
    )
