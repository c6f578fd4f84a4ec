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

import abc
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import ClassVar

from qhpc_lab.batch._ledger import DEFAULT_BATCH_DIR, BatchEntry, BatchKind, BatchLedger

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
    "batch_system",
]


class BatchError(Exception):
    """The batch system could not be reached or refused a request; one line for the user."""


class BatchState(StrEnum):
    """Where a batch job is, in words common to both batch systems."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    """Ended with a non-zero exit status or was killed at a limit (:attr:`BatchJob.limit`)."""
    CANCELLED = "CANCELLED"


FINAL_BATCH_STATES = frozenset({BatchState.COMPLETED, BatchState.FAILED, BatchState.CANCELLED})


@dataclass(frozen=True)
class BatchRequest:
    """What to run and with which resources; the site's defaults fill what a user leaves out."""

    command: tuple[str, ...]
    """The program and its arguments, run on the compute node in ``workdir``."""
    name: str
    workdir: Path
    output: Path
    """The job's stdout and stderr, together."""
    time_limit_s: int | None = None
    partition: str | None = None
    """Slurm's partition, Grid Engine's queue."""
    account: str | None = None
    """Slurm's account, Grid Engine's project."""
    cpus: int | None = None
    memory_mb: int | None = None
    gpus: int | None = None
    licences: Mapping[str, int] = field(default_factory=dict)
    """Counted resources the job holds, e.g. ``{"qpu": 1}``: ``-L qpu:1`` in Slurm, ``-l qpu=1``
    in Grid Engine (the QPU hooks open a scheduler session for the job's share)."""
    environment: Mapping[str, str] = field(default_factory=dict)
    """Variables set in the job, beside those the batch system sets."""
    extra: tuple[str, ...] = ()
    """Further options the site configures, passed to the submit command as they are."""


@dataclass(frozen=True)
class BatchJob:
    """A batch job as the batch system last described it."""

    id: str
    system: str
    """``slurm`` or ``gridengine``."""
    state: BatchState
    reason: str | None = None
    """Why a pending job waits (Slurm's reason: ``Priority``, ``Resources``, ...; Grid Engine's
    scheduling message) or why a job failed, in the batch system's words."""
    start_estimate: datetime | None = None
    """When the batch system expects a pending job to start, where it says."""
    node: str | None = None
    gpus: str | None = None
    """The GPUs it holds on its node (``gpu:0,1``), where any."""
    submitted_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    exit_code: int | None = None
    limit: str | None = None
    """The limit that ended a failed job (``time limit 0:01:00``, ``memory limit 512 MB``)."""

    @property
    def final(self) -> bool:
        return self.state in FINAL_BATCH_STATES


class BatchSystem(abc.ABC):
    """One batch system's commands; :func:`batch_system` finds the one in reach."""

    name: ClassVar[str]
    SUBMIT: ClassVar[str]
    """The submit command, by which the batch system is found on ``PATH``."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = dict(environ)
        """The environment its commands run with (the batch system's own variables)."""

    @abc.abstractmethod
    def submit(self, request: BatchRequest) -> str:
        """Submit ``request`` and return the batch job's id; BatchError with the batch
        system's own message when it refuses (an unknown partition, a limit)."""

    @abc.abstractmethod
    def job(self, job_id: str) -> BatchJob:
        """The job's state now, also after it ended (from accounting where the queue has
        forgotten it); BatchError when the batch system knows no such job."""

    @abc.abstractmethod
    def cancel(self, job_id: str) -> None:
        """Cancel the job (a pending one never starts; a running one is signalled)."""


BATCH_SYSTEMS = ("slurm", "gridengine")


def batch_system(name: str | None = None, environ: Mapping[str, str] | None = None) -> BatchSystem:
    """The batch system ``name`` (``slurm`` or ``gridengine``), else the one in reach: inside a
    batch job, the one running it; else the first whose submit command is on ``PATH`` (sbatch,
    then qsub). BatchError, naming what was looked for, when there is none."""
    from qhpc_lab.batch._gridengine import GridEngine
    from qhpc_lab.batch._slurm import Slurm

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
