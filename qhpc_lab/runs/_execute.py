"""The batch job's program: execute the notebook with papermill, then say how it went.

``python -m qhpc_lab.runs._execute FOLDER`` runs on the compute node, in the run's folder
(``run.json`` says what to run). The kernel gets the run's class and the batch-run marker
(:mod:`qhpc_lab.wire.batchrun`) and journals its QPU jobs (:mod:`qhpc_lab.runs.kernel`); the
executed notebook, written after every cell, gets ``metadata.qhpc`` at the end; ``outcome.json``
holds the failure, if any. A failing cell makes the batch job fail (exit status 1).
"""

from __future__ import annotations

import json
import os
import socket
import sys
from datetime import UTC, datetime
from pathlib import Path

import nbformat

from qhpc_lab.runs import kernel
from qhpc_lab.runs._files import JOURNAL, OUTCOME, SPEC, read_json
from qhpc_lab.wire import batchrun
from qhpc_lab.wire.times import iso_time

INPUT = "input.ipynb"
RUN_CELL_TAG = "qhpc-run"
"""The first cell a run adds: it loads the journal extension (kept, so the reader sees it)."""
NOT_USERS = frozenset({RUN_CELL_TAG, "injected-parameters", "papermill-error-cell-tag"})
"""Cells in the executed notebook that are not the user's (cell numbers skip them)."""


def run_cell(run_id: str, job_class: str) -> nbformat.NotebookNode:
    source = (
        f"# Added by qhpc run: batch run {run_id}, QPU jobs of class {job_class!r} unless a\n"
        "# cell names another; each job's provenance is printed and kept in metadata.qhpc.\n"
        "%load_ext qhpc_lab.runs.kernel"
    )
    cell = nbformat.v4.new_code_cell(source)
    cell.metadata["tags"] = [RUN_CELL_TAG]
    return cell


def failing_cell(notebook: nbformat.NotebookNode) -> str | None:
    """``cell 4: ZeroDivisionError: division by zero``: the first of the user's cells (counted
    from 1 as the notebook holds them) that raised, and what; None when none did."""
    number = 0
    for cell in notebook.cells:
        if NOT_USERS & set(cell.get("metadata", {}).get("tags", [])):
            continue
        number += 1
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                value = " ".join(str(output.get("evalue", "")).split())
                return f"cell {number}: {output.get('ename')}: {value}".rstrip(": ")
        if cell.get("metadata", {}).get("papermill", {}).get("exception"):
            return f"cell {number}: the kernel stopped while running it"
    return None


def execute(folder: Path) -> int:
    """Run the notebook of the run in ``folder``; 0 when every cell ran, else 1."""
    spec = json.loads((folder / SPEC).read_text())
    import papermill

    started = datetime.now(UTC)
    os.environ[batchrun.JOB_CLASS] = spec["job_class"]
    os.environ[batchrun.BATCH_RUN] = spec["id"]
    os.environ[kernel.JOURNAL] = str(folder / JOURNAL)
    source = nbformat.read(spec["notebook"], as_version=4)
    source.cells.insert(0, run_cell(spec["id"], spec["job_class"]))
    nbformat.write(source, folder / INPUT)
    executed = Path(spec["executed"])
    failure = None
    try:
        papermill.execute_notebook(
            str(folder / INPUT),
            str(executed),
            parameters=spec["parameters"],
            kernel_name=spec["kernel"],
            cwd=str(Path(spec["notebook"]).parent),
            progress_bar=False,
            log_output=True,
        )
    except papermill.PapermillExecutionError:
        pass  # the executed notebook shows it; failing_cell reads it from there
    except Exception as err:  # the kernel did not start, died, or papermill could not write
        failure = f"the notebook did not run: {type(err).__name__}: {err}"
    result = nbformat.read(executed, as_version=4) if executed.is_file() else None
    if result is not None:
        failure = failing_cell(result) or failure
    journal = read_json(folder / JOURNAL)
    finished = datetime.now(UTC)
    facts = {
        "run": spec["id"],
        "batch_job": os.environ.get("SLURM_JOB_ID") or os.environ.get("JOB_ID"),
        "node": socket.gethostname(),
        "job_class": spec["job_class"],
        "parameters": spec["parameters"],
        "qpus": spec["qpus"],
        "kernel": spec["kernel"],
        "started_at": iso_time(started),
        "finished_at": iso_time(finished),
        "failure": failure,
        "versions": journal.get("versions") or kernel.versions(),
        "qpu_jobs": journal.get("qpu_jobs", []),
    }
    if result is not None:
        result.metadata["qhpc"] = facts
        partial = executed.with_name(f".{executed.name}.partial")
        nbformat.write(result, partial)
        partial.replace(executed)
    (folder / OUTCOME).write_text(
        json.dumps({"failure": failure, "finished_at": iso_time(finished)}, indent=1)
    )
    print(f"qhpc run {spec['id']}: {failure or 'every cell ran'}", flush=True)
    return 1 if failure else 0


if __name__ == "__main__":
    sys.exit(execute(Path(sys.argv[1])))
