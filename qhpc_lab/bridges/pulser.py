"""Pulser's remote-backend API over the qhpc_lab client.

    from pulser import QPUBackend
    from qhpc_lab.bridges.pulser import QHPCConnection

    connection = QHPCConnection()                     # the job's QPU, else the emulator
    device = connection.fetch_available_devices()["QHPC-Demo"]
    ...                                               # build `sequence` on `device`
    results = QPUBackend(sequence, connection=connection).run(
        job_params=[{"runs": 500}], wait=True
    )
    results[0].final_bitstrings

Code written for Pulser's remote backends (``PasqalCloud``, QRMI's ``PulserQRMIConnection``)
runs unchanged through the same discovery, validation, queue and emulator fallback as
``qhpc_lab.submit``; each job of a batch is one qhpc_lab job (see :meth:`jobs` for live
panels).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pulser import Sequence
from pulser.backend.remote import (
    BatchStatus,
    JobStatus,
    RemoteConnection,
    RemoteResults,
    RemoteResultsError,
)
from pulser.backend.results import Results
from pulser.devices import Device

from qhpc_lab.client import Client, Job, default_client


@dataclass(frozen=True)
class _Submitted:
    job: Job
    atom_order: tuple[str, ...]
    duration: int


class QHPCConnection(RemoteConnection):
    """A Pulser ``RemoteConnection`` whose jobs are qhpc_lab jobs on one target."""

    def __init__(
        self,
        target: str | None = None,
        job_class: str | None = None,
        client: Client | None = None,
    ) -> None:
        """``target``: a name from ``qhpc_lab.targets()`` (default: where ``submit()``
        goes); ``job_class``: production, test or development on a scheduler."""
        self._client = client or default_client()
        self._target = target
        self._job_class = job_class
        self._batches: dict[str, list[_Submitted]] = {}

    def supports_open_batch(self) -> bool:
        return False

    def fetch_available_devices(self) -> dict[str, Device]:
        """The target's device, by name; the plain emulator has none to offer."""
        spec = self._client.target_info(self._target).spec
        if spec is None:
            raise NotImplementedError("the emulator target runs any device's sequences")
        return {spec.name: spec.pulser_device}

    def submit(
        self,
        sequence: Sequence,
        wait: bool = False,
        open: bool = False,
        batch_id: str | None = None,
        **kwargs: Any,
    ) -> RemoteResults:
        """One qhpc_lab job per entry of ``job_params`` (``runs``, ``variables``)."""
        if open or batch_id:
            raise NotImplementedError("open batches are not supported by qhpc_lab targets")
        sequence = self._add_measurement_to_sequence(sequence)
        submitted = []
        for params in kwargs.get("job_params") or [{}]:
            variables = dict(params.get("variables") or {})
            built = sequence.build(**variables) if sequence.is_parametrized() else sequence
            job = self._client.submit(
                sequence,
                shots=params.get("runs"),
                target=self._target,
                job_class=self._job_class,
                **variables,
            )
            order = tuple(str(q) for q in built.get_register(include_mappable=True).qubit_ids)
            submitted.append(_Submitted(job, order, int(built.get_duration())))
        batch = str(uuid.uuid4())
        self._batches[batch] = submitted
        if wait:
            for item in submitted:
                item.job.wait()
        return RemoteResults(batch, self, [item.job.id for item in submitted])

    def jobs(self, batch_id: str) -> list[Job]:
        """The qhpc_lab jobs of a batch (``results.batch_id``): ``status``, ``position``,
        ``await``, live panels."""
        return [item.job for item in self._batch(batch_id)]

    def _batch(self, batch_id: str) -> list[_Submitted]:
        try:
            return self._batches[batch_id]
        except KeyError:
            raise RemoteResultsError(f"no batch {batch_id!r} was submitted here") from None

    def _get_job_ids(self, batch_id: str) -> list[str]:
        return [item.job.id for item in self._batch(batch_id)]

    def _query_job_progress(self, batch_id: str) -> Mapping[str, tuple[JobStatus, Results | None]]:
        progress: dict[str, tuple[JobStatus, Results | None]] = {}
        for item in self._batch(batch_id):
            state = item.job.refresh()
            results = None
            if state.status == "DONE" and state.counts is not None:
                results = Results.from_final_bitstrings(
                    atom_order=item.atom_order,
                    total_duration=item.duration,
                    final_bitstrings=state.counts,
                )
            progress[item.job.id] = (JobStatus[state.status], results)
        return progress

    def _fetch_result(self, batch_id: str, job_ids: list[str] | None) -> list[Results]:
        progress = self._query_job_progress(batch_id)
        results = []
        for job_id in progress if job_ids is None else job_ids:
            if job_id not in progress:
                raise RemoteResultsError(f"job {job_id!r} is not in batch {batch_id!r}")
            status, result = progress[job_id]
            if result is None:
                raise RemoteResultsError(f"job {job_id} has no results: it is {status.name}")
            results.append(result)
        return results

    def _get_batch_status(self, batch_id: str) -> BatchStatus:
        statuses = {item.job.refresh().status for item in self._batch(batch_id)}
        if statuses & {"PENDING", "RUNNING"}:
            return BatchStatus.RUNNING if statuses - {"PENDING"} else BatchStatus.PENDING
        if len(statuses) == 1:
            return BatchStatus[statuses.pop()]
        return BatchStatus.DONE
