"""The cluster emulator target: an emulation too large for the kernel, as a batch job.

A submission writes the program into a folder of the user's batch ledger (shared storage the
compute nodes see), submits ``python -m qhpc_lab.cli emulate program.json --out result.json``
through the batch-system seam (:mod:`qhpc_lab.batch`) with the resources the site configured,
and records the batch job in the folder's ``entry.json``. The job's state is the batch job's:
pending with the batch system's reason and start estimate, running on a node, done with the
counts, the engine and its approximation read from the result file, or an error naming the
limit that stopped it. Everything lives in the ledger, so another kernel, or this one after a
restart, follows the same jobs.
"""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import sys
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qhpc_lab.batch import (
    BatchEntry,
    BatchError,
    BatchJob,
    BatchLedger,
    BatchRequest,
    BatchState,
    BatchSystem,
    batch_system,
)
from qhpc_lab.client._target import (
    JobState,
    LoopMark,
    Quota,
    RefusedError,
    Target,
    TargetError,
    TargetInfo,
)
from qhpc_lab.programs import FORMATS, DeviceSpec, Program, ProgramError
from qhpc_lab.vocabulary import DeviceState, JobStatus, format_duration
from qhpc_lab.wire.times import iso_time

if TYPE_CHECKING:
    from qhpc_lab.emulators import Emulation, EnginePlan

KIND = "cluster-emulator"
POLL_S = 5.0
"""How often a watched job's batch job is asked about: a batch system is no event stream, and
its commands cost its controller, so every few seconds."""
PROGRAM_FILE = "program.json"
RESULT_FILE = "result.json"
OUTPUT_FILE = "output.txt"
SYSTEM_WORDS = {"slurm": "Slurm", "gridengine": "Grid Engine"}
FINAL_DETAIL = "final"
"""The key of an entry's ``details`` that keeps the job's end once seen: a batch system
forgets ended jobs (Slurm without accounting after ``MinJobAge``)."""


@dataclass(frozen=True)
class BatchResources:
    """What every batch job of a cluster emulator target asks for (the site's settings)."""

    partition: str | None = None
    account: str | None = None
    time_limit_s: int | None = None
    memory_mb: int | None = None
    cpus: int | None = None
    gpus: int | None = None
    extra: tuple[str, ...] = ()

    def threads(self) -> dict[str, str]:
        """The job's variables that keep PyTorch's threads to the CPUs the job holds: more
        threads than CPUs contend, and slow an emulation many times over on a busy node."""
        return {"OMP_NUM_THREADS": str(self.cpus)} if self.cpus else {}

    def __str__(self) -> str:
        parts = [f"partition {self.partition}"] if self.partition else []
        if self.account:
            parts.append(f"account {self.account}")
        if self.time_limit_s:
            parts.append(f"time limit {format_duration(self.time_limit_s)}")
        if self.memory_mb:
            parts.append(f"{self.memory_mb} MB")
        if self.cpus:
            parts.append(f"{self.cpus} CPUs")
        if self.gpus:
            parts.append(f"{self.gpus} GPUs")
        return ", ".join(parts) or "the batch system's defaults"


@dataclass(frozen=True)
class EmulationOptions:
    """The engine settings given to ``qhpc emulate`` (None: its own choice)."""

    engine: str | None = None
    max_bond_dim: int | None = None
    precision: float | None = None

    def arguments(self, gpus: int | None) -> tuple[str, ...]:
        words: list[str] = []
        if self.engine:
            words += ["--engine", self.engine]
        if self.max_bond_dim is not None:
            words += ["--max-bond-dim", str(self.max_bond_dim)]
        if self.precision is not None:
            words += ["--precision", repr(self.precision)]
        return (*words, "--device", "gpu" if gpus else "cpu")


class ClusterEmulatorTarget(Target):
    kind = KIND

    def __init__(
        self,
        name: str,
        origin: str,
        *,
        environ: Mapping[str, str],
        scheduler: str | None = None,
        resources: BatchResources = BatchResources(),
        options: EmulationOptions = EmulationOptions(),
        python: str | None = None,
        batch_dir: Path | None = None,
        device: str | None = None,
        poll_s: float = POLL_S,
        fallback_above_s: float | None = None,
        fallback_above_memory_mb: int | None = None,
    ) -> None:
        """``scheduler``: ``slurm`` or ``gridengine`` (None: the one in reach, found when
        first used); ``python``: the interpreter the batch job runs (default: this kernel's);
        ``batch_dir``: the ledger (default ``$QHPC_BATCH_DIR`` or ``~/.local/share/qhpc/batch``);
        ``device``: a profile programs are checked against before submission; the fallback
        thresholds: past them a program leaves the in-kernel emulator for this target."""
        super().__init__(name, KIND, origin)
        self._environ = dict(environ)
        self._scheduler = scheduler
        self.resources = resources
        self.options = options
        self.python = python or sys.executable
        self.ledger = BatchLedger(batch_dir) if batch_dir else BatchLedger.default(environ)
        self._device = device
        self._spec: DeviceSpec | None = None
        self.poll_s = poll_s
        self.fallback_above_s = fallback_above_s
        self.fallback_above_memory_mb = fallback_above_memory_mb
        self._system: BatchSystem | None = None

    @property
    def fallback_limits(self) -> tuple[float | None, int | None]:
        """Past these (seconds, MB) a program falling back to the in-kernel emulator comes
        here (None: the client's defaults)."""
        return self.fallback_above_s, self.fallback_above_memory_mb

    # -- the batch system -------------------------------------------------------------------

    def _batch(self) -> BatchSystem:
        """The batch system, found once; TargetError naming what was looked for."""
        if self._system is None:
            try:
                self._system = batch_system(self._scheduler, self._environ)
            except BatchError as err:
                raise TargetError(f"target {self.name!r}: {err}") from None
        return self._system

    async def info(self) -> TargetInfo:
        try:
            system = self._batch()
        except TargetError as err:
            return self.unreachable(str(err))
        if self._device and self._spec is None:
            from qhpc_lab.qpu import DeviceProfile

            try:
                self._spec = await asyncio.to_thread(lambda: DeviceProfile.load(self._device).spec)
            except (ValueError, OSError) as err:
                return self.unreachable(f"target {self.name!r}: {err}")
        words = _words(system.name)
        return TargetInfo(
            self.name,
            self.kind,
            self.type,
            self.origin,
            True,
            device=self._spec.name if self._spec else f"emulator on {words}",
            state=DeviceState.ONLINE,
            message=f"emulation as {words} batch jobs ({self.resources})",
            spec=self._spec,
            formats=self._spec_formats(),
        )

    def _spec_formats(self) -> tuple[str, ...]:
        """What ``qhpc emulate`` runs: every format, or the device's (pulser) with one."""
        return ("pulser",) if self._spec is not None else FORMATS

    # -- submit -----------------------------------------------------------------------------

    async def submit(
        self,
        program: Program,
        job_class: str | None,
        single_calibration: bool = False,
        max_calibration_age_s: float | None = None,
        loop: LoopMark | None = None,
    ) -> JobState:
        """Plan the emulation (a program the engines cannot read is refused here, before any
        batch job), then submit it; ``job_class`` and the calibration options have no
        meaning for an emulator (it never calibrates nor drifts)."""
        system = self._batch()
        plan = await asyncio.to_thread(_plan, program, self.options)
        entry = await asyncio.to_thread(self._submit, system, program, plan)
        return await self._read(entry)

    def _submit(self, system: BatchSystem, program: Program, plan: EnginePlan) -> BatchEntry:
        folder = self.ledger.new_folder("emulation")
        try:
            (folder / PROGRAM_FILE).write_text(program.to_json())
            title = program.name or f"{plan.atoms}-atom program"
            request = BatchRequest(
                command=(
                    self.python,
                    "-m",
                    "qhpc_lab.cli",
                    "emulate",
                    PROGRAM_FILE,
                    "--out",
                    RESULT_FILE,
                    *self.options.arguments(self.resources.gpus),
                ),
                name=f"qhpc-emulate-{folder.name.rsplit('-', 1)[-1]}",
                workdir=folder,
                output=folder / OUTPUT_FILE,
                time_limit_s=self.resources.time_limit_s,
                partition=self.resources.partition,
                account=self.resources.account,
                cpus=self.resources.cpus,
                memory_mb=self.resources.memory_mb,
                gpus=self.resources.gpus,
                environment=self.resources.threads(),
                extra=self.resources.extra,
            )
            job_id = system.submit(request)
        except BatchError as err:
            shutil.rmtree(folder, ignore_errors=True)
            raise RefusedError(
                f"{_words(system.name)} refused the emulation: {err}",
                rule="batch",
            ) from None
        except OSError as err:
            shutil.rmtree(folder, ignore_errors=True)
            raise TargetError(f"target {self.name!r}: cannot write {folder}: {err}") from None
        return self.ledger.add(
            BatchEntry(
                id=folder.name,
                kind="emulation",
                title=title,
                system=system.name,
                job_id=job_id,
                submitted_at=datetime.now(UTC),
                folder=folder,
                files={
                    "program": PROGRAM_FILE,
                    "result": RESULT_FILE,
                    "output": OUTPUT_FILE,
                },
                details={
                    "target": self.name,
                    "shots": program.shots,
                    "engine": plan.engine,
                    "atoms": plan.atoms,
                    "estimate_s": plan.seconds,
                    "memory_bytes": plan.memory_bytes,
                },
            )
        )

    # -- follow -----------------------------------------------------------------------------

    def _entry(self, job_id: str) -> BatchEntry:
        """The ledger's entry for ``job_id``: its folder name, or the batch job's id."""
        entry = self.ledger.get(job_id)
        if entry is None:
            entry = next((e for e in self.ledger.entries("emulation") if e.job_id == job_id), None)
        if entry is None:
            raise RefusedError(
                f"job {job_id} not found on target {self.name!r} (ledger {self.ledger.directory})",
                404,
            )
        return entry

    async def state(self, job_id: str) -> JobState:
        entry = await asyncio.to_thread(self._entry, job_id)
        return await self._read(entry)

    async def _read(self, entry: BatchEntry) -> JobState:
        """The job's state: kept in the entry once final, else the batch job's now."""
        final = entry.details.get(FINAL_DETAIL)
        if final is not None:
            return _restored(entry, final)
        return await asyncio.to_thread(self._read_now, entry)

    def _read_now(self, entry: BatchEntry) -> JobState:
        system = self._system_of(entry)
        try:
            batch: BatchJob | None = system.job(entry.job_id, entry.folder)
        except BatchError:
            batch = None  # forgotten, and its folder says nothing: the result file tells
        state = _state(entry, batch, _words(system.name))
        if state.final:
            self.ledger.update(entry, details={**entry.details, FINAL_DETAIL: _stored(state)})
        return state

    def _system_of(self, entry: BatchEntry) -> BatchSystem:
        own = self._batch()
        if entry.system == own.name:
            return own
        return batch_system(entry.system, self._environ)

    async def cancel(self, job_id: str) -> JobState:
        entry = await asyncio.to_thread(self._entry, job_id)
        state = await self._read(entry)
        if state.final:
            return state
        system = self._system_of(entry)
        try:
            await asyncio.to_thread(system.cancel, entry.job_id, entry.folder)
        except BatchError as err:
            raise TargetError(f"cannot cancel batch job {entry.job_id}: {err}") from None
        return await self._settled(entry)

    async def _settled(self, entry: BatchEntry) -> JobState:
        """The state once the batch system shows the cancel (a few polls at most)."""
        state = await self._read(entry)
        for _ in range(10):
            if state.final:
                break
            await asyncio.sleep(min(self.poll_s, 1.0))
            state = await self._read(entry)
        return state

    async def watch(self, job_id: str) -> AsyncIterator[JobState]:
        entry = await asyncio.to_thread(self._entry, job_id)
        state = await self._read(entry)
        yield state
        while not state.final:
            await asyncio.sleep(self.poll_s)
            now = await self._read(entry)
            if now != state:
                state = now
                yield state

    async def jobs(self) -> list[JobState]:
        """The ledger's emulations submitted through this target, from any kernel, oldest
        first."""
        entries = await asyncio.to_thread(self.ledger.entries, "emulation")
        mine = [e for e in reversed(entries) if e.details.get("target") == self.name]
        return list(await asyncio.gather(*(self._read(e) for e in mine)))

    async def logs(self, job_id: str) -> str:
        """The batch job's output (the emulation's own log), after what the ledger says."""
        entry = await asyncio.to_thread(self._entry, job_id)
        state = await self._read(entry)
        output = entry.folder / entry.files.get("output", OUTPUT_FILE)
        try:
            text = await asyncio.to_thread(output.read_text, errors="replace")
        except OSError:
            text = "(no output yet)"
        head = (
            f"job {entry.id} ({entry.title}): {state.status}, "
            f"{_words(entry.system)} job {entry.job_id}, "
            f"folder {entry.folder}"
        )
        facts = [head, *(fact for fact in (state.detail, state.error) if fact)]
        return "\n".join([*facts, f"--- {output.name}", text.rstrip()])

    async def quotas(self) -> list[Quota] | None:
        """None: the batch system's accounting keeps what a site charges for."""
        return None


def _words(system: str) -> str:
    """``Slurm``, ``Grid Engine``: the batch system as a user names it."""
    return SYSTEM_WORDS.get(system, system)


def _plan(program: Program, options: EmulationOptions) -> EnginePlan:
    """The emulation's plan; RefusedError (before any batch job) where the engines cannot
    read the program or the engine asked for cannot run it."""
    from qhpc_lab import emulators

    try:
        return emulators.plan(program, options.engine, options.max_bond_dim)
    except (ProgramError, ValueError, KeyError, TypeError) as err:
        rule = err.rule if isinstance(err, ProgramError) else "program"
        raise RefusedError(f"the program cannot be emulated: {err}", rule=rule) from None


def _state(entry: BatchEntry, batch: BatchJob | None, system: str) -> JobState:
    """The JobState of ``entry`` given its batch job as the batch system describes it
    (None: the batch system no longer knows it)."""
    base = JobState(
        entry.id,
        JobStatus.PENDING,
        shots=entry.details.get("shots"),
        created_at=entry.submitted_at,
    )
    job = f"{system} job {entry.job_id}"
    if batch is None or batch.state == BatchState.COMPLETED:
        return _ended(entry, batch, job, base)
    times = {"started_at": batch.started_at, "finished_at": batch.finished_at}
    if batch.state == BatchState.PENDING:
        return dataclasses.replace(base, detail=_waiting(job, batch))
    if batch.state == BatchState.RUNNING:
        gpus = f", {batch.gpus}" if batch.gpus else ""
        return dataclasses.replace(
            base,
            status=JobStatus.RUNNING,
            position=0,
            detail=f"{job} running on {batch.node or 'a node'}{gpus}",
            **times,
        )
    if batch.state == BatchState.CANCELLED:
        return dataclasses.replace(
            base, status=JobStatus.CANCELED, detail=f"{job} canceled", **times
        )
    return dataclasses.replace(
        base, status=JobStatus.ERROR, error=_failure(entry, batch, job), **times
    )


def _waiting(job: str, batch: BatchJob) -> str:
    """``Slurm job 42 waits (Resources), expected to start at 18:05:10 UTC (in ~3 min)``."""
    words = f"{job} waits" + (f" ({batch.reason})" if batch.reason else "")
    if batch.start_estimate is not None:
        left = (batch.start_estimate - datetime.now(UTC)).total_seconds()
        at = iso_time(batch.start_estimate, sep=" ", timespec="seconds")
        words += f", expected to start at {at}"
        if left > 0:
            words += f" (in ~{format_duration(left)})"
    return words


def _ended(entry: BatchEntry, batch: BatchJob | None, job: str, base: JobState) -> JobState:
    """A batch job that completed, or that the batch system forgot: the result file says."""
    times = {} if batch is None else {"started_at": batch.started_at}
    result = entry.folder / entry.files.get("result", RESULT_FILE)
    from qhpc_lab.emulators import Emulation

    try:
        emulation = Emulation.from_json(result.read_text())
    except FileNotFoundError:
        if batch is None:
            return dataclasses.replace(
                base,
                status=JobStatus.ERROR,
                error=f"{job} is no longer known and left no result: {_last_line(entry)}",
            )
        return dataclasses.replace(
            base,
            status=JobStatus.ERROR,
            error=f"{job} ended without a result: {_last_line(entry)}",
            finished_at=batch.finished_at,
            **times,
        )
    except (OSError, ValueError, KeyError, TypeError) as err:
        return dataclasses.replace(
            base, status=JobStatus.ERROR, error=f"{job}'s result {result} is unreadable: {err}"
        )
    counts = dict(emulation.counts)
    finished = batch.finished_at if batch and batch.finished_at else datetime.now(UTC)
    where = f"{emulation.node}, {emulation.device}"
    return dataclasses.replace(
        base,
        status=JobStatus.DONE,
        counts=counts,
        shots_done=sum(counts.values()),
        finished_at=finished,
        engine=str(emulation.engine),
        approximation=_approximation(emulation),
        detail=f"{job} ran on {where} in {format_duration(emulation.seconds)}",
        **times,
    )


def _approximation(emulation: Emulation) -> str | None:
    """How the counts are approximate, in words; None where the engine is exact."""
    return None if emulation.approximation is None else emulation.approximation.describe()


def _failure(entry: BatchEntry, batch: BatchJob, job: str) -> str:
    """One line: the limit that stopped the batch job, else the emulation's last words."""
    if batch.limit:
        return (
            f"{job} was stopped at its {batch.limit}: the emulation needs more "
            "(raise the target's limit, or shrink the program)"
        )
    code = f" (exit {batch.exit_code})" if batch.exit_code is not None else ""
    return f"{job} failed{code}: {_last_line(entry)}"


def _last_line(entry: BatchEntry) -> str:
    """The last non-empty line of the batch job's output: the emulation's own error."""
    output = entry.folder / entry.files.get("output", OUTPUT_FILE)
    try:
        lines = [line.strip() for line in output.read_text(errors="replace").splitlines()]
    except OSError:
        return f"no output in {output}"
    return next((line for line in reversed(lines) if line), f"{output} is empty")


STORED = ("status", "error", "detail", "engine", "approximation", "counts", "shots_done")


def _stored(state: JobState) -> dict[str, Any]:
    """A final state as the entry keeps it (JSON)."""
    kept: dict[str, Any] = {name: getattr(state, name) for name in STORED}
    for name in ("started_at", "finished_at"):
        moment = getattr(state, name)
        kept[name] = None if moment is None else iso_time(moment)
    return kept


def _restored(entry: BatchEntry, kept: Mapping[str, Any]) -> JobState:
    times = {
        name: datetime.fromisoformat(kept[name]) if kept.get(name) else None
        for name in ("started_at", "finished_at")
    }
    return JobState(
        entry.id,
        str(kept["status"]),
        shots=entry.details.get("shots"),
        created_at=entry.submitted_at,
        **{name: kept.get(name) for name in STORED if name != "status"},
        **times,
    )
