"""The Slurm side of the batch seam: ``sbatch``, ``squeue``, ``scancel``.

``squeue --states=all`` answers for a job until Slurm forgets it (``MinJobAge``, 300 s by
default); it is asked only for fields Slurm writes itself (state, reason, times, nodes, exit
code), never a job's name or comment, so nothing a user typed reaches the parser. Later the
job's exit status file answers (:func:`qhpc_lab.batch.left_behind`).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import ClassVar

from qhpc_lab.batch._model import (
    BatchError,
    BatchJob,
    BatchRequest,
    BatchState,
    BatchSystem,
)
from qhpc_lab.batch._script import job_script, left_behind, note_cancelled
from qhpc_lab.vocabulary import format_duration

FIELDS = (
    "JobID",
    "State",
    "Reason",
    "SubmitTime",
    "StartTime",
    "EndTime",
    "NodeList",
    "TimeLimit",
    "exit_code",
    "tres-alloc",
    "MinMemory",
)
STATES = {
    "PENDING": BatchState.PENDING,
    "CONFIGURING": BatchState.PENDING,
    "REQUEUED": BatchState.PENDING,
    "REQUEUE_HOLD": BatchState.PENDING,
    "REQUEUE_FED": BatchState.PENDING,
    "RESV_DEL_HOLD": BatchState.PENDING,
    "RUNNING": BatchState.RUNNING,
    "COMPLETING": BatchState.RUNNING,
    "SUSPENDED": BatchState.RUNNING,
    "STOPPED": BatchState.RUNNING,
    "SIGNALING": BatchState.RUNNING,
    "STAGE_OUT": BatchState.RUNNING,
    "RESIZING": BatchState.RUNNING,
    "COMPLETED": BatchState.COMPLETED,
    "CANCELLED": BatchState.CANCELLED,
}
"""Slurm's job states → ours; every other (FAILED, TIMEOUT, OUT_OF_MEMORY, NODE_FAIL,
DEADLINE, BOOT_FAIL, PREEMPTED, ...) is FAILED."""
FORGOTTEN = "Invalid job id specified"
"""squeue's words for a job that slurmctld no longer holds (past ``MinJobAge``)."""
LIMITS = {"TIMEOUT": "time limit", "OUT_OF_MEMORY": "memory limit", "DEADLINE": "deadline"}


class Slurm(BatchSystem):
    name = "slurm"
    SUBMIT: ClassVar[str] = "sbatch"

    def submit(self, request: BatchRequest) -> str:
        options = [
            "--parsable",
            f"--job-name={request.name}",
            f"--chdir={request.workdir}",
            f"--output={request.output}",
        ]
        if request.time_limit_s is not None:
            options.append(f"--time={max(1, -(-request.time_limit_s // 60))}")
        if request.partition:
            options.append(f"--partition={request.partition}")
        if request.account:
            options.append(f"--account={request.account}")
        if request.cpus:
            options.append(f"--cpus-per-task={request.cpus}")
        if request.memory_mb:
            options.append(f"--mem={request.memory_mb}M")
        if request.gpus:
            options.append(f"--gpus={request.gpus}")
        if request.licences:
            shares = ",".join(f"{name}:{count}" for name, count in request.licences.items())
            options.append(f"--licenses={shares}")
        answer = self._run(
            ["sbatch", *options, *request.extra], "sbatch refused the job", job_script(request)
        )
        job_id = answer.strip().split(";")[0]
        if not job_id.isdigit():
            raise BatchError(f"sbatch answered {answer.strip()[:200]!r}, not a job id")
        return job_id

    def job(self, job_id: str, workdir: Path | None = None) -> BatchJob:
        _job_number(job_id)
        fields = ",".join(f"{name}:|" for name in FIELDS)
        try:
            answer = self._run(
                ["squeue", "--noheader", "--states=all", "--jobs", job_id, "--Format", fields],
                f"squeue -j {job_id}",
            )
        except BatchError as err:
            if FORGOTTEN not in str(err):
                raise
            answer = ""
        lines = [line for line in answer.splitlines() if line.startswith(f"{job_id}|")]
        if not lines:
            return left_behind(self.name, job_id, workdir)
        values = dict(zip(FIELDS, lines[0].split("|"), strict=False))
        slurm_state = values["State"].split()[0]
        state = STATES.get(slurm_state, BatchState.FAILED)
        reason = _value(values["Reason"])
        limit = None
        if slurm_state in LIMITS:
            limit = f"{LIMITS[slurm_state]} {_limit_value(slurm_state, values)}".strip()
        if state == BatchState.CANCELLED:
            reason = "canceled"
        elif state == BatchState.FAILED and reason is None:
            reason = slurm_state.lower().replace("_", " ")
        node = _value(values["NodeList"]) if state != BatchState.PENDING else None
        ended = state in _ENDED
        return BatchJob(
            job_id,
            self.name,
            state,
            reason=reason,
            start_estimate=_time(values["StartTime"]) if state == BatchState.PENDING else None,
            node=node,
            gpus=_gpus(values["tres-alloc"]),
            submitted_at=_time(values["SubmitTime"]),
            started_at=_time(values["StartTime"]) if node else None,
            finished_at=_time(values["EndTime"]) if ended else None,
            exit_code=_exit_code(values["exit_code"]) if ended and node else None,
            limit=limit,
        )

    def cancel(self, job_id: str, workdir: Path | None = None) -> None:
        _job_number(job_id)
        self._run(["scancel", job_id], f"scancel {job_id}")
        note_cancelled(workdir)


_ENDED = {BatchState.COMPLETED, BatchState.FAILED, BatchState.CANCELLED}


def _job_number(job_id: str) -> None:
    if not job_id.isdigit():
        raise BatchError(f"{job_id!r} is not a Slurm job id")


def _value(text: str) -> str | None:
    """Slurm's field, None for its words for nothing."""
    text = text.strip()
    return None if text in ("", "None", "(null)", "N/A", "Unknown") else text


def _time(text: str) -> datetime | None:
    """Slurm's local time (``2026-12-07T17:40:00``) as an aware date-time."""
    value = _value(text)
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value).astimezone()
    except ValueError:
        return None


def _gpus(tres: str) -> str | None:
    """``gres/gpu=2`` in the job's allocated TRES → ``gpu:2``."""
    for item in tres.split(","):
        name, _, count = item.partition("=")
        if name in ("gres/gpu", "gpu"):
            return f"gpu:{count}"
    return None


def _limit_value(slurm_state: str, values: dict[str, str]) -> str:
    if slurm_state == "TIMEOUT":
        seconds = slurm_duration_s(values["TimeLimit"])
        return format_duration(seconds) if seconds is not None else ""
    if slurm_state == "OUT_OF_MEMORY":
        return _value(values["MinMemory"]) or ""
    return ""


def _exit_code(text: str) -> int | None:
    """squeue's ``exit_code`` is the wait status: the exit status, or 128 + the signal that
    ended the job (as a shell reports it)."""
    status = text.strip().split(":")[0]
    if not status.isdigit():
        return None
    raw = int(status)
    return 128 + (raw & 0x7F) if raw & 0x7F else raw >> 8


def slurm_duration_s(text: str) -> int | None:
    """Slurm's duration (``[D-]HH:MM:SS``, ``MM:SS``, ``UNLIMITED``) in seconds; None when
    unlimited or unreadable."""
    text = text.strip()
    if not text or not text[0].isdigit():
        return None
    days, _, clock = text.rpartition("-")
    try:
        hours, minutes, seconds = ([0, 0] + [int(p) for p in clock.split(":")])[-3:]
        return ((int(days or 0) * 24 + hours) * 60 + minutes) * 60 + seconds
    except ValueError:
        return None
