"""Check a Program against a device's specs before anything is queued.

Every refusal is a :class:`DeviceRuleViolation` naming the device rule, the program's value and
the device's limit, so a user can fix the program without reading the device JSON.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import weakref
from dataclasses import dataclass
from typing import Any

from qhpc_lab.programs import bounds
from qhpc_lab.programs.envelope import DeviceRuleViolation, Program, ProgramError
from qhpc_lab.programs.sdk_imports import defer_iri_grammar, without_torch
from qhpc_lab.programs.worker import BudgetedWorker, BudgetExceeded, WorkerDied

COORD_TOLERANCE_UM = 1e-6
"""Pulser's own slack on atom distances (``10 ** -COORD_PRECISION`` µm in pulser-core 1.9):
two atoms closer than ``min_atom_distance`` by less than this are accepted, as Pulser does.
Radial distances and durations have no slack in Pulser, and none here."""

VALIDATION_BUDGET_S = 10.0
"""Wall time one program's validation may take in the validation worker (a program at
:data:`~qhpc_lab.programs.bounds.QASM_MAX_OPERATIONS` needs about 2.5 s)."""

VALIDATION_MEMORY_BYTES = 2 * 2**30
"""Resident memory the validation worker may reach while it checks one program."""


@dataclass(frozen=True)
class ProgramFacts:
    """What validation learnt about a program."""

    num_qubits: int


class DeviceSpec:
    """A device described by its Pulser device JSON (the document ``GET /qpu/specs`` serves)."""

    def __init__(self, device_json: str) -> None:
        self.json = device_json
        data = json.loads(device_json)
        self.name: str = data["name"]
        self.max_atom_num: int | None = data.get("max_atom_num")
        self.max_runs: int | None = data.get("max_runs")
        self.min_atom_distance: float = data.get("min_atom_distance", 0)
        self.max_radial_distance: float | None = data.get("max_radial_distance")
        self.max_sequence_duration: int | None = data.get("max_sequence_duration")
        self.dimensions: int = data.get("dimensions", 2)
        self.max_layout_filling: float = data.get("max_layout_filling", 0.5)
        self.channels: dict[str, dict[str, Any]] = {c["id"]: c for c in data.get("channels", [])}

    @functools.cached_property
    def pulser_device(self) -> Any:
        from pulser.abstract_repr import deserialize_device

        return deserialize_device(self.json)


def warm_up() -> None:
    """Import the SDKs validation needs (seconds, cold) before a daemon serves its first job."""
    import pulser  # noqa: F401
    import qiskit.qasm3  # noqa: F401


def _warm_up_worker() -> None:
    """The validation worker's start: :func:`warm_up` without the imports it never uses
    (``qhpc_lab.programs.sdk_imports``)."""
    defer_iri_grammar()
    without_torch()
    warm_up()


def validate(program: Program, device: DeviceSpec) -> ProgramFacts:
    """Raise :class:`ProgramError` or :class:`DeviceRuleViolation`; return facts otherwise.

    Blocking and unbounded in time: for the kernel side and the validation worker. A daemon
    calls :func:`validate_async`."""
    _check_runs(program, device)
    key = _cache_key(program, device)
    facts = _FACTS.get(key)
    if facts is None:
        _scan(program, device)
        check = _validate_pulser if program.format == "pulser" else _validate_qasm3
        facts = check(program.body, program.variables, device)
        _remember(key, facts)
    return facts


async def validate_async(
    program: Program,
    device: DeviceSpec,
    budget_s: float = VALIDATION_BUDGET_S,
    memory_bytes: int = VALIDATION_MEMORY_BYTES,
) -> ProgramFacts:
    """:func:`validate` off the event loop, in the validation worker, within a budget.

    A program checked before costs a hash (no worker); the static bounds refuse on the spot;
    what is left queues for the one worker process, first come first served, and identical
    programs in flight share one check. Past ``budget_s`` of wall time or ``memory_bytes`` of
    resident memory the worker is replaced and the program refused with rule
    ``validation_budget``.
    """
    _check_runs(program, device)
    key = _cache_key(program, device)
    facts = _FACTS.get(key)
    if facts is not None:
        return facts
    refusal = _REFUSED.get(key)
    if refusal is not None:
        return _answer(refusal)
    misses, in_flight = _loop_state()
    pending = in_flight.get(key)
    if pending is None:
        pending = asyncio.ensure_future(
            _scan_then_validate(program, device, budget_s, memory_bytes, misses)
        )
        in_flight[key] = pending

        def settled(done: asyncio.Future[tuple[Any, ...]]) -> None:
            in_flight.pop(key, None)
            # A worker that died may have died of something else: that refusal is not kept.
            kept = not done.cancelled() and done.exception() is None
            if kept and done.result()[1] != "validation_worker":
                _remember(key, done.result())

        pending.add_done_callback(settled)
    return _answer(await asyncio.shield(pending))


async def _scan_then_validate(
    program: Program,
    device: DeviceSpec,
    budget_s: float,
    memory_bytes: int,
    misses: asyncio.Lock,
) -> tuple[Any, ...]:
    """The static bounds in a thread (a 1 MB body takes tens of milliseconds to scan: not on
    the event loop), then the worker."""
    await asyncio.to_thread(_scan, program, device)
    return await _validate_in_worker(program, device, budget_s, memory_bytes, misses)


def start_validation_worker() -> None:
    """Start the validation worker now, so its SDK imports are paid before the first job."""
    _VALIDATOR.start()


def await_validation_worker() -> None:
    """Block until the validation worker is warm (a daemon that answers is ready to validate:
    its first submission must not wait for the SDK imports)."""
    _VALIDATOR.wait_ready()


def stop_validation_worker() -> None:
    """End the validation worker (a daemon's shutdown; it also ends with the process)."""
    _VALIDATOR.stop()


def validation_worker_pid() -> int | None:
    """The validation worker's process id (None before it starts): for metrics and tests."""
    return _VALIDATOR.pid


_Key = tuple[str, str, str, str]
_FACTS: dict[_Key, ProgramFacts] = {}
_REFUSED: dict[_Key, tuple[Any, ...]] = {}
_FACTS_LIMIT = 2048
_LOOPS: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, tuple[asyncio.Lock, dict[_Key, asyncio.Future[tuple[Any, ...]]]]
] = weakref.WeakKeyDictionary()


def _loop_state() -> tuple[asyncio.Lock, dict[_Key, asyncio.Future[tuple[Any, ...]]]]:
    """This event loop's queue for the worker (one miss at a time holds a helper thread; the
    others wait on the loop, in order) and its checks in flight (asyncio objects belong to
    one loop; tests run many)."""
    loop = asyncio.get_running_loop()
    state = _LOOPS.get(loop)
    if state is None:
        state = _LOOPS[loop] = (asyncio.Lock(), {})
    return state


def _check_runs(program: Program, device: DeviceSpec) -> None:
    if device.max_runs is not None and program.shots > device.max_runs:
        raise DeviceRuleViolation(
            "max_runs",
            f"{program.shots} shots requested; {device.name} allows at most {device.max_runs}",
        )


def _cache_key(program: Program, device: DeviceSpec) -> _Key:
    # Parsing a Pulser sequence costs milliseconds; a production campaign or a benchmark sends
    # the same body many times, so successful checks are remembered by content (the device's
    # too: an id() could be reused by another device once the first is collected). Shots are
    # not part of it: max_runs is checked before the cache is read.
    body = hashlib.sha256(program.body.encode()).hexdigest()
    variables = json.dumps(program.variables, sort_keys=True)
    return (program.format, body, variables, device.json)


def _remember(key: _Key, answer: ProgramFacts | tuple[Any, ...]) -> None:
    """Keep a success, or (from the worker) a refusal: a hostile program resubmitted must not
    cost the worker its budget again."""
    if isinstance(answer, tuple) and answer[0] == "ok":
        answer = ProgramFacts(num_qubits=answer[1])
    kept: dict[_Key, Any] = _FACTS if isinstance(answer, ProgramFacts) else _REFUSED
    if len(kept) >= _FACTS_LIMIT:
        kept.clear()
    kept[key] = answer


def _answer(answer: tuple[Any, ...]) -> ProgramFacts:
    """A worker's answer as facts, or as the refusal it reports."""
    if answer[0] == "ok":
        return ProgramFacts(num_qubits=answer[1])
    _, rule, message, device_rule = answer
    if device_rule:
        raise DeviceRuleViolation(rule, message)
    raise ProgramError(message, rule)


def _scan(program: Program, device: DeviceSpec) -> None:
    """The static bounds: they refuse in milliseconds what would take the parser seconds, or
    the emulator forever."""
    scan = bounds.check_pulser if program.format == "pulser" else bounds.check_qasm3
    scan(program.body, device.name, device.max_atom_num)


async def _validate_in_worker(
    program: Program,
    device: DeviceSpec,
    budget_s: float,
    memory_bytes: int,
    misses: asyncio.Lock,
) -> tuple[Any, ...]:
    """The worker's answer as plain data (see :func:`_validate_request`); an overrun or a
    crash is a refusal too."""
    async with misses:
        try:
            answer, _ = await _VALIDATOR.call_async(
                (program.to_dict(), device.json), budget_s, memory_bytes
            )
        except BudgetExceeded as err:
            limit = f"{budget_s:g} s" if err.what == "time" else f"{memory_bytes / 2**20:g} MB"
            message = (
                f"validating the program exceeded its {err.what} budget of {limit}; "
                "make it smaller or simpler"
            )
            return ("refused", "validation_budget", message, False)
        except WorkerDied:
            message = "the validator died while checking this program; resubmit it"
            return ("refused", "validation_worker", message, False)
        except RuntimeError as err:  # the SDK raised where validate does not catch it
            return ("refused", "body", f"the program could not be checked: {err}", False)
    return answer


_DEVICES: dict[str, DeviceSpec] = {}


def _validate_request(request: tuple[dict[str, Any], str]) -> tuple[Any, ...]:
    """Runs in the validation worker: the answer as plain data (an exception's ``rule`` would
    not survive pickling)."""
    envelope, device_json = request
    device = _DEVICES.get(device_json)
    if device is None:
        device = _DEVICES[device_json] = DeviceSpec(device_json)
    try:
        facts = validate(Program.from_dict(envelope), device)
    except DeviceRuleViolation as err:
        return ("refused", err.rule, str(err).removeprefix(f"{err.rule}: "), True)
    except ProgramError as err:
        return ("refused", err.rule, str(err), False)
    return ("ok", facts.num_qubits)


_VALIDATOR = BudgetedWorker("qhpc-validator", _validate_request, _warm_up_worker)


def _validate_qasm3(body: str, variables: dict[str, Any], device: DeviceSpec) -> ProgramFacts:
    from qiskit import qasm3

    try:
        circuit = qasm3.loads(body)
    except Exception as err:
        raise ProgramError(f"body is not valid OpenQASM 3: {err}", "body") from None
    if device.max_atom_num is not None and circuit.num_qubits > device.max_atom_num:
        raise DeviceRuleViolation(
            "max_atom_num",
            f"circuit uses {circuit.num_qubits} qubits; "
            f"{device.name} has at most {device.max_atom_num} atoms",
        )
    return ProgramFacts(num_qubits=circuit.num_qubits)


def _validate_pulser(body: str, variables: dict[str, Any], device: DeviceSpec) -> ProgramFacts:
    from pulser import Sequence

    try:
        sequence = Sequence.from_abstract_repr(body)
    except Exception as err:
        raise ProgramError(
            f"body is not a valid Pulser abstract representation: {err}", "body"
        ) from None
    if sequence.is_parametrized() or variables:
        try:
            sequence = sequence.build(**variables)
        except Exception as err:
            raise ProgramError(
                f"cannot build the parametrised sequence: {err}", "variables"
            ) from None
    register = sequence.register
    positions = [tuple(float(c) for c in p) for p in register.qubits.values()]
    _check_register(positions, device)
    if register.layout is not None:
        _check_layout(register.layout, len(positions), device)
    channels: dict[str, str] = json.loads(body).get("channels", {})
    for name, channel_id in channels.items():
        if channel_id not in device.channels:
            raise DeviceRuleViolation(
                "channels",
                f"channel {name!r} uses {channel_id!r}; {device.name} offers "
                f"{', '.join(sorted(device.channels)) or 'none'}",
            )
    duration = int(sequence.get_duration())
    if device.max_sequence_duration is not None and duration > device.max_sequence_duration:
        raise DeviceRuleViolation(
            "max_sequence_duration",
            f"sequence lasts {duration} ns; {device.name} allows at most "
            f"{device.max_sequence_duration} ns",
        )
    _check_pulses(sequence, channels, device)
    try:  # Pulser warns on a switch to the device the sequence is already on
        if sequence.device != device.pulser_device:
            sequence.with_new_device(device.pulser_device)
    except Exception as err:
        raise DeviceRuleViolation("device_compatibility", str(err)) from None
    return ProgramFacts(num_qubits=len(positions))


def _check_pulses(sequence: Any, channels: dict[str, str], device: DeviceSpec) -> None:
    """Refuse amplitudes and detunings over the channel's limits with the values, which
    Pulser's own device switch leaves out of its message."""
    from pulser.sampler import sample

    samples = sample(sequence).channel_samples
    for name, channel_id in channels.items():
        if name not in samples:
            continue
        limits = device.channels[channel_id]
        for what, values, limit in (
            ("amplitude", samples[name].amp, limits.get("max_amp")),
            ("detuning", samples[name].det, limits.get("max_abs_detuning")),
        ):
            peak = float(abs(values.as_array(detach=True)).max(initial=0.0))
            if limit is not None and peak > limit + 1e-9:
                raise DeviceRuleViolation(
                    "device_compatibility",
                    f"channel {name!r} reaches a peak {what} of {peak:.2f} rad/µs; "
                    f"{channel_id} on {device.name} allows at most {limit:.2f} rad/µs",
                )


def _check_register(
    positions: list[tuple[float, ...]], device: DeviceSpec, kind: str = "atoms"
) -> None:
    """The register rules, compared as Pulser compares them (``validate_register``): atom
    distances with :data:`COORD_TOLERANCE_UM` of slack, the radius with none."""
    import numpy as np

    count = len(positions)
    if kind == "atoms" and device.max_atom_num is not None and count > device.max_atom_num:
        raise DeviceRuleViolation(
            "max_atom_num",
            f"register has {count} atoms; {device.name} allows {device.max_atom_num}",
        )
    if not positions:
        return
    dims = max(len(p) for p in positions)
    if dims > device.dimensions and any(abs(p[2]) > 1e-9 for p in positions if len(p) > 2):
        raise DeviceRuleViolation(
            "dimensions", f"register is {dims}D; {device.name} is {device.dimensions}D"
        )
    coords = np.array([p + (0.0,) * (dims - len(p)) for p in positions], dtype=float)
    one = "a trap" if kind == "traps" else "an atom"
    if device.max_radial_distance is not None:
        radial = float(np.linalg.norm(coords, axis=1).max())
        if radial > device.max_radial_distance:
            raise DeviceRuleViolation(
                "max_radial_distance",
                f"{one} sits {_microns(radial, device.max_radial_distance)} µm from the "
                f"centre; {device.name} allows {device.max_radial_distance} µm",
            )
    if count < 2:
        return
    upper = np.triu_indices(count, k=1)
    closest = float(np.linalg.norm(coords[:, None] - coords[None, :], axis=2)[upper].min())
    limit = device.min_atom_distance
    if closest - limit < -COORD_TOLERANCE_UM or closest < COORD_TOLERANCE_UM:
        two = "two traps" if kind == "traps" else "two atoms"
        raise DeviceRuleViolation(
            "min_atom_distance",
            f"{two} are {_microns(closest, limit)} µm apart; {device.name} needs at least "
            f"{limit} µm",
        )


def _check_layout(layout: Any, atoms: int, device: DeviceSpec) -> None:
    """A register placed on traps: the traps obey the register rules, and at most
    ``max_layout_filling`` of them may hold atoms (as Pulser's ``validate_layout``)."""
    traps = [tuple(float(c) for c in t) for t in layout.traps_dict.values()]
    _check_register(traps, device, kind="traps")
    allowed = int(len(traps) * device.max_layout_filling)
    if atoms > allowed:
        raise DeviceRuleViolation(
            "max_layout_filling",
            f"register fills {atoms} of its layout's {len(traps)} traps; {device.name} "
            f"allows {allowed} ({device.max_layout_filling:.0%})",
        )


def _microns(value: float, limit: float) -> str:
    """Two decimals, or enough to tell the value from a limit it rounds to."""
    short = f"{value:.2f}"
    return short if short != f"{limit:.2f}" else f"{value:.8f}"
