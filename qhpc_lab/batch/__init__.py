"""The batch-system seam: hand a script to the site's batch system, follow it, cancel it.

The cluster emulator target (a large emulation as a batch job, ``qhpc emulate``) and notebook
runs (``qhpc run NOTEBOOK``) submit through this seam and nothing else; it has a Slurm side
(``sbatch``/``squeue``/``scontrol``/``scancel``) and a Grid Engine side
(``qsub``/``qstat``/``qacct``/``qdel``). Each side runs the batch system's own commands with
the environment it is given (``SLURM_CONF``, ``SGE_ROOT``, ...), so a Lab on a login node and
a kernel inside an allocation reach the same cluster. Calls block (they run commands): async
callers use ``asyncio.to_thread``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping

from qhpc_lab.batch._gridengine import GridEngine
from qhpc_lab.batch._ledger import DEFAULT_BATCH_DIR, BatchEntry, BatchKind, BatchLedger
from qhpc_lab.batch._model import (
    FINAL_BATCH_STATES,
    BatchError,
    BatchJob,
    BatchRequest,
    BatchState,
    BatchSystem,
)
from qhpc_lab.batch._slurm import Slurm, slurm_duration_s

__all__ = [
    "BATCH_SYSTEMS",
    "DEFAULT_BATCH_DIR",
    "FINAL_BATCH_STATES",
    "BatchEntry",
    "BatchError",
    "BatchJob",
    "BatchKind",
    "BatchLedger",
    "BatchRequest",
    "BatchState",
    "BatchSystem",
    "GridEngine",
    "Slurm",
    "batch_system",
    "slurm_duration_s",
]

BATCH_SYSTEMS = ("slurm", "gridengine")


def batch_system(name: str | None = None, environ: Mapping[str, str] | None = None) -> BatchSystem:
    """The batch system ``name`` (``slurm`` or ``gridengine``), else the one in reach: inside a
    batch job, the one running it; else the first whose submit command is on ``PATH`` (sbatch,
    then qsub). BatchError, naming what was looked for, when there is none."""
    environ = dict(os.environ if environ is None else environ)
    sides: dict[str, type[BatchSystem]] = {"slurm": Slurm, "gridengine": GridEngine}
    if name is not None:
        if name not in sides:
            raise BatchError(f"unknown batch system {name!r}; use {' or '.join(BATCH_SYSTEMS)}")
        return sides[name](environ)
    if "SLURM_JOB_ID" in environ:
        return Slurm(environ)
    if "JOB_ID" in environ and "SGE_ROOT" in environ:
        return GridEngine(environ)
    path = environ.get("PATH", os.defpath)
    for side in sides.values():
        if shutil.which(side.SUBMIT, path=path):
            return side(environ)
    raise BatchError(
        "no batch system in reach: no Slurm or Grid Engine job here, neither sbatch nor qsub on "
        "PATH (name one with --scheduler slurm|gridengine)"
    )
