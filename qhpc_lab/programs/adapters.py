"""Turn SDK objects into Program envelopes. SDKs are imported lazily: each is heavy."""

from __future__ import annotations

from typing import Any

from qhpc_lab.programs.envelope import Program, ProgramError


def from_pulser(sequence: Any, shots: int, name: str | None = None, **variables: Any) -> Program:
    """A Pulser ``Sequence`` (built or parametrised) as its abstract representation."""
    return Program("pulser", sequence.to_abstract_repr(), shots, name, dict(variables))


def from_qiskit(circuit: Any, shots: int, name: str | None = None) -> Program:
    """A Qiskit ``QuantumCircuit`` as OpenQASM 3; circuits without measurements measure all."""
    from qiskit import qasm3

    if circuit.num_clbits == 0:
        circuit = circuit.measure_all(inplace=False)
    return Program("qasm3", qasm3.dumps(circuit), shots, name or circuit.name)


def to_program(obj: Any, shots: int, name: str | None = None, **variables: Any) -> Program:
    """Dispatch on the object's type: a Program, a Pulser Sequence or a Qiskit circuit."""
    if isinstance(obj, Program):
        return obj
    # The module test keeps an SDK unimported unless the object comes from it; the isinstance
    # test refuses its other objects (a pulser Register is not a program).
    module = type(obj).__module__
    if module.startswith("pulser"):
        from pulser import Sequence

        if isinstance(obj, Sequence):
            return from_pulser(obj, shots, name, **variables)
    if module.startswith("qiskit"):
        from qiskit import QuantumCircuit

        if isinstance(obj, QuantumCircuit):
            return from_qiskit(obj, shots, name)
    raise ProgramError(
        f"cannot turn a {type(obj).__qualname__} into a program: "
        "expected a pulser.Sequence, a qiskit.QuantumCircuit or a qhpc_lab Program"
    )
