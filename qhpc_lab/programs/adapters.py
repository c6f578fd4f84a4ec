"""SDK objects as programs: :func:`to_program` is the one conversion out of every SDK.

Pulser sequences travel as their abstract representation and Qiskit gate circuits as
OpenQASM 3. Analog circuits become Pulser sequences on the target's device first: Qiskit's
(qiskit-pasqal-provider's ``HamiltonianGate``) with the provider's own conversion, Qadence's
with Qadence's Pulser backend (:mod:`qhpc_lab.programs.qadence`). Digital Qadence circuits have
no envelope: they become a :class:`NativeProgram` that pyqtorch runs on the emulator target.
SDKs are imported only when an object comes from them (each costs seconds).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from qhpc_lab.programs.cudaq import cudaq_to_pulser, is_cudaq_analog
from qhpc_lab.programs.envelope import Program, ProgramError, check_shots

if TYPE_CHECKING:
    from pulser import Sequence
    from qiskit import QuantumCircuit

    from qhpc_lab.programs.validation import DeviceSpec

DEFAULT_SHOTS = 100
"""Shots for an SDK object converted without ``shots`` (a Program carries its own)."""


@dataclasses.dataclass(frozen=True)
class NativeProgram:
    """A program only an in-process engine runs: the emulator target calls ``sample(shots)``."""

    what: str
    """What it is, for messages: "a digital Qadence circuit"."""
    engine: str
    """The engine, shown as the result's device: "qadence (pyqtorch)"."""
    sample: Callable[[int], dict[str, int]]
    shots: int

    def __post_init__(self) -> None:
        check_shots(self.shots)


def to_program(
    obj: Any,
    shots: int | None,
    device: DeviceSpec | None = None,
    name: str | None = None,
    **variables: Any,
) -> Program | NativeProgram:
    """``obj`` — a Program, a Pulser ``Sequence``, a Qiskit or a Qadence circuit — as a
    Program (a digital Qadence circuit: a NativeProgram).

    ``shots``, ``name`` and ``variables`` override a Program's own; an SDK object without
    ``shots`` gets :data:`DEFAULT_SHOTS`. ``device``: the target's, when known; analog circuits
    are converted onto it so that the program is checked against the device it runs on.
    ``variables`` bind a parametrised Pulser sequence or an analog circuit's parameters.
    """
    if isinstance(obj, Program):
        return _overridden(obj, shots, name, variables)
    shots = DEFAULT_SHOTS if shots is None else shots
    if isinstance(obj, Mapping) and is_cudaq_analog(obj):
        return Program("pulser", cudaq_to_pulser(obj, device), shots, name, dict(variables))
    # The module test keeps an SDK unimported unless the object comes from it; the isinstance
    # tests refuse its other objects (a pulser Register is not a program).
    module = type(obj).__module__
    if module.startswith("qadence"):
        from qhpc_lab.programs import qadence

        circuit = qadence.as_circuit(obj)
        if not qadence.is_analog(circuit):
            sample = functools.partial(qadence.sample, circuit, dict(variables))
            return NativeProgram("a digital Qadence circuit", "qadence (pyqtorch)", sample, shots)
        obj, variables = qadence.to_pulser(circuit, device, variables), {}
    elif module.startswith("qiskit") and has_analog_gate(obj):
        obj = _analog_to_pulser(obj, device)
    module = type(obj).__module__
    if module.startswith("pulser"):
        from pulser import Sequence

        if isinstance(obj, Sequence):
            return Program("pulser", obj.to_abstract_repr(), shots, name, dict(variables))
    if module.startswith("qiskit"):
        from qiskit import QuantumCircuit

        if isinstance(obj, QuantumCircuit):
            return _from_qiskit(obj, shots, name)
    raise ProgramError(
        f"cannot turn a {type(obj).__qualname__} into a program: expected a pulser.Sequence, "
        "a qiskit or qadence QuantumCircuit, a CUDA-Q analog program, or a qhpc_lab Program"
    )


def has_analog_gate(obj: Any) -> bool:
    """True for a circuit holding a gate with an atom register (qiskit-pasqal-provider's)."""
    from qiskit import QuantumCircuit  # already imported: obj comes from qiskit

    return isinstance(obj, QuantumCircuit) and any(
        hasattr(instruction.operation, "analog_register") for instruction in obj.data
    )


def _overridden(
    program: Program, shots: int | None, name: str | None, variables: dict[str, Any]
) -> Program:
    changes: dict[str, Any] = {"shots": shots, "name": name}
    changes = {key: value for key, value in changes.items() if value is not None}
    if variables:
        changes["variables"] = {**program.variables, **variables}
    return dataclasses.replace(program, **changes) if changes else program


def _from_qiskit(circuit: QuantumCircuit, shots: int, name: str | None) -> Program:
    """A gate circuit as OpenQASM 3; circuits without measurements measure all."""
    from qiskit import qasm3

    if circuit.num_clbits == 0:
        circuit = circuit.measure_all(inplace=False)
    return Program("qasm3", qasm3.dumps(circuit), shots, name or circuit.name)


def _analog_to_pulser(circuit: QuantumCircuit, device: DeviceSpec | None) -> Sequence:
    """The Pulser sequence of a ``HamiltonianGate`` circuit, on ``device`` (default: Pulser's
    ``AnalogDevice``), its register placed on a layout when the device needs one. Qiskit
    parameters become sequence variables of the same names."""
    from pulser.devices import AnalogDevice
    from qiskit_pasqal_provider.providers.pulse_utils import (
        gen_seq,
        get_register_from_circuit,
        place_register,
    )

    target = AnalogDevice if device is None else device.pulser_device
    register = place_register(get_register_from_circuit(circuit), target)
    return gen_seq(analog_register=register, device=target, circuit=circuit)
