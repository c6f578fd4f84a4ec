"""The seam's types: the request, the job as the batch system describes it, the interface."""

from __future__ import annotations

import abc
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import ClassVar

COMMAND_TIMEOUT_S = 30
"""How long a batch-system command may take (a busy controller answers in seconds)."""


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
    def job(self, job_id: str, workdir: Path | None = None) -> BatchJob:
        """The job's state now, also after it ended: from the batch system while it remembers
        the job, then from what the job left in ``workdir`` (its exit status, a cancellation);
        BatchError when neither knows the job."""

    @abc.abstractmethod
    def cancel(self, job_id: str, workdir: Path | None = None) -> None:
        """Cancel the job (a pending one never starts; a running one is signalled); the
        cancellation is noted in ``workdir`` for when the batch system has forgotten the job."""

    def _run(self, command: list[str], what: str, stdin: str | None = None) -> str:
        """``command``'s output; BatchError with the batch system's own words when it fails."""
        try:
            done = subprocess.run(
                command,
                input=stdin,
                capture_output=True,
                text=True,
                timeout=COMMAND_TIMEOUT_S,
                env=self.environ,
            )
        except FileNotFoundError:
            raise BatchError(f"{command[0]} not found: is {self.name} installed here?") from None
        except subprocess.TimeoutExpired:
            raise BatchError(
                f"{what}: {command[0]} gave no answer in {COMMAND_TIMEOUT_S} s"
            ) from None
        if done.returncode:
            words = " ".join((done.stderr or done.stdout).split())[:300]
            raise BatchError(f"{what}: {words or f'exit status {done.returncode}'}")
        return done.stdout
