"""Check, submit, follow and cancel notebook runs; each is a BatchEntry of kind ``notebook``."""

from __future__ import annotations

import ast
import dataclasses
import json
import os
import re
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from qhpc_lab.batch import (
    BatchEntry,
    BatchError,
    BatchJob,
    BatchLedger,
    BatchRequest,
    BatchState,
    BatchSystem,
    batch_system,
    slurm_duration_s,
)
from qhpc_lab.runs._files import JOURNAL, OUTCOME, SPEC, read_json
from qhpc_lab.runs._settings import RunSettings, run_settings
from qhpc_lab.vocabulary import JOB_CLASSES, parse_duration
from qhpc_lab.wire.times import iso_time

DEFAULT_CLASS = "production"


class RunRefused(Exception):
    """The run cannot be submitted: one line saying what to change."""


@dataclass(frozen=True)
class RunRequest:
    """A notebook to run as a batch job, and what the job holds."""

    notebook: Path
    qpus: int | Mapping[str, int] = 1
    """QPU slots: N on the site's QPU, or QPU resource → slots (several QPUs)."""
    time_limit: str | None = None
    """``30m``, ``2h``, ``1:30:00``; default the ``[runs]`` setting, else the batch system's."""
    job_class: str = DEFAULT_CLASS
    """The class of every QPU job the notebook submits without naming one."""
    parameters: Mapping[str, Any] = field(default_factory=dict)
    """Values for the names of the cell tagged ``parameters``."""
    scheduler: str | None = None
    """``slurm`` or ``gridengine``; default the one in reach."""
    output_dir: Path | None = None
    """Where the executed notebook goes; default the ``[runs]`` setting, else beside it."""


@dataclass(frozen=True)
class NotebookRun:
    """A run as its batch job and its files describe it now."""

    id: str
    notebook: Path
    executed: Path
    batch: BatchJob
    qpu_jobs: tuple[dict[str, Any], ...]
    """``{"id", "target", "status"}`` of each QPU job the notebook has submitted, as its
    kernel last recorded them (after each cell, and every few seconds while a cell waits)."""
    failure: str | None
    parameters: dict[str, Any]
    qpus: int | dict[str, int]
    job_class: str
    submitted_at: datetime
    finished: bool
    output: Path
    """The batch job's stdout and stderr (papermill's log of every cell)."""

    def to_json(self) -> dict[str, Any]:
        """The document the server extension serves (times as ISO 8601 UTC)."""
        batch = dataclasses.asdict(self.batch)
        for key in ("start_estimate", "submitted_at", "started_at", "finished_at"):
            batch[key] = iso_time(batch[key])
        batch["state"] = str(self.batch.state)
        return {
            "id": self.id,
            "notebook": str(self.notebook),
            "executed": str(self.executed),
            "output": str(self.output),
            "batch": batch,
            "qpu_jobs": list(self.qpu_jobs),
            "failure": self.failure,
            "parameters": self.parameters,
            "qpus": self.qpus,
            "job_class": self.job_class,
            "submitted_at": iso_time(self.submitted_at),
            "finished": self.finished,
        }


def parameters_of(notebook: Path) -> dict[str, Any]:
    """The names and default values of the notebook's cell tagged ``parameters`` (papermill's
    inspection; a default that is not a Python literal is its source text); {} without one."""
    import papermill

    try:
        found = papermill.inspect_notebook(str(notebook))
    except Exception as err:  # papermill raises its own errors and nbformat's
        raise RunRefused(f"cannot read {notebook}: {err}") from None
    return {name: _literal(spec["default"]) for name, spec in found.items()}


def check(request: RunRequest, environ: Mapping[str, str] | None = None) -> None:
    """Refuse (RunRefused) what would fail after submission: an unreadable notebook, a kernel
    not installed where the job runs, an unknown parameter or class, a bad share or time."""
    _prepare(request, _environ(environ))


def submit(request: RunRequest, environ: Mapping[str, str] | None = None) -> NotebookRun:
    """Check ``request`` and submit the notebook as a batch job holding its QPU share."""
    environ = _environ(environ)
    plan = _prepare(request, environ)
    ledger = BatchLedger.default(environ)
    folder = ledger.new_folder("notebook")
    stem = request.notebook.name.removesuffix(".ipynb")
    executed = plan.output_dir / f"{stem}.run-{folder.name.rsplit('-', 1)[-1]}.ipynb"
    notebook = request.notebook.resolve()
    qpus = request.qpus if isinstance(request.qpus, int) else dict(request.qpus)
    spec = {
        "id": folder.name,
        "notebook": str(notebook),
        "executed": str(executed),
        "parameters": dict(request.parameters),
        "kernel": plan.kernel,
        "job_class": request.job_class,
        "qpus": qpus,
    }
    (folder / SPEC).write_text(json.dumps(spec, indent=1))
    output = folder / "output.log"
    try:
        job_id = plan.system.submit(
            BatchRequest(
                command=(sys.executable, "-m", "qhpc_lab.runs._execute", str(folder)),
                name=re.sub(r"[^A-Za-z0-9_.-]", "_", f"qhpc-run-{stem}")[:64],
                workdir=folder,
                output=output,
                time_limit_s=plan.time_limit_s,
                partition=plan.settings.partition,
                account=plan.settings.account,
                licences=plan.licences,
                extra=plan.settings.extra,
            )
        )
    except BatchError as err:
        shutil.rmtree(folder, ignore_errors=True)
        raise RunRefused(f"{plan.system.name} refused the run: {err}") from None
    entry = ledger.add(
        BatchEntry(
            id=folder.name,
            kind="notebook",
            title=str(notebook),
            system=plan.system.name,
            job_id=job_id,
            submitted_at=datetime.now(UTC),
            folder=folder,
            files={"notebook": str(notebook), "executed": str(executed), "output": str(output)},
            details={
                "parameters": spec["parameters"],
                "qpus": qpus,
                "licences": plan.licences,
                "job_class": request.job_class,
                "kernel": plan.kernel,
                "time_limit_s": plan.time_limit_s,
            },
        )
    )
    return _run_of(entry, ledger, plan.system)


def runs(environ: Mapping[str, str] | None = None) -> list[NotebookRun]:
    """The user's notebook runs, newest first."""
    environ = _environ(environ)
    ledger = BatchLedger.default(environ)
    systems: dict[str, BatchSystem] = {}
    found = []
    for entry in ledger.entries("notebook"):
        if entry.system not in systems:
            systems[entry.system] = batch_system(entry.system, environ)
        found.append(_run_of(entry, ledger, systems[entry.system]))
    return found


def run(run_id: str, environ: Mapping[str, str] | None = None) -> NotebookRun:
    """The run ``run_id`` now; RunRefused when there is no such run, or when its batch system
    cannot say its state (an outage: the run is not failed for it)."""
    environ = _environ(environ)
    ledger = BatchLedger.default(environ)
    entry = _entry(ledger, run_id)
    return _run_of(entry, ledger, batch_system(entry.system, environ))


def cancel(run_id: str, environ: Mapping[str, str] | None = None) -> NotebookRun:
    """End the run's batch job (a pending one never starts; a running one is stopped, and the
    QPU hooks' job-end step revokes its session, cancelling its queued QPU jobs)."""
    environ = _environ(environ)
    ledger = BatchLedger.default(environ)
    entry = _entry(ledger, run_id)
    system = batch_system(entry.system, environ)
    if not _run_of(entry, ledger, system).finished:
        try:
            system.cancel(entry.job_id, entry.folder)
        except BatchError as err:
            raise RunRefused(f"could not cancel run {run_id}: {err}") from None
    return _run_of(entry, ledger, system)


@dataclass(frozen=True)
class _Plan:
    """What a checked request becomes."""

    system: BatchSystem
    settings: RunSettings
    kernel: str
    licences: dict[str, int]
    time_limit_s: int | None
    output_dir: Path


def _prepare(request: RunRequest, environ: dict[str, str]) -> _Plan:
    notebook = request.notebook
    if notebook.suffix != ".ipynb" or not notebook.is_file():
        raise RunRefused(f"{notebook}: no such notebook (a .ipynb file)")
    try:  # JSON, not nbformat: its schema validation costs seconds of imports
        content = json.loads(notebook.read_text())
        settings = run_settings(environ)
    except (OSError, ValueError) as err:
        raise RunRefused(f"cannot read {notebook}: {err}") from None
    if not isinstance(content, dict):
        raise RunRefused(f"{notebook} is not a notebook")
    kernel = _kernel(notebook, content)
    if request.job_class not in JOB_CLASSES:
        raise RunRefused(f"no job class {request.job_class!r}; use one of {', '.join(JOB_CLASSES)}")
    _check_parameters(notebook, request.parameters)
    licences = _licences(request.qpus, settings)
    time_limit_s = _seconds(request.time_limit or settings.time_limit)
    try:
        system = batch_system(request.scheduler, environ)
    except BatchError as err:
        raise RunRefused(str(err)) from None
    output_dir = request.output_dir or (
        Path(settings.output_dir).expanduser() if settings.output_dir else None
    )
    output_dir = (output_dir or notebook.parent).resolve()
    if not output_dir.is_dir():
        raise RunRefused(f"output folder {output_dir} does not exist")
    if not os.access(output_dir, os.W_OK):
        raise RunRefused(
            f"cannot write the executed notebook into {output_dir}: choose a folder with "
            "--output-dir"
        )
    return _Plan(
        system=system,
        settings=settings,
        kernel=kernel,
        licences=licences,
        time_limit_s=time_limit_s,
        output_dir=output_dir,
    )


def _kernel(notebook: Path, content: dict[str, Any]) -> str:
    """The notebook's kernelspec name, refused unless that kernel is installed here (the
    compute nodes share this filesystem) and its program exists."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    metadata = content.get("metadata")
    kernelspec = metadata.get("kernelspec") if isinstance(metadata, dict) else None
    name = kernelspec.get("name") if isinstance(kernelspec, dict) else None
    if not name:
        raise RunRefused(
            f"{notebook} names no kernel (metadata.kernelspec): open it in Jupyter, choose a "
            "kernel and save it"
        )
    try:
        spec = KernelSpecManager().get_kernel_spec(name)
    except NoSuchKernel:
        raise RunRefused(
            f"{notebook} runs in kernel {name!r}, which is not installed where the batch job "
            "runs (jupyter kernelspec list shows those that are; qhpc kernels install adds "
            "python3-qpu)"
        ) from None
    program = spec.argv[0] if spec.argv else ""
    if not (shutil.which(program) or Path(program).is_file()):
        raise RunRefused(f"kernel {name!r} runs {program}, which does not exist here")
    return name


def _check_parameters(notebook: Path, parameters: Mapping[str, Any]) -> None:
    if not parameters:
        return
    known = parameters_of(notebook)
    if not known:
        raise RunRefused(
            f"{notebook} has no cell tagged 'parameters' to take {', '.join(parameters)} "
            "(tag one in JupyterLab's property inspector)"
        )
    unknown = [name for name in parameters if name not in known]
    if unknown:
        raise RunRefused(
            f"no parameter {unknown[0]!r} in {notebook.name}'s parameters cell "
            f"(it has {', '.join(known)})"
        )
    try:
        json.dumps(dict(parameters))
    except TypeError as err:
        raise RunRefused(f"parameters must be JSON values: {err}") from None


def _licences(qpus: int | Mapping[str, int], settings: RunSettings) -> dict[str, int]:
    shares = {None: qpus} if isinstance(qpus, int) else dict(qpus)
    licences = {}
    for resource, slots in shares.items():
        if not isinstance(slots, int) or isinstance(slots, bool) or slots < 0:
            raise RunRefused(f"a QPU share is a number of slots, 0 or more: not {slots!r}")
        if slots:
            licences[settings.licence_of(resource)] = slots
    return licences


def _seconds(limit: str | None) -> int | None:
    """``1:30:00``, ``2-00:00:00``, ``45:00`` (as sbatch reads them) or ``90m``, ``2h``."""
    if limit is None:
        return None
    try:
        seconds = slurm_duration_s(limit) if ":" in limit else int(parse_duration(limit))
    except ValueError:
        seconds = None
    if not seconds:
        raise RunRefused(f"a time limit is like 30m, 2h or 1:30:00: not {limit!r}")
    return seconds


def _literal(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _environ(environ: Mapping[str, str] | None) -> dict[str, str]:
    return dict(os.environ if environ is None else environ)


def _entry(ledger: BatchLedger, run_id: str) -> BatchEntry:
    entry = ledger.get(run_id)
    if entry is None or entry.kind != "notebook":
        raise RunRefused(f"no notebook run {run_id!r} (qhpc runs lists yours)")
    return entry


def _run_of(entry: BatchEntry, ledger: BatchLedger, system: BatchSystem) -> NotebookRun:
    """The run now: the batch job's state (kept in the entry once final, so a finished run
    costs no batch-system call), the journal's QPU jobs, the outcome's failure."""
    batch = _batch_job(entry, ledger, system)
    outcome = read_json(entry.folder / OUTCOME)
    journal = read_json(entry.folder / JOURNAL)
    failure = outcome.get("failure")
    if failure is None and batch.state == BatchState.FAILED:
        why = batch.limit or batch.reason or f"exit status {batch.exit_code}"
        failure = f"the batch job failed ({why}): see {entry.files.get('output')}"
    details = entry.details
    return NotebookRun(
        id=entry.id,
        notebook=Path(entry.files["notebook"]),
        executed=Path(entry.files["executed"]),
        batch=batch,
        qpu_jobs=tuple(
            {"id": j["id"], "target": j["target"], "status": j["status"]}
            for j in journal.get("qpu_jobs", [])
        ),
        failure=failure,
        parameters=details.get("parameters", {}),
        qpus=details.get("qpus", 1),
        job_class=details.get("job_class", DEFAULT_CLASS),
        submitted_at=entry.submitted_at,
        finished=batch.final,
        output=Path(entry.files["output"]),
    )


def _batch_job(entry: BatchEntry, ledger: BatchLedger, system: BatchSystem) -> BatchJob:
    kept = entry.details.get("batch")
    if kept:
        return BatchJob(**{**kept, **_times(kept), "state": BatchState(kept["state"])})
    try:
        job = system.job(entry.job_id, entry.folder)
    except BatchError as err:  # an outage says nothing of the run: it has not failed
        raise RunRefused(f"cannot read the state of run {entry.id}: {err}") from None
    if job.final:
        record = dataclasses.asdict(job)
        record.update({key: iso_time(value) for key, value in _times(record).items()})
        ledger.update(entry, details={**entry.details, "batch": record})
    return job


def _times(record: dict[str, Any]) -> dict[str, Any]:
    keys = ("start_estimate", "submitted_at", "started_at", "finished_at")
    return {
        key: (
            datetime.fromisoformat(value.replace("Z", "+00:00"))
            if isinstance(value, str)
            else value
        )
        for key, value in record.items()
        if key in keys
    }
