"""Check a Program against a device's specs before anything is queued.

Every refusal is a :class:`DeviceRuleViolation` naming the device rule, the program's value and
the device's limit, so a user can fix the program without reading the device JSON.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

from qhpc_lab.programs.envelope import Program, ProgramError


class DeviceRuleViolation(ProgramError):
    """The program is well formed but this device cannot run it."""

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(f"{rule}: {message}", rule)


@dataclass(frozen=True)
class ProgramFacts:
    """What validation learnt about a program: the scheduler keeps it for ETAs and accounting."""

    num_qubits: int
    duration_ns: int | None


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
        self.channels: dict[str, dict[str, Any]] = {c["id"]: c for c in data.get("channels", [])}

    @functools.cached_property
    def pulser_device(self) -> Any:
        from pulser.abstract_repr import deserialize_device

        return deserialize_device(self.json)


def warm_up() -> None:
    """Import the SDKs validation needs (seconds, cold) before a daemon serves its first job."""
    import pulser  # noqa: F401
    import qiskit.qasm3  # noqa: F401


def validate(program: Program, device: DeviceSpec) -> ProgramFacts:
    """Raise :class:`ProgramError` or :class:`DeviceRuleViolation`; return facts otherwise."""
    if device.max_runs is not None and program.shots > device.max_runs:
        raise DeviceRuleViolation(
            "max_runs",
            f"{program.shots} shots requested; {device.name} allows at most {device.max_runs}",
        )
    variables = json.dumps(program.variables, sort_keys=True)
    return _validate_body(program.format, program.body, variables, device)


_FACTS: dict[tuple[str, str, str, str], ProgramFacts] = {}
_FACTS_LIMIT = 2048


def _validate_body(fmt: str, body: str, variables: str, device: DeviceSpec) -> ProgramFacts:
    # Parsing a Pulser sequence costs milliseconds; a production campaign or a benchmark sends
    # the same body many times, so successful checks are remembered by content (the device's
    # too: an id() could be reused by another device once the first is collected).
    key = (fmt, hashlib.sha256(body.encode()).hexdigest(), variables, device.json)
    facts = _FACTS.get(key)
    if facts is None:
        check = _validate_pulser if fmt == "pulser" else _validate_qasm3
        facts = check(body, json.loads(variables), device)
        if len(_FACTS) >= _FACTS_LIMIT:
            _FACTS.clear()
        _FACTS[key] = facts
    return facts


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
    return ProgramFacts(num_qubits=circuit.num_qubits, duration_ns=None)


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
    try:
        sequence.with_new_device(device.pulser_device)
    except Exception as err:
        raise DeviceRuleViolation("device_compatibility", str(err)) from None
    return ProgramFacts(num_qubits=len(positions), duration_ns=duration)


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


def _check_register(positions: list[tuple[float, ...]], device: DeviceSpec) -> None:
    count = len(positions)
    if device.max_atom_num is not None and count > device.max_atom_num:
        raise DeviceRuleViolation(
            "max_atom_num",
            f"register has {count} atoms; {device.name} allows {device.max_atom_num}",
        )
    dims = max((len(p) for p in positions), default=2)
    if dims > device.dimensions and any(abs(p[2]) > 1e-9 for p in positions if len(p) > 2):
        raise DeviceRuleViolation(
            "dimensions", f"register is {dims}D; {device.name} is {device.dimensions}D"
        )
    if device.max_radial_distance is not None:
        radial = max((math.hypot(*p) for p in positions), default=0.0)
        if radial > device.max_radial_distance + 1e-9:
            raise DeviceRuleViolation(
                "max_radial_distance",
                f"an atom sits {radial:.2f} µm from the centre; {device.name} allows "
                f"{device.max_radial_distance} µm",
            )
    closest = min(
        (math.dist(a, b) for i, a in enumerate(positions) for b in positions[i + 1 :]),
        default=math.inf,
    )
    if closest < device.min_atom_distance - 1e-9:
        raise DeviceRuleViolation(
            "min_atom_distance",
            f"two atoms are {closest:.2f} µm apart; {device.name} needs at least "
            f"{device.min_atom_distance} µm",
        )
