"""Inside a notebook run's kernel: record each QPU job's provenance as the notebook runs.

The run's first cell (added by ``qhpc run``) loads this extension. After every cell, and every
few seconds while a ``%%qpu`` cell awaits its job, it writes the jobs the process's client has
submitted (``%%qpu`` cells, ``qhpc_lab.submit``) to the run's journal, which ``qhpc runs`` and
the Lab read and the runner copies into the executed notebook's metadata; when a job has
ended, the cell that waited for it prints its provenance line.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.metadata
import json
import os
import platform
from pathlib import Path
from typing import Any

from qhpc_lab.client import Job, default_client
from qhpc_lab.wire import batchrun
from qhpc_lab.wire.times import iso_time

JOURNAL = "QHPC_RUN_JOURNAL"
"""The journal's path, set by the runner for the kernel."""
JOURNAL_EVERY_S = 2.0
PACKAGES = (
    "qhpc-lab",
    "pulser-core",
    "pulser-simulation",
    "emu-sv",
    "emu-mps",
    "qiskit",
    "qiskit-aer",
    "qadence",
    "cudaq",
    "qrmi",
    "numpy",
    "ipykernel",
    "papermill",
)
"""The packages whose versions a run records (those installed in the kernel's environment)."""


def versions() -> dict[str, str]:
    """Python's and :data:`PACKAGES`' versions in this environment."""
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def provenance(job: Job) -> dict[str, Any]:
    """What makes the job's result traceable: where and how it ran, under which calibrations,
    which program (its SHA-256, of the program as sent)."""
    state = job.state
    program = job.program
    return {
        "id": job.id,
        "target": job.target,
        "status": state.status,
        "job_class": job.job_class,
        "shots": state.shots,
        "program_sha256": (
            hashlib.sha256(program.to_json().encode()).hexdigest() if program else None
        ),
        "program_format": program.format if program else None,
        "calibrations": [
            {
                "id": c.id,
                "calibrated_at": iso_time(c.calibrated_at),
                "shots_from": c.shots_from,
                "shots_to": c.shots_to,
                "age_s_first": c.age_s_first,
                "age_s_last": c.age_s_last,
            }
            for c in state.calibrations
        ],
        "calibration_age_s": state.calibration_age_s,
        "created_at": iso_time(state.created_at),
        "started_at": iso_time(state.started_at),
        "finished_at": iso_time(state.finished_at),
        "error": state.error,
    }


def line(record: dict[str, Any]) -> str:
    """A job's provenance in one line, as the executed notebook shows it under its cell."""
    parts = [f"{record['status']}", f"class {record['job_class'] or 'default'}"]
    if record["program_sha256"]:
        parts.append(f"program sha256:{record['program_sha256'][:16]}")
    parts += [
        f"shots {c['shots_from']}–{c['shots_to']} under calibration #{c['id']} "
        f"(calibrated {c['calibrated_at']})"
        for c in record["calibrations"]
    ]
    return f"qhpc provenance: job {record['id']} on {record['target']}: {', '.join(parts)}"


class Journal:
    """The run's journal file: this kernel's QPU jobs and the environment's versions."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.versions = versions()
        self.written: str | None = None
        self.told: set[str] = set()
        """Jobs whose provenance line a cell has printed."""

    def write(self) -> list[dict[str, Any]]:
        """Write the jobs if anything changed (atomically); return their records."""
        records = [provenance(job) for job in default_client().jobs()]
        text = json.dumps(
            {
                "run": os.environ.get(batchrun.BATCH_RUN),
                "versions": self.versions,
                "qpu_jobs": records,
            },
            indent=1,
        )
        if text != self.written:
            partial = self.path.with_suffix(".partial")
            partial.write_text(text)
            partial.replace(self.path)
            self.written = text
        return records

    def after_cell(self, *_: object) -> None:
        """Write the journal; print the provenance of each job that has ended since."""
        for record in self.write():
            if record["finished_at"] and record["id"] not in self.told:
                self.told.add(record["id"])
                print(line(record), flush=True)

    async def follow(self) -> None:
        """Write the journal every :data:`JOURNAL_EVERY_S` while the kernel lives (a
        ``%%qpu`` cell awaits on this loop, so its job shows while it waits)."""
        while True:
            await asyncio.sleep(JOURNAL_EVERY_S)
            self.write()


def load_ipython_extension(shell: Any) -> None:
    """``%load_ext qhpc_lab.runs.kernel``: journal this kernel's QPU jobs (module doc)."""
    path = os.environ.get(JOURNAL)
    if not path:
        print("qhpc: not in a notebook run ($QHPC_RUN_JOURNAL unset): nothing recorded")
        return
    journal = Journal(Path(path))
    journal.write()
    shell.events.register("post_run_cell", journal.after_cell)
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return
    _following.add(loop.create_task(journal.follow()))


_following: set[asyncio.Task[None]] = set()
"""The journal's writer task (a reference, so that it is not collected)."""
