"""The documents the Jupyter server extension serves of its own: the user's batch work (notebook
runs and cluster emulations) as the QPU sidebar's "Batch runs" section shows it.

Every field is shown in the page, so every field is :data:`RELAYED`; the sidebar's TypeScript
interfaces are generated from these classes like the scheduler's documents.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, StrictBool, StrictInt, StrictStr

from qhpc_lab.wire.documents import RELAYED, Time


class BatchJobOut(BaseModel):
    """A batch job as the batch system last described it."""

    state: Annotated[StrictStr, RELAYED] = Field(
        description="PENDING, RUNNING, COMPLETED, FAILED or CANCELLED."
    )
    reason: Annotated[StrictStr | None, RELAYED] = Field(
        default=None,
        description="Why a pending job waits, or why a job failed, in the batch system's words.",
    )
    start_estimate: Annotated[Time | None, RELAYED] = Field(
        default=None, description="When the batch system expects a pending job to start."
    )
    node: Annotated[StrictStr | None, RELAYED] = None
    gpus: Annotated[StrictStr | None, RELAYED] = None
    started_at: Annotated[Time | None, RELAYED] = None
    finished_at: Annotated[Time | None, RELAYED] = None
    exit_code: Annotated[StrictInt | None, RELAYED] = None
    limit: Annotated[StrictStr | None, RELAYED] = Field(
        default=None, description="The limit that ended a failed job (time limit 0:01:00)."
    )


class QPUJobRefOut(BaseModel):
    """A QPU job a notebook run submitted, as far as the run knows it."""

    id: Annotated[StrictInt | StrictStr, RELAYED]
    target: Annotated[StrictStr | None, RELAYED] = None
    status: Annotated[StrictStr | None, RELAYED] = None


class BatchEntryOut(BaseModel):
    """One piece of the user's batch work: a notebook run or a cluster emulation."""

    id: Annotated[StrictStr, RELAYED] = Field(description="The ledger folder's name.")
    kind: Annotated[Literal["emulation", "notebook"], RELAYED]
    title: Annotated[StrictStr, RELAYED]
    system: Annotated[StrictStr, RELAYED] = Field(description="slurm or gridengine.")
    job_id: Annotated[StrictStr, RELAYED] = Field(description="The batch job's id.")
    submitted_at: Annotated[Time, RELAYED]
    batch: Annotated[BatchJobOut | None, RELAYED] = Field(
        default=None, description="Null while the batch system cannot say (see error)."
    )
    finished: Annotated[StrictBool, RELAYED] = False
    error: Annotated[StrictStr | None, RELAYED] = Field(
        default=None, description="Why the batch job's state could not be read."
    )
    notebook: Annotated[StrictStr | None, RELAYED] = Field(
        default=None, description="The notebook, relative to the Jupyter root; null outside it."
    )
    executed: Annotated[StrictStr | None, RELAYED] = Field(
        default=None,
        description="The executed notebook, relative to the Jupyter root, once it exists.",
    )
    executed_file: Annotated[StrictStr | None, RELAYED] = Field(
        default=None, description="Where the executed notebook is written (absolute)."
    )
    qpu_jobs: Annotated[list[QPUJobRefOut], RELAYED] = Field(default_factory=list)
    failure: Annotated[StrictStr | None, RELAYED] = Field(
        default=None, description="The failing cell and its error (cell 4: ZeroDivisionError…)."
    )
    parameters: Annotated[dict[str, Any], RELAYED] = Field(default_factory=dict)
    qpus: Annotated[StrictInt | dict[str, StrictInt] | None, RELAYED] = None
    job_class: Annotated[StrictStr | None, RELAYED] = None
    engine: Annotated[StrictStr | None, RELAYED] = Field(
        default=None, description="The emulation engine that ran (or was asked for)."
    )
    approximation: Annotated[StrictStr | None, RELAYED] = Field(
        default=None, description="What makes an emulation's result approximate, in words."
    )
