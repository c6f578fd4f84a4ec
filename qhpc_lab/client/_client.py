"""The client: discovered targets, the one ``submit()`` uses by default, and this process's jobs.

The module-level functions of :mod:`qhpc_lab` act on one default :class:`Client`, made on
first use from the process environment; magics and scripts share it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import sys
import threading
import warnings
from collections.abc import Coroutine, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import httpx

from qhpc_lab.client import _loop
from qhpc_lab.client._cluster import ClusterEmulatorTarget
from qhpc_lab.client._discovery import CLUSTER_EMULATOR, EMULATOR, discover
from qhpc_lab.client._emulator import EmulatorTarget
from qhpc_lab.client._hybrid import Loop
from qhpc_lab.client._job import Job
from qhpc_lab.client._routing import AUTO, Answer, choose, kernel_fit
from qhpc_lab.client._target import (
    ClientError,
    Estimate,
    JobState,
    Quota,
    RefusedError,
    Target,
    TargetError,
    TargetInfo,
)
from qhpc_lab.programs import (
    DeviceRuleViolation,
    NativeProgram,
    Program,
    ProgramError,
    format_refusal,
    to_program,
    validate,
)
from qhpc_lab.wire import batchrun

T = TypeVar("T")

CELL_JOB_CLASS = "development"
"""The class of interactive (``%%qpu``) work on a target that names none for it."""


def _class_for(
    job_class: str | None,
    interactive: bool,
    info: TargetInfo | None = None,
    run_class: str | None = None,
) -> str | None:
    """The class to send: the one named; in a notebook run, the run's (``run_class``, from
    :data:`qhpc_lab.wire.batchrun.JOB_CLASS`); for a cell, the class ``info``'s target keeps
    for cells (:data:`CELL_JOB_CLASS` where it names none, or before a target is chosen); else
    None, the target's own default."""
    if job_class is not None or run_class is not None or not interactive:
        return job_class or run_class
    return (info.cell_job_class if info else None) or CELL_JOB_CLASS


PROBE_TIMEOUT_S = 5.0
"""How long a target may take to answer a probe before it counts as unreachable."""


def announce(message: str) -> None:
    """One visible line on stderr: what the client decided for the user (never silent)."""
    print(f"qhpc: {message}", file=sys.stderr, flush=True)


class Client:
    """Targets found by discovery, where submissions go, and the jobs submitted through it."""

    def __init__(
        self,
        environ: Mapping[str, str] | None = None,
        targets_file: str | Path | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        """Discover targets in ``environ`` (default: the process environment) and the
        targets file (default: ``$QHPC_TARGETS_FILE`` or ``~/.config/qhpc/targets.toml``).
        ``transport``: what the scheduler targets' requests go through (default: httpx's
        own); a test passes one to count or inspect them."""
        environ = os.environ if environ is None else environ
        found = discover(environ, targets_file, transport)
        self._run_class = environ.get(batchrun.JOB_CLASS) or None
        for problem in found.problems:
            announce(problem)
        self._targets: dict[str, Target] = found.targets
        self._default = found.default
        self._from_job = found.from_job
        self._sources = found.sources
        self._current: str | None = None
        self._chosen: Target | None = None
        self._ready: dict[str, TargetInfo] = {}
        self._jobs: list[Job] = []
        self._lock = threading.Lock()
        self.active_loop: Loop | None = None
        """The hybrid loop submissions join (:meth:`loop`, :meth:`start_loop`)."""

    def targets(self) -> list[TargetInfo]:
        """Probe every target (concurrently; a broken one is listed with its reason)."""
        return self._select(_loop.call(self._probe_all()))

    async def atargets(self) -> list[TargetInfo]:
        """:meth:`targets` for async code: the caller's loop (a kernel's) stays free."""
        return self._select(await _loop.acall(self._probe_all()))

    def _select(self, infos: list[TargetInfo]) -> list[TargetInfo]:
        """Mark where ``submit()`` goes: the chosen or default target, or every one of the
        job's QPU resources when it chooses among them."""
        if self._current is None and len(self._from_job) > 1:
            selected = set(self._from_job)
        else:
            selected = {self._current or self._default_target().name}
        return [dataclasses.replace(i, selected=i.name in selected) for i in infos]

    def target_info(self, name: str | None = None) -> TargetInfo:
        """The info of target ``name`` (default: where ``submit()`` goes), probed unless
        already known; TargetError if it is unknown or unreachable. For SDK front-ends
        (:mod:`qhpc_lab.bridges`) that need the device before building a program."""
        return self._resolve(name)[1]

    def use(self, name: str) -> TargetInfo:
        """Send later submissions to ``name``; TargetError if it is unknown or unreachable."""
        target, info = self._resolve(name)
        self._current = target.name
        return dataclasses.replace(info, selected=True)

    def submit(
        self,
        program: Any,
        shots: int | None = None,
        target: str | None = None,
        job_class: str | None = None,
        name: str | None = None,
        *,
        single_calibration: bool = False,
        max_calibration_age_s: float | None = None,
        interactive: bool = False,
        variables: list[dict[str, Any]] | dict[str, Any] | None = None,
        **values: Any,
    ) -> Job:
        """Check ``program`` against the target's device and queue it.

        ``program``: a Pulser Sequence, a Qiskit circuit (analog ``HamiltonianGate`` ones of
        qiskit-pasqal-provider become Pulser), a Qadence circuit (analog: Pulser on the
        target's device; digital: pyqtorch on the emulator target) or a :class:`Program`
        (whose shots, name and variables the arguments override); see
        :func:`qhpc_lab.programs.to_program`. ``target``: a name from
        ``targets()``; unreachable → TargetError, never a fallback. ``"auto"``: the QPU
        target (the job's QRMI resources, else every QPU target found) whose device accepts
        the program and that would finish it first, announced with the reason
        (:attr:`Job.route`). Without it: the target chosen by ``use()``, else ``"auto"``
        when the job has several QPU resources, else the default, else the emulator
        (announced). ``job_class``: production, test or development on a scheduler.
        ``single_calibration``: all its shots under one calibration (a scheduler restarts it
        if one intervenes, docs/policy.md). ``max_calibration_age_s``: every shot starts
        within that age of a calibration (a scheduler calibrates early for it; a QRMI
        resource refuses it).
        ``values`` (keywords) bind a parametrised Pulser sequence, or a Qiskit or Qadence
        circuit's parameters; ``variables`` as a dict binds them too. ``variables`` as a list
        of dicts is a sweep: one job on a scheduler target that runs the program once per
        point, ``shots`` each, the keywords common to all (checked here with the first point;
        :attr:`Result.sets` holds each point's counts). A format the target does not run (a
        gate circuit, qasm3, on the analog QPU) is a RefusedError (rule ``format``) before
        anything is sent. ``interactive``: work from a notebook cell (``%%qpu``): without
        ``job_class``, the class the target keeps for cells
        (:attr:`TargetInfo.cell_job_class`, else ``development``).
        """
        points = _points(variables)
        if isinstance(variables, dict):
            values = {**variables, **values}
        chosen, converted, info, route = self._place(
            program,
            shots,
            target,
            name,
            values if points is None else {**values, **points[0]},
            _class_for(job_class, interactive, run_class=self._run_class),
            max_calibration_age_s,
        )
        if isinstance(converted, NativeProgram):
            if points is not None:
                raise RefusedError(f"{converted.what} cannot run as a sweep", rule="sweep")
            return self._submit_native(converted, chosen)
        job_class = _class_for(job_class, interactive, info, self._run_class)
        sweep = None
        if points is not None:
            sweep = [(converted.shots, point) for point in points]
            converted = dataclasses.replace(converted, variables=values)
        return self._queue(
            chosen,
            converted,
            info,
            job_class,
            single_calibration,
            max_calibration_age_s,
            route,
            sweep,
        )

    def estimate(
        self,
        program: Any,
        shots: int | None = None,
        target: str | None = None,
        job_class: str | None = None,
        *,
        max_calibration_age_s: float | None = None,
        interactive: bool = False,
        **variables: Any,
    ) -> Estimate | None:
        """Where ``program`` would stand if submitted now, nothing queued: the target
        :meth:`submit` would choose (announced likewise), after the same checks, asked for
        its place in line and when it would start and end (a scheduler's ``GET /estimate``,
        in the caller's fair-share account). None where the target cannot say (the
        emulator, QRMI resources, a plain Warden). ``interactive``: as for :meth:`submit`."""
        chosen, converted, info, _ = self._place(
            program,
            shots,
            target,
            None,
            variables,
            _class_for(job_class, interactive, run_class=self._run_class),
            max_calibration_age_s,
        )
        if isinstance(converted, NativeProgram):
            return None
        job_class = _class_for(job_class, interactive, info, self._run_class)
        return _loop.call(chosen.estimate(converted.shots, job_class, max_calibration_age_s))

    def _place(
        self,
        program: Any,
        shots: int | None,
        target: str | None,
        name: str | None,
        variables: dict[str, Any],
        job_class: str | None,
        max_calibration_age_s: float | None,
    ) -> tuple[Target, Program | NativeProgram, TargetInfo, str | None]:
        """Where :meth:`submit` sends ``program`` (a choice among several QPUs is announced)
        and the program converted for that target's device and checked against it; with
        the target's info and the reason of a choice (None when there was none)."""
        named = target or self._current
        if named == AUTO or (named is None and len(self._from_job) > 1):
            try:
                chosen, converted, info, route = _loop.call(
                    self._aroute(program, shots, name, variables, job_class, max_calibration_age_s)
                )
            except TargetError as err:
                if named == AUTO:
                    raise
                announce(f"{err}; programs run on the local emulator instead")
                chosen, info = self._resolve(EMULATOR)
            else:
                announce(route)
                return chosen, converted, info, route
        else:
            chosen, info = self._resolve(target)
        converted = to_program(program, shots, info.spec, name, **variables)
        if named is None and chosen.name == EMULATOR and isinstance(converted, Program):
            # the fallback: a program too large for the kernel goes to the cluster emulator
            beyond = self._beyond_kernel(converted)
            if beyond is not None:
                chosen, info = beyond
                converted = to_program(program, shots, info.spec, name, **variables)
        if not isinstance(converted, NativeProgram):
            _check(converted, info)
        return chosen, converted, info, None

    def _beyond_kernel(self, program: Program) -> tuple[Target, TargetInfo] | None:
        """Where a program that fell back to the in-kernel emulator goes instead when
        :func:`qhpc_lab.emulators.plan` says it is too large for this kernel's machine: the
        first cluster emulator target, announced. None when it fits (or cannot be planned:
        the emulator then says why); RefusedError, with the estimate, where no cluster
        emulator can take it."""
        first = next(
            (t for t in self._targets.values() if isinstance(t, ClusterEmulatorTarget)), None
        )
        limits = (None, None) if first is None else first.fallback_limits
        try:
            size = kernel_fit(program, *limits)
        except ProgramError:
            return None
        if size.fits:
            return None
        if first is None:
            raise RefusedError(
                f"{size}: no cluster emulator is configured to take it (a "
                f'[targets.NAME] table with type = "{CLUSTER_EMULATOR}", docs/client.md); '
                "target='emulator' runs it here anyway",
                rule="kernel_limit",
            )
        info = self._probe(first)
        if not info.reachable:
            raise TargetError(f"{size}, and the cluster emulator is unreachable: {info.message}")
        announce(f"{size}: it runs as a batch job on cluster emulator {first.name!r}")
        return first, info

    def _queue(
        self,
        chosen: Target,
        program: Program,
        info: TargetInfo,
        job_class: str | None,
        single_calibration: bool,
        max_calibration_age_s: float | None,
        route: str | None = None,
        sweep: list[tuple[int, dict[str, Any]]] | None = None,
    ) -> Job:
        if max_calibration_age_s is not None and not chosen.bounds_calibration_age:
            raise RefusedError(
                f"target {chosen.name!r} ({chosen.type}) cannot bound a job's calibration "
                "age; submit without max_calibration_age_s or to a scheduler target",
                rule="max_calibration_age_s",
            )
        loop = self.active_loop
        mark = loop.mark() if loop else None
        if sweep is None:
            queued = chosen.submit(
                program, job_class, single_calibration, max_calibration_age_s, loop=mark
            )
        else:
            queued = chosen.submit_sweep(
                program, sweep, job_class, single_calibration, max_calibration_age_s, loop=mark
            )
        job = Job(chosen, _loop.call(queued), info.device, route, program, job_class)
        self._jobs.append(job)
        if loop:
            loop.jobs.append(job)
        return job

    @contextlib.contextmanager
    def loop(self, name: str | None = None, think_time_s: float | None = None) -> Iterator[Loop]:
        """Submissions inside the block are one hybrid loop: between two of its jobs a
        scheduler may hold the QPU for it, for at most ``think_time_s`` (default: the loop's
        last pause), when that costs others less than it saves (docs/policy.md, rule 9).
        ``name``: the loop's id ([A-Za-z0-9_.-], at most 64; default a fresh one)."""
        loop = self.start_loop(name, think_time_s)
        try:
            yield loop
        finally:
            if self.active_loop is loop:
                self.active_loop = None

    def start_loop(self, name: str | None = None, think_time_s: float | None = None) -> Loop:
        """Start the hybrid loop later submissions join, until :meth:`stop_loop` (what
        ``%qpu loop start`` does; :meth:`loop` is the block form)."""
        loop = Loop(think_time_s=think_time_s) if name is None else Loop(name, think_time_s)
        self.active_loop = loop
        return loop

    def stop_loop(self) -> Loop | None:
        """End the active hybrid loop; it, or None if there was none."""
        loop, self.active_loop = self.active_loop, None
        return loop

    def session(
        self, name: str | None = None, think_time_s: float | None = None
    ) -> contextlib.AbstractContextManager[Loop]:
        """Deprecated: :meth:`loop` (a session is a Slurm job's QPU share)."""
        _renamed("Client.session()", "Client.loop()")
        return self.loop(name, think_time_s)

    def start_session(self, name: str | None = None, think_time_s: float | None = None) -> Loop:
        """Deprecated: :meth:`start_loop`."""
        _renamed("Client.start_session()", "Client.start_loop()")
        return self.start_loop(name, think_time_s)

    def stop_session(self) -> Loop | None:
        """Deprecated: :meth:`stop_loop`."""
        _renamed("Client.stop_session()", "Client.stop_loop()")
        return self.stop_loop()

    @property
    def active_session(self) -> Loop | None:
        """Deprecated: :attr:`active_loop`."""
        _renamed("Client.active_session", "Client.active_loop")
        return self.active_loop

    async def _aroute(
        self,
        program: Any,
        shots: int | None,
        name: str | None,
        variables: dict[str, Any],
        job_class: str | None,
        max_calibration_age_s: float | None,
    ) -> tuple[Target, Program, TargetInfo, str]:
        """Ask every QPU target about ``program`` at once (:func:`_routing.choose` picks):
        the target, the program as converted for its device, its info and the reason."""
        names = self._from_job or [
            n for n, t in self._targets.items() if n != EMULATOR and t.kind != CLUSTER_EMULATOR
        ]
        candidates = [self._targets[n] for n in names]

        async def ask(target: Target) -> tuple[Answer, Program | None, TargetInfo | None]:
            info = await self._ainfo(target)
            if not info.reachable:
                return Answer(target.name, down=info.message), None, None
            if info.down:  # a calibrating one is only slower
                return Answer(target.name, down=f"its device is {info.state}"), None, info
            try:
                converted = await asyncio.to_thread(
                    _converted, program, shots, info, name, variables
                )
            except (RefusedError, DeviceRuleViolation) as err:
                return Answer(target.name, refusal=str(err)), None, info
            try:
                estimate = await asyncio.wait_for(
                    target.estimate(converted.shots, job_class, max_calibration_age_s),
                    PROBE_TIMEOUT_S,
                )
            except RefusedError as err:  # the request itself (a job_class it does not know)
                return Answer(target.name, refusal=str(err)), None, info
            except (ClientError, TimeoutError) as err:
                why = str(err) or f"no estimate within {PROBE_TIMEOUT_S:g} s"
                return Answer(target.name, down=why), None, info
            if estimate is not None and estimate.held_by is not None:
                return Answer(target.name, down=f"held by {estimate.held_by}"), None, info
            answer = Answer(
                target.name,
                done_in_s=None if estimate is None else estimate.done_in_s,
                calibration_age_s=info.calibration_age_s,
                bounds_calibration_age=target.bounds_calibration_age,
            )
            return answer, converted, info

        asked = await asyncio.gather(*(ask(t) for t in candidates))
        route = choose([answer for answer, _, _ in asked], max_calibration_age_s)
        index = names.index(route.target)
        converted, info = asked[index][1], asked[index][2]
        assert converted is not None and info is not None
        return candidates[index], converted, info, route.reason

    def _submit_native(self, program: NativeProgram, chosen: Target) -> Job:
        if not isinstance(chosen, EmulatorTarget):
            raise TargetError(
                f"{program.what} runs on the in-kernel emulator only, not on {chosen.name!r}: "
                "submit it with target='emulator'"
            )
        submitted = chosen.submit_native(program.sample, program.shots)
        job = Job(chosen, _loop.call(submitted), program.engine)
        self._jobs.append(job)
        return job

    def job(self, id: str | int | None = None, target: str | None = None) -> Job:
        """A job by id (default: the last one submitted here), asking the target if need be."""
        if id is None:
            if not self._jobs:
                raise ClientError("no job has been submitted from this process yet")
            return self._jobs[-1]
        for known in reversed(self._jobs):
            if known.id == str(id) and target in (None, known.target):
                return known
        chosen, info = self._resolve(target)
        return Job(chosen, _loop.call(chosen.state(str(id))), info.device)

    def jobs(self, all: bool = False, target: str | None = None) -> list[Job]:
        """The jobs submitted from this process, oldest first (those on ``target`` only, when
        named). ``all``: every job of the caller that the targets know, other kernels' and
        scripts' too, as each scheduler lists them (``GET /jobs``), grouped by target, oldest
        first; where a target cannot list jobs (the emulator, QRMI resources), this
        process's. Their states are read now. A scheduler that does not answer is announced
        and this process's jobs there are listed as last seen, unless it was named
        (TargetError)."""
        names = [self._named(target).name] if target else list(self._targets)
        if not all:
            return [job for job in self._jobs if job.target in names]
        listed = _loop.call(_gather(*(self._alist(n, named=target is not None) for n in names)))
        found: list[Job] = []
        for name, states in zip(names, listed, strict=True):
            mine = {job.id: job for job in self._jobs if job.target == name}
            if states is None:
                found += mine.values()
                continue
            device = None
            if any(state.id not in mine for state in states):  # the device their Results name
                device = (self._ready.get(name) or self._probe(self._targets[name])).device
            for state in states:
                job = mine.get(state.id) or Job(self._targets[name], state, device)
                job.state = state
                found.append(job)
        return found

    async def _alist(self, name: str, named: bool) -> list[JobState] | None:
        """The caller's jobs on target ``name``, read now: its listing, or where it cannot
        list them, this process's jobs there. None where it does not answer (announced),
        unless ``named``: then the error."""
        target = self._targets[name]
        try:
            states = await target.jobs()
            if states is None:
                mine = [job for job in self._jobs if job.target == name]
                states = [j.state if j.state.final else await target.state(j.id) for j in mine]
        except ClientError as err:
            if named:
                raise
            announce(f"{err}; of the jobs there, only this process's are listed, as last seen")
            return None
        return states

    def quotas(self, target: str | None = None) -> list[Quota]:
        """The caller's quotas and their use this period (docs/policy.md, "Quotas"): those of
        ``target``, else of every target that reports quotas (scheduler targets; the
        emulator has none). An empty list: no quota applies. A named target that reports
        none (a QRMI resource, a plain Warden) is a TargetError; another target that does
        not answer is announced and left out."""
        names = [self._named(target).name] if target else list(self._targets)
        answers = _loop.call(_gather(*(self._aquotas(n, named=target is not None) for n in names)))
        return [quota for answer in answers for quota in answer]

    async def _aquotas(self, name: str, named: bool) -> list[Quota]:
        target = self._targets[name]
        try:
            quotas = await target.quotas()
        except ClientError as err:
            if named:
                raise
            announce(f"{err}; its quotas are not shown")
            return []
        if quotas is None and named:
            raise TargetError(
                f"target {name!r} ({target.type}) reports no quotas: its provider keeps them, "
                "if any; a QPU's scheduler target reports yours"
            )
        return quotas or []

    def close(self) -> None:
        """Close every target's connections and workers."""
        _loop.call(_gather(*(t.aclose() for t in self._targets.values())))

    # -- choosing a target ----------------------------------------------------------------

    def _resolve(self, name: str | None) -> tuple[Target, TargetInfo]:
        """The target for a submission. Once chosen, a default is treated as named: if it
        stops answering, submissions fail rather than silently switch to the emulator."""
        name = name or self._current
        target = self._default_target() if name is None else self._named(name)
        info = self._ready.get(target.name) or self._probe(target)
        if not info.reachable:
            raise TargetError(info.message)
        return target, info

    def _named(self, name: str) -> Target:
        if name == CLUSTER_EMULATOR and name not in self._targets:  # the kind names the first
            name = next((t.name for t in self._targets.values() if t.kind == name), name)
        if name not in self._targets:
            raise TargetError(f"no target named {name!r}; known: {', '.join(self._targets)}")
        return self._targets[name]

    def _default_target(self) -> Target:
        with self._lock:
            if self._chosen is None:
                self._chosen = self._choose_default()
            return self._chosen

    def _choose_default(self) -> Target:
        emulator = self._targets[EMULATOR]
        if self._default is None:
            announce(
                f"no QPU target found (looked at {' and '.join(self._sources)}); "
                "programs run on the local emulator"
            )
        else:
            target = self._targets[self._default]
            info = self._ready.get(target.name) or self._probe(target)
            if info.reachable:
                return target
            announce(f"{info.message}; programs run on the local emulator instead")
        self._probe(emulator)
        return emulator

    def _probe(self, target: Target) -> TargetInfo:
        return _loop.call(self._ainfo(target))

    async def _probe_all(self) -> list[TargetInfo]:
        return list(await asyncio.gather(*(self._ainfo(t) for t in self._targets.values())))

    async def _ainfo(self, target: Target) -> TargetInfo:
        try:
            info = await asyncio.wait_for(target.info(), PROBE_TIMEOUT_S)
        except TimeoutError:
            info = target.unreachable(
                f"target {target.name!r} did not answer within {PROBE_TIMEOUT_S:g} s"
            )
        if info.reachable:
            self._ready[target.name] = info
        else:
            self._ready.pop(target.name, None)
        return info


def _points(variables: Any) -> list[dict[str, Any]] | None:
    """A sweep's points (``variables`` as a list of dicts), or None when it is no sweep."""
    if variables is None or isinstance(variables, dict):
        return None
    points = list(variables)
    if not points or not all(isinstance(point, dict) for point in points):
        raise RefusedError(
            "variables must be a dict, or for a sweep a non-empty list of dicts (one per point)",
            rule="sweep",
        )
    return points


def _converted(
    program: Any, shots: int | None, info: TargetInfo, name: str | None, variables: dict[str, Any]
) -> Program:
    """``program`` for the target's device, checked against it (blocking: Pulser's work);
    RefusedError or DeviceRuleViolation where that device cannot run it."""
    converted = to_program(program, shots, info.spec, name, **variables)
    if isinstance(converted, NativeProgram):
        raise RefusedError(
            f"{converted.what} runs on the in-kernel emulator only (target='emulator')",
            rule="format",
        )
    _check(converted, info)
    return converted


def _check(program: Program, info: TargetInfo) -> None:
    """RefusedError (rule ``format``) or DeviceRuleViolation if the target's device cannot
    run ``program``: checked here, before anything is sent."""
    where = f"target {info.name!r} ({info.device})"
    if refusal := format_refusal(program.format, info.formats, where):
        raise RefusedError(refusal, rule="format")
    if info.spec is not None:
        validate(program, info.spec)


async def _gather(*coroutines: Coroutine[Any, Any, T]) -> list[T]:
    return list(await asyncio.gather(*coroutines))


_default: Client | None = None
_default_lock = threading.Lock()


def default_client() -> Client:
    """The process's client, discovered from the environment on first use."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Client()
        return _default


def targets() -> list[TargetInfo]:
    """Every target found, probed; ``selected`` marks where ``submit()`` goes by default."""
    return default_client().targets()


def use(name: str) -> TargetInfo:
    """Send later submissions to target ``name`` (see :meth:`Client.use`)."""
    return default_client().use(name)


def submit(
    program: Any,
    shots: int | None = None,
    target: str | None = None,
    job_class: str | None = None,
    name: str | None = None,
    *,
    single_calibration: bool = False,
    max_calibration_age_s: float | None = None,
    variables: Any = None,
    **values: Any,
) -> Job:
    """Check ``program`` against the target's device and queue it (see :meth:`Client.submit`;
    ``variables=[{...}, ...]``: a sweep, one job)."""
    return default_client().submit(
        program,
        shots,
        target,
        job_class,
        name,
        single_calibration=single_calibration,
        max_calibration_age_s=max_calibration_age_s,
        variables=variables,
        **values,
    )


def loop(name: str | None = None, think_time_s: float | None = None) -> Any:
    """``with qhpc_lab.loop(): ...``: submissions in the block are one hybrid loop (see
    :meth:`Client.loop`)."""
    return default_client().loop(name, think_time_s)


def session(name: str | None = None, think_time_s: float | None = None) -> Any:
    """Deprecated: :func:`loop` (a session is a Slurm job's QPU share)."""
    _renamed("qhpc_lab.session()", "qhpc_lab.loop()")
    return default_client().loop(name, think_time_s)


def _renamed(old: str, new: str) -> None:
    """The warning of a name kept for one release after its rename."""
    warnings.warn(
        f"{old} is deprecated and will be removed: use {new}", DeprecationWarning, stacklevel=3
    )


def job(id: str | int | None = None, target: str | None = None) -> Job:
    """A job by id, default the last submitted (see :meth:`Client.job`)."""
    return default_client().job(id, target)


def jobs(all: bool = False, target: str | None = None) -> list[Job]:
    """The jobs submitted from this process, oldest first; ``all``: every job of yours the
    targets know, from any kernel or script (see :meth:`Client.jobs`)."""
    return default_client().jobs(all, target)


def quotas(target: str | None = None) -> list[Quota]:
    """Your quotas and their use this period, as the scheduler targets report them (see
    :meth:`Client.quotas`); an empty list when none applies."""
    return default_client().quotas(target)
