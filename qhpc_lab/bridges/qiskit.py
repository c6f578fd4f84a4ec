"""Qiskit's Sampler primitive (V2) over the qhpc_lab client.

    from qhpc_lab.bridges.qiskit import Sampler

    job = Sampler(target="emulator").run([circuit], shots=1000)
    job.result()[0].data.meas.get_counts()

Gate circuits travel as OpenQASM 3 (the emulator's Aer, or a gate-based QRMI target). Analog
circuits of qiskit-pasqal-provider — a ``HamiltonianGate`` on an atom register — become Pulser
sequences on the target's device (:func:`qhpc_lab.programs.to_program`), so they also run on
the analog QPU behind the scheduler. Every binding of every pub is one qhpc_lab job; all are
queued before any is waited for.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from qiskit.circuit import QuantumCircuit
from qiskit.primitives import (
    BasePrimitiveJob,
    BaseSamplerV2,
    BitArray,
    DataBin,
    PrimitiveResult,
    SamplerPubLike,
    SamplerPubResult,
)
from qiskit.primitives.containers.sampler_pub import SamplerPub
from qiskit.providers import JobStatus

from qhpc_lab.client import Client, Job, default_client
from qhpc_lab.programs import has_analog_gate

DEFAULT_SHOTS = 1024
ANALOG_REGISTER = "meas"
"""The classical register an analog circuit's atoms are read into."""


class Sampler(BaseSamplerV2):
    """A ``BaseSamplerV2`` whose pubs run as qhpc_lab jobs on one target."""

    def __init__(
        self,
        *,
        target: str | None = None,
        default_shots: int = DEFAULT_SHOTS,
        job_class: str | None = None,
        client: Client | None = None,
    ) -> None:
        """``target``: a name from ``qhpc_lab.targets()`` (default: where ``submit()``
        goes); ``job_class``: production, test or development on a scheduler."""
        self._client = client or default_client()
        self._target = target
        self._default_shots = default_shots
        self._job_class = job_class

    def run(self, pubs: Iterable[SamplerPubLike], *, shots: int | None = None) -> SamplerJob:
        coerced = [SamplerPub.coerce(pub, shots or self._default_shots) for pub in pubs]
        return SamplerJob([self._submit(pub) for pub in coerced], coerced)

    def _submit(self, pub: SamplerPub) -> list[Job]:
        """One job per parameter binding, in the bindings' (C) order."""
        circuit = pub.circuit
        analog = has_analog_gate(circuit)
        names = [parameter.name for parameter in circuit.parameters]
        values = pub.parameter_values.as_array(circuit.parameters)
        jobs = []
        for index in np.ndindex(pub.parameter_values.shape):
            binding = dict(zip(names, (float(v) for v in values[index]), strict=True))
            program = circuit if analog or not binding else circuit.assign_parameters(binding)
            variables = binding if analog else {}
            jobs.append(
                self._client.submit(
                    program,
                    shots=pub.shots,
                    target=self._target,
                    job_class=self._job_class,
                    name=circuit.name,
                    **variables,
                )
            )
        return jobs


class SamplerJob(BasePrimitiveJob[PrimitiveResult[SamplerPubResult], JobStatus]):
    """The qhpc_lab jobs of one ``Sampler.run`` call; ``result()`` waits for them all."""

    def __init__(self, jobs: list[list[Job]], pubs: list[SamplerPub]) -> None:
        ids = [job.id for pub_jobs in jobs for job in pub_jobs]
        super().__init__(job_id=",".join(ids))
        self.jobs = jobs
        """Per pub, its jobs (one per parameter binding)."""
        self._pubs = pubs

    def result(self) -> PrimitiveResult[SamplerPubResult]:
        """Wait for every job; JobError if one ended without counts."""
        results = [
            self._pub_result(pub, jobs) for pub, jobs in zip(self._pubs, self.jobs, strict=True)
        ]
        return PrimitiveResult(results, metadata={"version": 2})

    def _pub_result(self, pub: SamplerPub, jobs: list[Job]) -> SamplerPubResult:
        counts = [job.result().counts for job in jobs]
        circuit = pub.circuit
        if has_analog_gate(circuit):
            # Pulser lists atoms first to last; Qiskit puts qubit 0 rightmost.
            reversed_counts = [{bits[::-1]: n for bits, n in c.items()} for c in counts]
            registers = {ANALOG_REGISTER: (reversed_counts, circuit.num_qubits)}
        elif circuit.num_clbits == 0:  # the programs layer measured every qubit into "meas"
            registers = {"meas": (counts, circuit.num_qubits)}
        else:
            split = [_registers(c, circuit) for c in counts]
            registers = {
                creg.name: ([s[creg.name] for s in split], creg.size) for creg in circuit.cregs
            }
        shape = pub.parameter_values.shape
        fields = {
            name: BitArray.from_counts(bits, num_bits).reshape(shape)
            for name, (bits, num_bits) in registers.items()
        }
        metadata = {"shots": pub.shots, "jobs": [f"{job.target}:{job.id}" for job in jobs]}
        return SamplerPubResult(DataBin(**fields, shape=shape), metadata=metadata)

    def status(self) -> JobStatus:
        statuses = {job.refresh().status for pub_jobs in self.jobs for job in pub_jobs}
        for status, qiskit in (("ERROR", JobStatus.ERROR), ("CANCELED", JobStatus.CANCELLED)):
            if status in statuses:
                return qiskit
        if statuses <= {"DONE"}:
            return JobStatus.DONE
        return JobStatus.RUNNING if "RUNNING" in statuses else JobStatus.QUEUED

    def done(self) -> bool:
        return self.status() == JobStatus.DONE

    def running(self) -> bool:
        return self.status() == JobStatus.RUNNING

    def cancelled(self) -> bool:
        return self.status() == JobStatus.CANCELLED

    def in_final_state(self) -> bool:
        return all(job.refresh().final for pub_jobs in self.jobs for job in pub_jobs)

    def cancel(self) -> None:
        for pub_jobs in self.jobs:
            for job in pub_jobs:
                job.cancel()


def _registers(counts: dict[str, int], circuit: QuantumCircuit) -> dict[str, dict[str, int]]:
    """Whole-circuit counts split per classical register (Qiskit's order: the first register
    rightmost; Aer separates registers with spaces)."""
    out: dict[str, dict[str, int]] = {creg.name: {} for creg in circuit.cregs}
    for key, n in counts.items():
        bits = key.replace(" ", "")[::-1]  # bit 0 first
        start = 0
        for creg in circuit.cregs:
            part = bits[start : start + creg.size][::-1]
            out[creg.name][part] = out[creg.name].get(part, 0) + n
            start += creg.size
    return out
