"""The user's batch work as the sidebar's "Batch runs" section shows it: notebook runs
(:mod:`qhpc_lab.runs`) and cluster emulations, both read from the user's batch ledger.

Every call here blocks (it reads the ledger and runs the batch system's commands): the routes
and the change feed call it through ``asyncio.to_thread``. A finished run is not asked of the batch
system again (a notebook run's entry keeps its final state; an emulation's is kept here).

Paths from the browser are relative to the Jupyter server's root and must stay inside it; an
entry id is a ledger folder's name, never a path.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError

from qhpc_lab.batch import BatchEntry, BatchError, BatchJob, BatchLedger, batch_system
from qhpc_lab.emulators import Emulation
from qhpc_lab.runs import NotebookRun, RunRefused, RunRequest, parameters_of
from qhpc_lab.runs import cancel as cancel_run
from qhpc_lab.runs import check as check_run
from qhpc_lab.runs import run as notebook_run
from qhpc_lab.runs import submit as submit_run
from qhpc_lab.wire.lab import BatchEntryOut, BatchJobOut

ENTRY_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
"""A ledger folder's name (``notebook-20261207T174000Z-3fa9c1``): no separator, no dot first."""


class BatchRefused(Exception):
    """A request the routes answer with ``status`` and this one line."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class RunForm(BaseModel):
    """The "Run as batch job" dialog's answer."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: StrictStr = Field(description="The notebook, relative to the Jupyter root.")
    qpus: StrictInt | dict[StrictStr, StrictInt] = 1
    time_limit: StrictStr | None = None
    job_class: StrictStr = "production"
    parameters: dict[StrictStr, Any] = Field(default_factory=dict)
    scheduler: Literal["slurm", "gridengine"] | None = None


def read_form(body: bytes) -> RunForm:
    """The dialog's JSON, or BatchRefused(400) naming the first thing wrong with it."""
    try:
        return RunForm.model_validate_json(body or b"{}")
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        raise BatchRefused(400, f"{where}: {first['msg']}") from None


class BatchWork:
    """Lists, submits and cancels the user's batch work; see the module's docstring."""

    def __init__(self, environ: Mapping[str, str], root_dir: str | Path) -> None:
        self.environ = dict(environ)
        self.root = Path(root_dir).expanduser().resolve()
        self._finished: dict[str, dict[str, Any]] = {}

    @property
    def ledger(self) -> BatchLedger:
        return BatchLedger.default(self.environ)

    # -- paths and ids from the browser ----------------------------------------------------

    def notebook(self, path: str) -> Path:
        """The notebook at ``path`` under the root; BatchRefused when it is outside the root
        (403), missing (404) or not a notebook (400)."""
        if not path or "\0" in path:
            raise BatchRefused(400, "name a notebook: its path relative to the Jupyter root")
        found = (self.root / path).resolve()
        if not found.is_relative_to(self.root):
            raise BatchRefused(403, f"{path} is outside the Jupyter root; runs start from there")
        if found.suffix != ".ipynb":
            raise BatchRefused(400, f"{path} is not a notebook (.ipynb)")
        if not found.is_file():
            raise BatchRefused(404, f"no notebook at {path}")
        return found

    def entry(self, entry_id: str) -> BatchEntry:
        """The ledger's entry ``entry_id``; BatchRefused 400 for what cannot be an id, 404."""
        if not ENTRY_ID.fullmatch(entry_id) or ".." in entry_id:
            raise BatchRefused(400, f"{entry_id!r} is not a batch run's id")
        entry = self.ledger.get(entry_id)
        if entry is None:
            raise BatchRefused(404, f"no batch run {entry_id} in {self.ledger.directory}")
        return entry

    def _relative(self, path: str | Path | None) -> str | None:
        """``path`` relative to the root, for Lab to open; None outside it or when absent."""
        if not path:
            return None
        resolved = Path(path).expanduser().resolve()
        if not resolved.is_relative_to(self.root):
            return None
        return resolved.relative_to(self.root).as_posix()

    # -- what the sidebar reads ------------------------------------------------------------

    def views(self) -> list[dict[str, Any]]:
        """Every entry of the ledger, newest first."""
        return [self.view(entry) for entry in self.ledger.entries()]

    def view(self, entry: BatchEntry) -> dict[str, Any]:
        """One entry with its batch job's state now. A notebook run keeps its final state in
        its entry (:mod:`qhpc_lab.runs`); an emulation's is kept here once final."""
        if entry.kind == "notebook":
            try:
                return self._run_view(entry, notebook_run(entry.id, self.environ))
            except (RunRefused, BatchError) as err:
                return self._entry_view(entry, None, str(err))
        known = self._finished.get(entry.id)
        if known is not None:
            return known
        try:
            job = batch_system(entry.system, self.environ).job(entry.job_id, entry.folder)
        except BatchError as err:
            return self._entry_view(entry, None, str(err))
        view = self._entry_view(entry, job, None)
        if view["finished"]:
            self._finished[entry.id] = view
        return view

    def _entry_view(
        self, entry: BatchEntry, job: BatchJob | None, error: str | None
    ) -> dict[str, Any]:
        details = entry.details
        executed = entry.files.get("executed")
        summary = _result_summary(entry) if entry.kind == "emulation" else {}
        document = BatchEntryOut(
            id=entry.id,
            kind=entry.kind,
            title=entry.title,
            system=entry.system,
            job_id=entry.job_id,
            submitted_at=entry.submitted_at,
            batch=_batch_view(job),
            finished=job is not None and job.final,
            error=error,
            notebook=self._relative(entry.files.get("notebook")),
            executed=self._relative(executed) if executed and Path(executed).is_file() else None,
            executed_file=executed,
            parameters=details.get("parameters") or {},
            qpus=details.get("qpus"),
            job_class=details.get("job_class"),
            engine=summary.get("engine") or details.get("engine"),
            approximation=summary.get("approximation"),
        )
        return document.model_dump(mode="json")

    def _run_view(self, entry: BatchEntry, run: NotebookRun) -> dict[str, Any]:
        view = self._entry_view(entry, run.batch, None)
        executed = Path(run.executed)
        view.update(
            notebook=self._relative(run.notebook),
            executed=self._relative(executed) if executed.is_file() else None,
            executed_file=str(executed),
            qpu_jobs=[
                {"id": job.get("id"), "target": job.get("target"), "status": job.get("status")}
                for job in run.qpu_jobs
            ],
            failure=run.failure,
            parameters=dict(run.parameters),
            qpus=run.qpus if isinstance(run.qpus, int) else dict(run.qpus),
            job_class=run.job_class,
            finished=run.finished,
        )
        return BatchEntryOut.model_validate(view).model_dump(mode="json")

    # -- what the dialog and Cancel do -----------------------------------------------------

    def parameters(self, path: str) -> dict[str, Any]:
        """The names and defaults of the notebook's cell tagged ``parameters``."""
        notebook = self.notebook(path)
        try:
            return {"path": path, "parameters": parameters_of(notebook)}
        except RunRefused as err:
            raise BatchRefused(422, str(err)) from None

    def submit(self, form: RunForm) -> dict[str, Any]:
        """Check, then submit; BatchRefused(422) with the refusal's line when refused."""
        request = RunRequest(
            notebook=self.notebook(form.path),
            qpus=form.qpus,
            time_limit=form.time_limit or None,
            job_class=form.job_class,
            parameters=form.parameters,
            scheduler=form.scheduler,
        )
        try:
            check_run(request, self.environ)
            run = submit_run(request, self.environ)
        except RunRefused as err:
            raise BatchRefused(422, str(err)) from None
        return self.view(self.entry(run.id))

    def cancel(self, entry_id: str) -> dict[str, Any]:
        """Cancel the entry's batch job (a notebook run's QPU session ends with it)."""
        entry = self.entry(entry_id)
        try:
            if entry.kind == "notebook":
                cancel_run(entry.id, self.environ)
            else:
                batch_system(entry.system, self.environ).cancel(entry.job_id, entry.folder)
        except (RunRefused, BatchError) as err:
            raise BatchRefused(409, str(err)) from None
        self._finished.pop(entry.id, None)
        return self.view(entry)


def _batch_view(job: BatchJob | None) -> BatchJobOut | None:
    if job is None:
        return None
    return BatchJobOut(
        state=str(job.state),
        reason=job.reason,
        start_estimate=job.start_estimate,
        node=job.node,
        gpus=job.gpus,
        started_at=job.started_at,
        finished_at=job.finished_at,
        exit_code=job.exit_code,
        limit=job.limit,
    )


def _result_summary(entry: BatchEntry) -> dict[str, str]:
    """The engine and its approximation from an emulation's result file once it exists, as
    :class:`qhpc_lab.emulators.Emulation` reads it (``exact`` for an exact engine)."""
    path = entry.files.get("result")
    if not path:
        return {}
    try:
        result = Emulation.from_json(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    how = result.approximation.describe() if result.approximation else "exact"
    return {"engine": result.engine, "approximation": how}
