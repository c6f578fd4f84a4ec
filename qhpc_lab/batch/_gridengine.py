"""The Grid Engine side of the batch seam: ``qsub``, ``qstat``, ``qacct``, ``qdel``.

While a job is queued or running, ``qstat -xml`` (the user's own jobs) gives its state letters
and queue instance, and ``qstat -j`` the scheduler's message for a waiting job; once it ended,
``qacct -j`` gives its exit status, its host and whether Grid Engine killed it at a limit.
Grid Engine has no start estimate for a job without a reservation, so none is given.
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import ClassVar
from xml.etree import ElementTree

from qhpc_lab.batch._model import BatchError, BatchJob, BatchRequest, BatchState, BatchSystem
from qhpc_lab.batch._script import CANCELLED_FILE, job_script, left_behind, note_cancelled
from qhpc_lab.vocabulary import format_duration

RUNNING_LETTERS = frozenset("rtRsST")
"""State letters of a started job (running, transferring, restarted, suspended)."""
LIMIT_FAILURES = frozenset({"37"})
"""``qacct``'s ``failed`` codes of a job killed at a limit ("qmaster enforced h_rt, h_cpu, or
h_vmem limit")."""
ACCOUNTING_TIME = "%a %b %d %H:%M:%S %Y"


class GridEngine(BatchSystem):
    name = "gridengine"
    SUBMIT: ClassVar[str] = "qsub"

    def submit(self, request: BatchRequest) -> str:
        options = [
            "-terse",
            "-V",
            "-N",
            _job_name(request.name),
            "-wd",
            str(request.workdir),
            "-o",
            str(request.output),
            "-j",
            "y",
            "-S",
            "/bin/bash",
        ]
        resources = [f"{name}={count}" for name, count in request.licences.items()]
        if request.time_limit_s is not None:
            resources.append(f"h_rt={request.time_limit_s}")
        if request.memory_mb:
            resources.append(f"h_vmem={request.memory_mb}M")
        if request.gpus:
            resources.append(f"gpu={request.gpus}")
        if resources:
            options += ["-l", ",".join(resources)]
        if request.partition:
            options += ["-q", request.partition]
        if request.account:
            options += ["-P", request.account]
        if request.cpus and request.cpus > 1:
            options += ["-pe", "smp", str(request.cpus)]
        answer = self._run(
            ["qsub", *options, *request.extra], "qsub refused the job", job_script(request)
        )
        job_id = answer.strip().split(".")[0]
        if not job_id.isdigit():
            raise BatchError(f"qsub answered {answer.strip()[:200]!r}, not a job id")
        return job_id

    def job(self, job_id: str, workdir: Path | None = None) -> BatchJob:
        _job_number(job_id)
        listed = self._listed(job_id)
        if listed is not None:
            return listed
        if workdir is not None and (workdir / CANCELLED_FILE).is_file():
            return left_behind(self.name, job_id, workdir)
        try:
            accounting = self._run(["qacct", "-j", job_id], f"qacct -j {job_id}")
        except BatchError:
            return left_behind(self.name, job_id, workdir)
        return _ended(job_id, accounting)

    def cancel(self, job_id: str, workdir: Path | None = None) -> None:
        _job_number(job_id)
        note_cancelled(workdir)
        self._run(["qdel", job_id], f"qdel {job_id}")

    def _listed(self, job_id: str) -> BatchJob | None:
        """The job as ``qstat`` lists it while it is queued or running; None once it left."""
        answer = self._run(["qstat", "-xml"], "qstat")
        try:
            root = ElementTree.fromstring(answer)
        except ElementTree.ParseError as err:
            raise BatchError(f"qstat -xml answered no XML: {err}") from None
        entry = next(
            (e for e in root.iter("job_list") if e.findtext("JB_job_number") == job_id), None
        )
        if entry is None:
            return None
        letters = entry.findtext("state", "")
        if RUNNING_LETTERS & set(letters) and "q" not in letters:
            queue = entry.findtext("queue_name", "")
            return BatchJob(
                job_id,
                self.name,
                BatchState.RUNNING,
                node=queue.partition("@")[2] or None,
                started_at=_xml_time(entry.findtext("JAT_start_time")),
            )
        return BatchJob(
            job_id,
            self.name,
            BatchState.PENDING,
            reason=self._waiting_reason(job_id, letters),
            submitted_at=_xml_time(entry.findtext("JB_submission_time")),
        )

    def _waiting_reason(self, job_id: str, letters: str) -> str:
        """The scheduler's message for a waiting job (``qstat -j``), its state letters else."""
        try:
            details = self._run(["qstat", "-j", job_id], f"qstat -j {job_id}")
        except BatchError:
            details = ""
        found = re.search(r"^scheduling info:\s*(.+?)\s*$", details, re.MULTILINE)
        message = found.group(1) if found else ""
        if not message or message.startswith("(Collecting of scheduler job information"):
            message = {"h": "held", "E": "in error state"}.get(
                next((c for c in letters if c in "hE"), ""), "waiting for a free slot"
            )
        return f"{message} ({letters})"


def _job_number(job_id: str) -> None:
    if not job_id.isdigit():
        raise BatchError(f"{job_id!r} is not a Grid Engine job id")


def _job_name(name: str) -> str:
    """A name qsub takes: no ``/:@\\*?`` nor spaces, not starting with a digit."""
    cleaned = re.sub(r"[^A-Za-z0-9_.-]", "_", name) or "qhpc"
    return cleaned if not cleaned[0].isdigit() else f"j{cleaned}"


def _xml_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text).astimezone()
    except ValueError:
        return None


def _ended(job_id: str, accounting: str) -> BatchJob:
    """The job as ``qacct -j`` records it (the last record, should the id have been reused)."""
    record: dict[str, str] = {}
    for line in accounting.splitlines():
        if line.startswith("="):
            record = {}
            continue
        key, _, value = line.partition(" ")
        record[key] = value.strip()
    failed = record.get("failed", "0").split()[0]
    exit_text = record.get("exit_status", "").split()[0] if record.get("exit_status") else ""
    exit_code = int(exit_text) if exit_text.isdigit() else None
    limit = None
    if failed in LIMIT_FAILURES:
        limit = _limit(record.get("category", ""))
    ok = failed == "0" and exit_code == 0
    reason = None
    if not ok:
        said = record.get("failed", "").partition(":")[2].strip()
        reason = said if failed != "0" else f"exit status {exit_code}"
    return BatchJob(
        job_id,
        "gridengine",
        BatchState.COMPLETED if ok else BatchState.FAILED,
        reason=reason,
        node=record.get("hostname") or None,
        submitted_at=_accounting_time(record.get("qsub_time")),
        started_at=_accounting_time(record.get("start_time")),
        finished_at=_accounting_time(record.get("end_time")),
        exit_code=exit_code,
        limit=limit,
    )


def _accounting_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.strptime(" ".join(text.split()), ACCOUNTING_TIME).astimezone()
    except ValueError:
        return None


def _limit(category: str) -> str:
    """Which of the job's limits ended it, from its requests (``-l h_rt=60,h_vmem=1G``)."""
    requested = dict(re.findall(r"(h_rt|h_vmem|h_cpu)=([^,\s]+)", category))
    if "h_rt" in requested:
        seconds = requested["h_rt"]
        return (
            f"time limit {format_duration(float(seconds))}"
            if seconds.isdigit()
            else (f"time limit {seconds}")
        )
    if "h_vmem" in requested:
        return f"memory limit {requested['h_vmem']}"
    if "h_cpu" in requested:
        return f"CPU time limit {requested['h_cpu']}"
    return "a limit (h_rt, h_cpu or h_vmem)"
