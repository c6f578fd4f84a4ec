"""The QRMI target: any resource type the ``qrmi`` package knows, one resource per target.

A ``qrmi.QuantumResource`` is not thread-safe ("Already borrowed"), so each target serialises
its calls behind its own lock, in worker threads (qrmi blocks). The resource is made on first
use and a failure is this target's alone: the others keep working. QRMI has no event stream,
so waiting polls the task with a backoff.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Mapping
from typing import Any

from qhpc_lab.client._target import (
    JobState,
    LoopMark,
    RefusedError,
    Target,
    TargetError,
    TargetInfo,
)
from qhpc_lab.programs import DeviceSpec, Program
from qhpc_lab.vocabulary import JobStatus

RESOURCE_TYPES = {
    "alice-bob-felis": "AliceBobFelis",
    "ibm-quantum-compute-service": "IBMQuantumComputeService",
    "ibm-quantum-system": "IBMQuantumSystem",
    "iqm-server": "IQMServer",
    "oqtopus": "OQTOPUS",
    "pasqal-cloud": "PasqalCloud",
    "pasqal-local": "PasqalLocal",
    "qiskit-runtime-service": "IBMQiskitRuntimeService",
}
"""QRMI's resource type names (as in ``QRMI_JOB_QPU_TYPES``) → ``qrmi.ResourceType``."""

PULSER_TYPES = ("pasqal-cloud", "pasqal-local")
"""Types that take Pulser sequences; other types are listed but refuse programs for now."""

STATUSES = {
    "Queued": JobStatus.PENDING,
    "Running": JobStatus.RUNNING,
    "Completed": JobStatus.DONE,
    "Failed": JobStatus.ERROR,
    "Cancelled": JobStatus.CANCELED,
}
POLL_MAX_S = 2.0


class QRMITarget(Target):
    kind = "qrmi"
    bounds_calibration_age = False

    def __init__(
        self,
        name: str,
        type: str,
        *,
        origin: str,
        config: Mapping[str, str] | None = None,
        job_timeout_s: float | None = None,
    ) -> None:
        """``config``: settings for ``qrmi.QuantumResource.from_config``; without it the
        resource reads its ``{name}_QRMI_*`` environment variables, as QRMI's own clients do."""
        super().__init__(name, type, origin, job_timeout_s)
        self._config = dict(config) if config else None
        self._lock = threading.Lock()
        self._resource: Any = None
        self._spec: DeviceSpec | None = None
        self._shots: dict[str, int] = {}

    def _call(self, method: str, *args: Any) -> Any:
        """Blocking: one call at a time on this resource, made on first use."""
        with self._lock:
            if self._resource is None:
                self._resource = self._construct()
            return getattr(self._resource, method)(*args)

    def _construct(self) -> Any:
        import qrmi

        if self.type not in RESOURCE_TYPES:
            raise ValueError(
                f"unknown QRMI resource type {self.type!r}; known: {', '.join(RESOURCE_TYPES)}"
            )
        kind = getattr(qrmi.ResourceType, RESOURCE_TYPES[self.type])
        if self._config is not None:
            return qrmi.QuantumResource.from_config(self.name, kind, self._config)
        return qrmi.QuantumResource(self.name, kind)

    async def _qrmi(self, method: str, *args: Any) -> Any:
        try:
            return await asyncio.to_thread(self._call, method, *args)
        except Exception as err:  # qrmi raises RuntimeError subclasses, construction ValueError
            raise TargetError(f"QRMI resource {self.name!r} ({self.type}): {err}") from None

    async def info(self) -> TargetInfo:
        try:
            status = await self._qrmi("status")
            if self._spec is None and self.type in PULSER_TYPES:
                self._spec = _pulser_spec((await self._qrmi("target")).value)
        except TargetError as err:
            return self.unreachable(str(err))
        code = str(status.status).rsplit(".", 1)[-1].upper()
        return TargetInfo(
            self.name,
            self.kind,
            self.type,
            self.origin,
            True,
            device=self._spec.name if self._spec else self.name,
            state=code,
            message=status.status_reason or "",
            spec=self._spec,
            formats=("pulser",) if self.type in PULSER_TYPES else (),
        )

    async def submit(
        self,
        program: Program,
        job_class: str | None,
        single_calibration: bool = False,
        max_calibration_age_s: float | None = None,
        loop: LoopMark | None = None,
    ) -> JobState:
        """Pulser programs to Pasqal resources (``info`` says so: the client refuses others
        before this); ``job_class`` is the scheduler's notion only, and ``single_calibration``
        and ``max_calibration_age_s`` are refused: a QRMI resource promises no calibration."""
        import qrmi

        if single_calibration:
            raise RefusedError(
                f"target {self.name!r} ({self.type}) cannot keep a job under one calibration; "
                "submit without single_calibration or to a scheduler target"
            )
        if max_calibration_age_s is not None:
            raise RefusedError(
                f"target {self.name!r} ({self.type}) cannot bound a job's calibration age; "
                "submit without max_calibration_age_s or to a scheduler target"
            )
        sequence = await asyncio.to_thread(_built, program)
        task_id = await self._qrmi("task_start", qrmi.Payload.PasqalCloud(sequence, program.shots))
        self._shots[task_id] = program.shots
        return await self.state(task_id)

    async def state(self, job_id: str) -> JobState:
        status = STATUSES.get(str(await self._qrmi("task_status", job_id)).rsplit(".", 1)[-1])
        counts, error = None, None
        if status == JobStatus.DONE:
            counts = json.loads((await self._qrmi("task_result", job_id)).value)["counter"]
        elif status in (None, JobStatus.ERROR):
            status, error = JobStatus.ERROR, f"the task failed on QRMI resource {self.name!r}"
        shots = self._shots.get(job_id)
        done = sum(counts.values()) if counts else 0
        return JobState(job_id, status, shots=shots, shots_done=done, counts=counts, error=error)

    async def cancel(self, job_id: str) -> JobState:
        state = await self.state(job_id)
        if state.final:
            return state
        await self._qrmi("task_stop", job_id)
        return await self.state(job_id)

    async def logs(self, job_id: str) -> str:
        """QRMI's ``task_logs``: what the resource keeps (a ``pasqal-local`` one: the
        scheduler's story of the job); a resource that keeps none is said to."""
        try:
            text = await self._qrmi("task_logs", job_id)
        except TargetError as err:
            raise TargetError(f"{err} (while reading the logs of task {job_id})") from None
        return str(text) or f"QRMI resource {self.name!r} ({self.type}) has no logs of {job_id}"

    async def watch(self, job_id: str) -> AsyncIterator[JobState]:
        state = await self.state(job_id)
        yield state
        delay = 0.1
        while not state.final:
            await asyncio.sleep(delay)
            delay = min(POLL_MAX_S, delay * 1.5)
            new = await self.state(job_id)
            if new != state:
                state = new
                yield state


def _built(program: Program) -> str:
    """The sequence with its variables bound: QRMI's payload takes a built sequence."""
    if not program.variables:
        return program.body
    from pulser import Sequence

    return Sequence.from_abstract_repr(program.body).build(**program.variables).to_abstract_repr()


def _pulser_spec(target: str) -> DeviceSpec | None:
    """Pasqal resources describe devices as ``[{device_type, specs}]`` (Pasqal Cloud's form)."""
    try:
        devices = json.loads(target)
        specs = devices[0]["specs"] if isinstance(devices, list) else devices
        return DeviceSpec(specs if isinstance(specs, str) else json.dumps(specs))
    except (ValueError, KeyError, IndexError, TypeError):
        return None
