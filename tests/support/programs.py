"""Small valid programs for tests and benchmarks: Pulser sequences (a short pulse, an
adiabatic antiferromagnetic preparation on a chain or a lattice) and an analog Qiskit circuit."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from qiskit import QuantumCircuit


def pulser_sequence_json(atoms: int = 2, spacing: float = 6.0, duration: int = 200) -> str:
    """A small valid Pulser sequence (abstract repr) on a line of ``atoms`` atoms."""
    from pulser import Pulse, Register, Sequence
    from pulser.devices import AnalogDevice

    register = Register.from_coordinates(
        [(i * spacing - (atoms - 1) * spacing / 2, 0.0) for i in range(atoms)], prefix="q"
    )
    sequence = Sequence(register, AnalogDevice)
    sequence.declare_channel("g", "rydberg_global")
    sequence.add(Pulse.ConstantPulse(duration, 2.0, 0.0, 0.0), "g")
    sequence.measure("ground-rydberg")
    return sequence.to_abstract_repr()


def parametrised_sequence_json(**defaults: float) -> str:
    """A Pulser sequence whose pulse amplitude is variable ``omega``, written as Pulser writes
    it with ``to_abstract_repr(**defaults)``: the defaults (or zeros) in its ``variables``."""
    from pulser import Pulse, Register, Sequence
    from pulser.devices import AnalogDevice

    sequence = Sequence(
        Register.from_coordinates([(-3.0, 0.0), (3.0, 0.0)], prefix="q"), AnalogDevice
    )
    sequence.declare_channel("g", "rydberg_global")
    omega = sequence.declare_variable("omega")
    sequence.add(Pulse.ConstantPulse(200, omega, 0.0, 0.0), "g")
    sequence.measure("ground-rydberg")
    return sequence.to_abstract_repr(**defaults)


def analog_qiskit_circuit() -> QuantumCircuit:
    """qiskit-pasqal-provider's analog gate: two atoms, a global pulse."""
    from qiskit import QuantumCircuit
    from qiskit_pasqal_provider.providers.gate import HamiltonianGate, InterpolatePoints

    gate = HamiltonianGate(
        InterpolatePoints(values=[0, 4, 0]),
        InterpolatePoints(values=[-5, 0, 5]),
        0.0,
        [[0, 0], [2, 0]],
        transform=True,
    )
    circuit = QuantumCircuit(2)
    circuit.append(gate, circuit.qubits)
    return circuit


def chain(atoms: int, spacing: float = 7.0) -> list[tuple[float, float]]:
    """A 1D chain centred on the origin, neighbours ``spacing`` µm apart."""
    return [(i * spacing - (atoms - 1) * spacing / 2, 0.0) for i in range(atoms)]


def square(side: int, spacing: float = 7.0, rows: int | None = None) -> list[tuple[float, float]]:
    """A ``side`` × ``rows`` (default square) lattice, row by row, centred on the origin."""
    rows = rows or side
    return [
        (x * spacing - (side - 1) * spacing / 2, y * spacing - (rows - 1) * spacing / 2)
        for y in range(rows)
        for x in range(side)
    ]


def antiferromagnetic_json(coordinates: list[tuple[float, float]], duration: int = 3000) -> str:
    """Pulser's adiabatic antiferromagnetic preparation (its tutorial's values for 7 µm: Ω up
    to 2.3 × 2π rad/µs, δ swept from −6U to 2U with U = Ω/2) on ``coordinates``, on
    ``MockDevice`` (no register size or radius limit)."""
    import math

    from pulser import Pulse, Register, Sequence
    from pulser.devices import MockDevice
    from pulser.waveforms import InterpolatedWaveform

    omega = 2.3 * 2 * math.pi
    u = omega / 2
    sequence = Sequence(Register.from_coordinates(coordinates, prefix="q"), MockDevice)
    sequence.declare_channel("g", "rydberg_global")
    amplitude = InterpolatedWaveform(duration, [1e-9, omega, omega, 1e-9])
    detuning = InterpolatedWaveform(duration, [-6 * u, -6 * u, 2 * u, 2 * u])
    sequence.add(Pulse(amplitude, detuning, 0.0), "g")
    sequence.measure("ground-rydberg")
    return sequence.to_abstract_repr()
