"""Bridges between the quantum SDKs and qhpc_lab, both ways.

Into SDKs: a Pulser ``RemoteConnection`` (:mod:`qhpc_lab.bridges.pulser`) and a Qiskit
``BaseSamplerV2`` (:mod:`qhpc_lab.bridges.qiskit`) that run through the client. Out of SDKs:
:func:`adapt` turns the objects the programs layer cannot serialise into ones it can — analog
Qiskit circuits (qiskit-pasqal-provider's ``HamiltonianGate``) and analog Qadence circuits
become Pulser sequences on the target's device; digital Qadence circuits become a
:class:`NativeProgram` that pyqtorch runs on the emulator target. SDKs are imported only when
an object comes from them (each costs seconds).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from qhpc_lab.programs import DeviceSpec


@dataclass(frozen=True)
class NativeProgram:
    """A program only an in-process engine runs: the emulator target calls ``sample(shots)``."""

    what: str
    """What it is, for messages: "a digital Qadence circuit"."""
    engine: str
    """The engine, shown as the result's device: "qadence (pyqtorch)"."""
    sample: Callable[[int], dict[str, int]]


def adapt(
    obj: Any, device: DeviceSpec | None, variables: dict[str, Any]
) -> tuple[Any, dict[str, Any]]:
    """``obj`` as something :func:`qhpc_lab.programs.to_program` takes (or a NativeProgram),
    and the variables left to bind. ``device``: the target's, when known; conversions to
    Pulser build on it so that the program is checked against the device it runs on."""
    module = type(obj).__module__
    if module.startswith("qadence"):
        from qhpc_lab.bridges import qadence

        return qadence.adapt(obj, device, variables)
    if module.startswith("qiskit") and has_analog_gate(obj):
        from qhpc_lab.bridges import qiskit

        return qiskit.analog_to_pulser(obj, device), variables
    return obj, variables


def has_analog_gate(obj: Any) -> bool:
    """True for a circuit holding a gate with an atom register (qiskit-pasqal-provider's)."""
    from qiskit import QuantumCircuit  # already imported: obj comes from qiskit

    return isinstance(obj, QuantumCircuit) and any(
        hasattr(instruction.operation, "analog_register") for instruction in obj.data
    )
