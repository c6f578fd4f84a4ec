"""The local engines: every engine answers with counts for every shot, and physics holds."""

from __future__ import annotations

import pytest
from pulser import Pulse, Register, Sequence
from pulser.devices import AnalogDevice
from qiskit import QuantumCircuit

from qhpc_lab import emulators
from qhpc_lab.programs import Program, ProgramError, to_program
from tests.support.programs import pulser_sequence_json


def _ghz(n: int) -> QuantumCircuit:
    circuit = QuantumCircuit(n)
    circuit.h(0)
    for i in range(n - 1):
        circuit.cx(i, i + 1)
    return circuit


def _idle_pulser(atoms: int, shots: int) -> Program:
    """Zero amplitude and detuning: every atom stays in the ground state."""
    register = Register.from_coordinates([(6.0 * i, 0.0) for i in range(atoms)], prefix="q")
    sequence = Sequence(register, AnalogDevice)
    sequence.declare_channel("g", "rydberg_global")
    sequence.add(Pulse.ConstantPulse(200, 0.0, 0.0, 0.0), "g")
    sequence.measure("ground-rydberg")
    return to_program(sequence, shots)


@pytest.mark.parametrize(
    ("engine", "program"),
    [
        ("qutip", Program("pulser", pulser_sequence_json(3), 300)),
        ("emu-sv", Program("pulser", pulser_sequence_json(3), 300)),
        ("emu-mps", Program("pulser", pulser_sequence_json(3), 300)),
        ("aer", to_program(_ghz(3), 300)),
    ],
)
def test_each_engine_counts_every_shot(engine: str, program: Program) -> None:
    counts = emulators.run(program, engine=engine)
    assert sum(counts.values()) == 300
    assert all(len(bits) == 3 and set(bits) <= {"0", "1"} for bits in counts)


def test_shots_argument_overrides_the_programs() -> None:
    counts = emulators.run(to_program(_ghz(2), 1000), shots=17)
    assert sum(counts.values()) == 17


def test_ghz3_yields_only_000_and_111() -> None:
    counts = emulators.run(to_program(_ghz(3), 500))
    assert set(counts) == {"000", "111"}
    assert sum(counts.values()) == 500


@pytest.mark.parametrize("engine", ["qutip", "emu-sv", "emu-mps"])
def test_pulser_with_zero_amplitude_yields_only_the_ground_state(engine: str) -> None:
    assert emulators.run(_idle_pulser(3, 200), engine=engine) == {"000": 200}


def test_parametrised_pulser_program_runs_with_its_variables() -> None:
    register = Register.from_coordinates([(0.0, 0.0), (6.0, 0.0)], prefix="q")
    sequence = Sequence(register, AnalogDevice)
    amplitude = sequence.declare_variable("amplitude")
    sequence.declare_channel("g", "rydberg_global")
    sequence.add(Pulse.ConstantPulse(200, amplitude, 0.0, 0.0), "g")
    sequence.measure("ground-rydberg")
    program = to_program(sequence, 50, amplitude=0.0)
    assert emulators.run(program, engine="qutip") == {"00": 50}


def test_unknown_engine_is_a_program_error() -> None:
    with pytest.raises(ProgramError, match=r"'cuda'.*use qutip or emu-sv"):
        emulators.run(_idle_pulser(2, 10), engine="cuda")


def test_engine_of_the_other_format_is_a_program_error() -> None:
    with pytest.raises(ProgramError, match=r"'aer' cannot run pulser"):
        emulators.run(_idle_pulser(2, 10), engine="aer")
    with pytest.raises(ProgramError, match=r"'qutip' cannot run qasm3.*use aer"):
        emulators.run(to_program(_ghz(2), 10), engine="qutip")


def test_choose_engine_by_format() -> None:
    assert emulators.choose_engine(to_program(_ghz(12), 10)) == "aer"


def test_choose_engine_by_register_size() -> None:
    threshold = emulators.PULSER_SV_FROM_ATOMS
    below = Program("pulser", pulser_sequence_json(threshold - 1, spacing=5.0), 10)
    at = Program("pulser", pulser_sequence_json(threshold, spacing=5.0), 10)
    assert emulators.choose_engine(below) == "qutip"
    assert emulators.choose_engine(at) == "emu-sv"
