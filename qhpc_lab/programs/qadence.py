"""Qadence circuits for :func:`qhpc_lab.programs.to_program`: analog ones become Pulser
sequences on the target's device (through Qadence's own Pulser backend conversion); digital
ones run natively on pyqtorch, in the emulator target's worker.

    qhpc_lab.submit(circuit, shots=200)                          # analog: any target
    qhpc_lab.submit(circuit, shots=200, target="emulator", x=0.5)  # digital, a parameter bound

Bitstrings follow Qadence's and Pulser's order: qubit 0 first.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from typing import TYPE_CHECKING, Any

from qhpc_lab.programs.envelope import ProgramError

if TYPE_CHECKING:
    from pulser import Sequence
    from qadence import QuantumCircuit

    from qhpc_lab.programs.validation import DeviceSpec

GLOBAL, LOCAL = "Global", "Local"
"""The channel names Qadence's Pulser backend declares."""


def as_circuit(obj: Any) -> QuantumCircuit:
    from qadence import QuantumCircuit
    from qadence.blocks import AbstractBlock

    if isinstance(obj, QuantumCircuit):
        return obj
    if isinstance(obj, AbstractBlock):
        return QuantumCircuit(obj.n_qubits, obj)
    raise ProgramError(
        f"cannot turn a {type(obj).__qualname__} into a program: "
        "expected a qadence QuantumCircuit or block"
    )


def is_analog(circuit: QuantumCircuit) -> bool:
    """True when every operation is an analog block (what Qadence's Pulser backend takes)."""
    from qadence.blocks.analog import AnalogBlock
    from qadence.blocks.utils import primitive_blocks

    blocks = [circuit.block] if isinstance(circuit.block, AnalogBlock) else None
    if blocks is None:
        try:
            blocks = primitive_blocks(circuit.block)
        except NotImplementedError:
            return False
    return bool(blocks) and all(isinstance(block, AnalogBlock) for block in blocks)


def sample(circuit: QuantumCircuit, values: dict[str, Any], shots: int) -> dict[str, int]:
    """``shots`` samples from Qadence's own emulator (pyqtorch)."""
    import qadence

    (counts,) = qadence.sample(circuit, values=_tensors(values), n_shots=shots)
    return {str(bits): int(n) for bits, n in counts.items()}


def to_pulser(
    circuit: QuantumCircuit, device: DeviceSpec | None, values: dict[str, Any] | None = None
) -> Sequence:
    """The Pulser sequence Qadence's Pulser backend makes, bound to ``values`` and moved to
    ``device`` (its pulses use the device's global channel limits); without a device, on
    Qadence's own idealised device."""
    if device is not None:
        circuit = _with_device_limits(circuit, device)
    if circuit.register.device_specs.pattern is not None:
        raise ProgramError("Qadence addressing patterns need a local channel; not supported")
    # Qadence's Pulser backend warns about its own internals (deprecations, rebuilding a
    # built sequence): nothing the user can act on. Recorded and dropped, not filtered: Pulser
    # forces some "once", and pasqal-cloud, imported here, turns every DeprecationWarning on.
    with warnings.catch_warnings(record=True):
        from qadence.backends.pulser import Backend
        from qadence.backends.utils import to_list_of_dicts

        backend = Backend()
        converted = backend.convert(circuit)
        try:
            params = converted.embedding_fn(converted.params, _tensors(values or {}))
        except KeyError as missing:
            raise ProgramError(
                f"the circuit needs a value for parameter {missing}", "variables"
            ) from None
        sequence = backend.assign_parameters(converted.circuit, to_list_of_dicts(params)[0])
        return sequence if device is None else _moved(sequence, device)


def _moved(sequence: Sequence, device: DeviceSpec) -> Sequence:
    """``sequence`` on ``device``: its global channel only, string atom ids."""
    from pulser import Sequence

    data = json.loads(sequence.to_abstract_repr())
    if any(op.get("channel") == LOCAL and op["op"] != "target" for op in data["operations"]):
        raise ProgramError(f"the circuit addresses atoms locally; {device.name} cannot")
    data["device"] = json.loads(device.json)
    data["channels"] = {GLOBAL: "rydberg_global"}
    data["operations"] = [op for op in data["operations"] if op.get("channel") != LOCAL]
    for atom in data["register"]:
        atom["name"] = f"q{atom['name']}"
    try:
        return Sequence.from_abstract_repr(json.dumps(data))
    except Exception as err:
        raise ProgramError(f"the circuit does not fit {device.name}: {err}", "device") from None


def _with_device_limits(circuit: QuantumCircuit, device: DeviceSpec) -> QuantumCircuit:
    """The circuit on a register whose device specs carry ``device``'s global channel limits,
    so that Qadence shapes its pulses for that device."""
    from qadence import QuantumCircuit, Register

    channel = next(
        (
            ch
            for ch in device.channels.values()
            if ch.get("addressing") == "Global" and ch.get("basis") == "ground-rydberg"
        ),
        None,
    )
    if channel is None:
        raise ProgramError(f"{device.name} has no global Rydberg channel for analog circuits")
    specs = circuit.register.device_specs
    limits = {"max_amp": channel.get("max_amp"), "max_detuning": channel.get("max_abs_detuning")}
    specs = dataclasses.replace(specs, **{k: v for k, v in limits.items() if v is not None})
    register = Register(circuit.register.graph, spacing=None, device_specs=specs)
    return QuantumCircuit(register, circuit.block)


def _tensors(values: dict[str, Any]) -> dict[str, Any]:
    import torch

    return {
        name: torch.as_tensor(value, dtype=torch.float64).reshape(-1)
        for name, value in values.items()
    }
