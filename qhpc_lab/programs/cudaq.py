"""CUDA-Q analog programs as Pulser sequences on the target device.

CUDA-Q's ``pasqal`` target (``cudaq.evolve`` of a ``RydbergHamiltonian``) sends an analog
Hamiltonian simulation (AHS) program, the JSON object ``cudaq.cudaq_runtime.ahs.Program``
writes, as the ``sequence`` of a job; Pasqal's Warden turns it into Pulser, and so do we::

    {"setup": {"ahs_register": {"sites": [[x, y], ...], "filling": [1, 0, ...]}},
     "hamiltonian": {"drivingFields": [{"amplitude": F, "detuning": F, "phase": F}],
                     "localDetuning": []}}
    F = {"pattern": "uniform", "time_series": {"times": [...], "values": [...]}}

SI units: sites in metres, times in seconds, amplitude and detuning in rad/s, phase in rad.
CUDA-Q writes every number as a decimal string ("0.00000500"); plain numbers are accepted too.
Each time series is piecewise linear from t = 0 to one final time shared by all three.

The Pulser sequence: the filled sites as register ``q0, q1, ...`` (in site order, which is
the order of the result's bits), placed on a layout when the device needs one, and one pulse
on a global Rydberg channel whose amplitude and detuning are the series sampled every ns,
linearly between points (constant waveforms when the series is). AHS and Pulser write the
drive with opposite phase signs, so the phase is negated; a varying phase becomes Pulser's
``ArbitraryPhase``, a detuning added to the pulse's. A duration that is not a multiple of the
channel's clock period is rounded up to one, the series stretched over it, as Pulser does.

Reading and converting the JSON needs no CUDA-Q: the scheduler and a plain install take CUDA-Q
programs without it. Only :func:`analog_program`, which has CUDA-Q write the JSON, imports
``cudaq``, the optional extra ``qhpc-lab[cudaq]``.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from qhpc_lab.programs.envelope import DeviceRuleViolation, ProgramError

if TYPE_CHECKING:
    from pulser.devices import Device
    from pulser.waveforms import Waveform

    from qhpc_lab.programs.validation import DeviceSpec

CHANNEL = "rydberg_global"
FIELDS = ("amplitude", "detuning", "phase")
M_TO_UM = 1e6
S_TO_NS = 1e9
PER_S_TO_PER_US = 1e-6
MAX_DURATION_NS = 100_000
"""Longest program on a device that states no ``max_sequence_duration`` (its samples are
drawn one per ns before validation)."""
CUDAQ_EXTRA = "pip install 'qhpc-lab[cudaq]'"
"""How to get CUDA-Q: the optional extra (docs/jupyter.md)."""
TIME_TOLERANCE_S = 1e-12
"""Slack on the series' shared start and end times: far below CUDA-Q's 10 ns resolution."""


def is_cudaq_analog(obj: Any) -> bool:
    """True for a CUDA-Q analog program: a mapping, or its JSON text, with a
    ``setup.ahs_register`` and a ``hamiltonian.drivingFields``. Never raises; says nothing
    of whether the program is well formed (:func:`cudaq_to_pulser` does)."""
    if isinstance(obj, str):
        if '"ahs_register"' not in obj:  # a Pulser or QASM body: no parse
            return False
        try:
            obj = json.loads(obj)
        except (ValueError, RecursionError):  # RecursionError: nesting deeper than Python's
            return False
    if not isinstance(obj, Mapping):
        return False
    setup, hamiltonian = obj.get("setup"), obj.get("hamiltonian")
    return (
        isinstance(setup, Mapping)
        and "ahs_register" in setup
        and isinstance(hamiltonian, Mapping)
        and "drivingFields" in hamiltonian
    )


def cudaq_to_pulser(obj: Mapping[str, Any] | str, device: DeviceSpec | Device | None) -> str:
    """The Pulser abstract representation of a CUDA-Q analog program on ``device`` (a
    :class:`DeviceSpec`, a Pulser device, or ``None`` for Pulser's ``AnalogDevice``).

    Raises :class:`ProgramError` (rule ``body``) naming the field of a malformed program;
    whether the device can run it is :func:`~qhpc_lab.programs.validate`'s to say."""
    return _to_sequence(_load(obj), _pulser_device(device)).to_abstract_repr()


def analog_program(hamiltonian: Any, schedule: Any) -> dict[str, Any]:
    """The AHS program ``cudaq.evolve(hamiltonian, schedule=schedule, ...)`` sends on CUDA-Q's
    ``pasqal`` target, as a dict: something to submit. ``hamiltonian``: a
    ``cudaq.operators.RydbergHamiltonian``; ``schedule``: a ``cudaq.dynamics.Schedule``.

    Each drive is evaluated at the schedule's steps as CUDA-Q evaluates it before it
    sends the program, and written by CUDA-Q's own ``ahs.Program``. Needs CUDA-Q: an
    ImportError naming the extra (:data:`CUDAQ_EXTRA`) without it."""
    ahs = _cudaq().cudaq_runtime.ahs
    times = [schedule.current_step for _ in schedule]  # iterating moves current_step
    program = ahs.Program()
    register = ahs.AtomArrangement()
    register.sites = list(hamiltonian.atom_sites)
    register.filling = list(hamiltonian.atom_filling)
    drive = ahs.DrivingField()
    for field, operator in zip(
        FIELDS, (hamiltonian.amplitude, hamiltonian.delta_global, hamiltonian.phase), strict=True
    ):
        physical = ahs.PhysicalField()
        physical.time_series = ahs.TimeSeries([(_evaluate(operator, t), t) for t in times])
        setattr(drive, field, physical)
    program.setup.ahs_register = register
    program.hamiltonian.drivingFields = [drive]
    program.hamiltonian.localDetuning = []
    return json.loads(program.to_json())


def _cudaq() -> Any:
    """The ``cudaq`` module; an ImportError the user can act on where it is not installed."""
    try:
        import cudaq
    except ImportError:
        raise ImportError(f"CUDA-Q is not installed: {CUDAQ_EXTRA}") from None
    return cudaq


def _evaluate(operator: Any, t: float) -> float:
    """A scalar drive at time ``t``: constant, or a function of its one parameter."""
    names = list(operator.parameters)
    if len(names) > 1:
        raise ProgramError(
            f"a drive takes one parameter (time), not {len(names)}: {', '.join(names)}", "body"
        )
    value = complex(operator.evaluate(**{names[0]: t}) if names else operator.evaluate())
    if value.imag:
        raise ProgramError(f"a drive must be real, got {value} at t = {t} s", "body")
    return value.real


def _load(obj: Mapping[str, Any] | str) -> Mapping[str, Any]:
    if isinstance(obj, str):
        try:
            obj = json.loads(obj)
        except (ValueError, RecursionError) as err:
            raise ProgramError(f"CUDA-Q analog program is not valid JSON: {err}", "body") from None
    return _mapping(obj, "program")


def _pulser_device(device: DeviceSpec | Device | None) -> Device:
    from pulser.devices import AnalogDevice

    from qhpc_lab.programs.validation import DeviceSpec

    if device is None:
        return AnalogDevice
    return device.pulser_device if isinstance(device, DeviceSpec) else device


def _to_sequence(program: Mapping[str, Any], device: Device) -> Any:
    import pulser
    from pulser.waveforms import ConstantWaveform

    register = _register(program, device)
    hamiltonian = _mapping(program.get("hamiltonian"), "hamiltonian")
    local = _list(hamiltonian.get("localDetuning", []), "hamiltonian.localDetuning")
    if local:
        raise ProgramError(
            "hamiltonian.localDetuning: local detuning is not supported (a global drive only)",
            "body",
        )
    drives = _list(hamiltonian.get("drivingFields"), "hamiltonian.drivingFields")
    if len(drives) != 1:
        raise ProgramError(
            f"hamiltonian.drivingFields: exactly one driving field, got {len(drives)}", "body"
        )
    path = "hamiltonian.drivingFields[0]"
    drive = _mapping(drives[0], path)
    series = {field: _series(drive.get(field), f"{path}.{field}") for field in FIELDS}
    channel = device.channels.get(CHANNEL)
    if channel is None:
        raise ProgramError(f"device {device.name} has no {CHANNEL} channel to drive", "body")
    duration = _duration(series, path, channel.clock_period)
    longest = device.max_sequence_duration or MAX_DURATION_NS
    if duration > longest:  # before a sample is drawn: one per ns
        raise DeviceRuleViolation(
            "max_sequence_duration",
            f"sequence lasts {duration} ns; {device.name} allows at most {longest} ns",
        )
    amplitude = _waveform(series["amplitude"], duration, PER_S_TO_PER_US)
    detuning = _waveform(series["detuning"], duration, PER_S_TO_PER_US)
    phase = _waveform(series["phase"], duration, -1.0)
    sequence = pulser.Sequence(register, device)
    sequence.declare_channel(CHANNEL, CHANNEL)
    try:  # Pulser refuses a negative amplitude, a pulse shorter than the channel allows, ...
        if isinstance(phase, ConstantWaveform):
            pulse = pulser.Pulse(amplitude, detuning, phase[0])
        else:
            modulated = pulser.Pulse.ArbitraryPhase(amplitude, phase)
            detuning = pulser.CustomWaveform(detuning.samples + modulated.detuning.samples)
            pulse = pulser.Pulse(amplitude, detuning, modulated.phase)
        sequence.add(pulse, CHANNEL)
    except ValueError as err:
        raise ProgramError(f"{path}: {err}", "body") from None
    sequence.measure("ground-rydberg")
    return sequence


def _register(program: Mapping[str, Any], device: Device) -> Any:
    """The filled sites in µm, named q0, q1, ... in site order, placed on a layout when the
    device requires one (the rule every bridge to Pulser follows: qiskit-pasqal-provider's)."""
    from pulser import Register
    from qiskit_pasqal_provider.providers.pulse_utils import place_register

    path = "setup.ahs_register"
    setup = _mapping(program.get("setup"), "setup")
    ahs_register = _mapping(setup.get("ahs_register"), path)
    sites = _list(ahs_register.get("sites"), f"{path}.sites")
    filling = _list(ahs_register.get("filling"), f"{path}.filling")
    if len(filling) != len(sites):
        raise ProgramError(f"{path}.filling: {len(filling)} entries for {len(sites)} sites", "body")
    coordinates = []
    for index, (site, filled) in enumerate(zip(sites, filling, strict=True)):
        where = f"{path}.sites[{index}]"
        xy = _list(site, where)
        if len(xy) != 2:
            raise ProgramError(
                f"{where}: a site is [x, y] in metres, got {len(xy)} numbers", "body"
            )
        if filled not in (0, 1) or isinstance(filled, bool):
            raise ProgramError(f"{path}.filling[{index}]: 0 or 1, got {filled!r}", "body")
        if filled:
            coordinates.append(tuple(_number(v, where) * M_TO_UM for v in xy))
    if not coordinates:
        raise ProgramError(f"{path}.filling: no site is filled", "body")
    if device.max_atom_num is not None and len(coordinates) > device.max_atom_num:
        raise DeviceRuleViolation(
            "max_atom_num",
            f"{len(coordinates)} filled sites; {device.name} holds at most "
            f"{device.max_atom_num} atoms",
        )
    try:
        register = Register.from_coordinates(coordinates, prefix="q")
        return place_register(register, device)
    except ValueError as err:
        raise ProgramError(f"{path}: {err}", "body") from None


def _series(field: Any, path: str) -> tuple[list[float], list[float]]:
    """(times in s, values) of a uniform field, checked: as long, times rising from 0."""
    field = _mapping(field, path)
    if field.get("pattern", "uniform") != "uniform":
        raise ProgramError(
            f"{path}.pattern: only 'uniform' is supported, got {field.get('pattern')!r}", "body"
        )
    series = _mapping(field.get("time_series"), f"{path}.time_series")
    times_path, values_path = f"{path}.time_series.times", f"{path}.time_series.values"
    times = [_number(t, times_path) for t in _list(series.get("times"), times_path)]
    values = [_number(v, values_path) for v in _list(series.get("values"), values_path)]
    if len(times) < 2 or len(times) != len(values):
        raise ProgramError(
            f"{times_path}: at least two points and one value per time, got "
            f"{len(times)} times and {len(values)} values",
            "body",
        )
    if abs(times[0]) > TIME_TOLERANCE_S:
        raise ProgramError(f"{times_path}: must start at 0, got {times[0]} s", "body")
    if any(later <= earlier for earlier, later in itertools.pairwise(times)):
        raise ProgramError(f"{times_path}: times must increase", "body")
    return times, values


def _duration(
    series: dict[str, tuple[list[float], list[float]]], path: str, clock_period: int
) -> int:
    """The program's duration in ns: the end every series shares, rounded up to the
    channel's clock period as Pulser rounds any pulse's (its samples cannot stretch)."""
    ends = {field: times[-1] for field, (times, _) in series.items()}
    final = max(ends.values())
    for field, end in ends.items():
        if abs(end - final) > TIME_TOLERANCE_S:
            raise ProgramError(
                f"{path}.{field}.time_series.times: ends at {end} s, the others at {final} s "
                "(every series covers the whole program)",
                "body",
            )
    return math.ceil(round(final * S_TO_NS) / clock_period) * clock_period


def _waveform(series: tuple[list[float], list[float]], duration: int, scale: float) -> Waveform:
    """The series on Pulser's 1 ns grid: its first and last values on the first and last
    samples, as Pulser's own ramps and interpolated waveforms place them; linear in between
    (Pulser exports no linear ``InterpolatedWaveform``, so the samples are written out)."""
    import numpy as np
    from pulser.waveforms import ConstantWaveform, CustomWaveform

    times, values = series
    scaled = [value * scale for value in values]
    if all(value == scaled[0] for value in scaled):
        return ConstantWaveform(duration, scaled[0])
    knots = [t / times[-1] * (duration - 1) for t in times]
    return CustomWaveform(np.interp(np.arange(duration), knots, scaled))


def _mapping(value: Any, path: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ProgramError(f"{path}: expected a JSON object, got {_kind(value)}", "body")
    return value


def _list(value: Any, path: str) -> Sequence[Any]:
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise ProgramError(f"{path}: expected a JSON array, got {_kind(value)}", "body")
    return value


def _number(value: Any, path: str) -> float:
    """A finite number, or CUDA-Q's decimal string of one."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ProgramError(f"{path}: expected a number, got {_kind(value)}", "body")
    try:
        number = float(value)
    except ValueError:
        raise ProgramError(f"{path}: expected a number, got {value!r}", "body") from None
    if not math.isfinite(number):
        raise ProgramError(f"{path}: expected a finite number, got {value!r}", "body")
    return number


def _kind(value: Any) -> str:
    return "nothing" if value is None else type(value).__name__
