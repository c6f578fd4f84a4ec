"""The files of a run's folder that both sides read: the submitter and the batch job."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SPEC = "run.json"
"""What to run: written by ``submit`` before the batch job is submitted."""
OUTCOME = "outcome.json"
"""How it went: written by the runner when the notebook has run (or failed)."""
JOURNAL = "qpu-jobs.json"
"""The kernel's QPU jobs and versions (:mod:`qhpc_lab.runs.kernel`)."""


def read_json(path: Path) -> dict[str, Any]:
    """A JSON file's object; {} while it is missing or half-written."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
