"""Notebooks as batch jobs (``qhpc run NOTEBOOK``): see docs/notebook-runs.md.

A run submits the notebook through the batch-system seam (:mod:`qhpc_lab.batch`) as a job that
holds a QPU share (the site's QPU hooks open a scheduler session for it), executes it there
with papermill in the notebook's own kernel, the run's class applied to every QPU job that
names none, and writes the executed notebook beside the original with each QPU result's
provenance. The command line and the Lab's "Run as batch job" both call this API.
"""

from qhpc_lab.runs._api import (
    NotebookRun,
    RunRefused,
    RunRequest,
    cancel,
    check,
    parameters_of,
    run,
    runs,
    submit,
)
from qhpc_lab.runs._settings import RunSettings

__all__ = [
    "NotebookRun",
    "RunRefused",
    "RunRequest",
    "RunSettings",
    "cancel",
    "check",
    "parameters_of",
    "run",
    "runs",
    "submit",
]
