"""Validation against the ``test`` device: each rule refuses with the program's value and the
device's limit, so a user can fix the program without reading the device JSON."""

from __future__ import annotations

from typing import Any

import pytest
from pulser import Pulse, Register, Sequence
from pulser.devices import AnalogDevice, DigitalAnalogDevice, MockDevice
from qiskit import QuantumCircuit

from qhpc_lab.programs import (
    DeviceRuleViolation,
    DeviceSpec,
    Program,
    ProgramError,
    ProgramFacts,
    from_pulser,
    from_qiskit,
    validate,
)
from qhpc_lab.qpu import DeviceProfile


@pytest.fixture(scope="module")
def spec() -> DeviceSpec:
    """QHPC-Test: 16 atoms, 5 µm apart, 38 µm radius, 6000 ns, 10000 runs, rydberg_global."""
    return DeviceProfile.load("test").spec


def _sequence(
    coords: list[tuple[float, float]],
    device: Any = MockDevice,
    channel: str = "rydberg_global",
    duration: int = 200,
    amplitude: float = 2.0,
    detuning: float = 0.0,
) -> Sequence:
    """One constant pulse; MockDevice has no limits, so only the test device can refuse it."""
    register = Register.from_coordinates(coords, center=False, prefix="q")
    sequence = Sequence(register, device)
    if channel.endswith("_local"):
        sequence.declare_channel("ch", channel, initial_target="q0")
    else:
        sequence.declare_channel("ch", channel)
    sequence.add(Pulse.ConstantPulse(duration, amplitude, detuning, 0.0), "ch")
    return sequence


PAIR = [(0.0, 0.0), (6.0, 0.0)]


def _refusal(program: Program, spec: DeviceSpec, rule: str) -> str:
    with pytest.raises(DeviceRuleViolation) as err:
        validate(program, spec)
    assert err.value.rule == rule
    message = str(err.value)
    assert message.startswith(f"{rule}: ")
    return message


def test_valid_pulser_program_returns_its_facts(spec: DeviceSpec) -> None:
    program = from_pulser(_sequence(PAIR, AnalogDevice, duration=400), 100)
    assert validate(program, spec) == ProgramFacts(num_qubits=2, duration_ns=400)


def test_valid_qasm3_program_returns_its_facts(spec: DeviceSpec) -> None:
    circuit = QuantumCircuit(3)
    circuit.h(0)
    assert validate(from_qiskit(circuit, 100), spec) == ProgramFacts(3, None)


def test_max_runs(spec: DeviceSpec) -> None:
    program = from_pulser(_sequence(PAIR, AnalogDevice), 10_001)
    message = _refusal(program, spec, "max_runs")
    assert "10001" in message and "10000" in message


def test_max_atom_num(spec: DeviceSpec) -> None:
    line = [(6.0 * i - 48.0, 0.0) for i in range(17)]
    message = _refusal(from_pulser(_sequence(line), 10), spec, "max_atom_num")
    assert "17 atoms" in message and "16" in message


def test_min_atom_distance(spec: DeviceSpec) -> None:
    program = from_pulser(_sequence([(0.0, 0.0), (4.0, 0.0)]), 10)
    message = _refusal(program, spec, "min_atom_distance")
    assert "4.00 µm" in message and "5 µm" in message


def test_max_radial_distance(spec: DeviceSpec) -> None:
    program = from_pulser(_sequence([(0.0, 0.0), (40.0, 0.0)]), 10)
    message = _refusal(program, spec, "max_radial_distance")
    assert "40.00 µm" in message and "38 µm" in message


def test_max_sequence_duration(spec: DeviceSpec) -> None:
    program = from_pulser(_sequence(PAIR, duration=7000), 10)
    message = _refusal(program, spec, "max_sequence_duration")
    assert "7000 ns" in message and "6000 ns" in message


@pytest.mark.parametrize("channel", ["raman_local", "rydberg_local"])
def test_channels_the_device_lacks(spec: DeviceSpec, channel: str) -> None:
    program = from_pulser(_sequence(PAIR, DigitalAnalogDevice, channel=channel), 10)
    message = _refusal(program, spec, "channels")
    assert channel in message and "rydberg_global" in message


def test_amplitude_above_the_channel_max(spec: DeviceSpec) -> None:
    # DigitalAnalogDevice allows 15.7 rad/µs on rydberg_global; the test device 12.57.
    program = from_pulser(_sequence(PAIR, DigitalAnalogDevice, amplitude=14.0), 10)
    message = _refusal(program, spec, "device_compatibility")
    assert "amplitude of 14.00" in message and "12.57" in message


def test_detuning_above_the_channel_max(spec: DeviceSpec) -> None:
    program = from_pulser(_sequence(PAIR, detuning=-130.0), 10)
    message = _refusal(program, spec, "device_compatibility")
    assert "detuning of 130.00" in message and "125.66" in message


def test_other_incompatibilities_keep_pulsers_reason(spec: DeviceSpec) -> None:
    # 10 ns is below the channel's 16 ns minimum pulse duration: no value check of ours covers
    # it, so Pulser's own message must still come through under the rule.
    program = from_pulser(_sequence(PAIR, duration=10), 10)
    message = _refusal(program, spec, "device_compatibility")
    assert "at least 16 ns" in message


def test_qasm3_with_more_qubits_than_atoms(spec: DeviceSpec) -> None:
    circuit = QuantumCircuit(17)
    circuit.h(0)
    message = _refusal(from_qiskit(circuit, 10), spec, "max_atom_num")
    assert "17 qubits" in message and "16" in message


def test_invalid_qasm3_text_is_a_program_error(spec: DeviceSpec) -> None:
    program = Program("qasm3", "OPENQASM 3.0;\nqubit[2] q;\nnot_a_gate q;", 10)
    with pytest.raises(ProgramError, match="not valid OpenQASM 3") as err:
        validate(program, spec)
    assert not isinstance(err.value, DeviceRuleViolation)
    assert err.value.rule == "body"


def test_invalid_pulser_body_is_a_program_error(spec: DeviceSpec) -> None:
    with pytest.raises(ProgramError, match="not a valid Pulser abstract representation") as err:
        validate(Program("pulser", '{"version": "1"}', 10), spec)
    assert err.value.rule == "body"


def _parametrised(device: Any = AnalogDevice) -> Sequence:
    register = Register.from_coordinates(PAIR, prefix="q")
    sequence = Sequence(register, device)
    duration = sequence.declare_variable("duration", dtype=int)
    amplitude = sequence.declare_variable("amplitude")
    sequence.declare_channel("g", "rydberg_global")
    sequence.add(Pulse.ConstantPulse(duration, amplitude, 0.0, 0.0), "g")
    return sequence


def test_parametrised_sequence_is_built_with_its_variables(spec: DeviceSpec) -> None:
    program = from_pulser(_parametrised(), 10, duration=800, amplitude=1.0)
    assert validate(program, spec) == ProgramFacts(num_qubits=2, duration_ns=800)


def test_variables_are_checked_against_the_device(spec: DeviceSpec) -> None:
    # Built on MockDevice, so the 7000 ns only breaks the test device's limit.
    program = from_pulser(_parametrised(MockDevice), 10, duration=7000, amplitude=1.0)
    _refusal(program, spec, "max_sequence_duration")


def test_parametrised_sequence_with_a_missing_variable(spec: DeviceSpec) -> None:
    program = from_pulser(_parametrised(), 10, duration=800)
    with pytest.raises(
        ProgramError, match=r"cannot build the parametrised sequence.*amplitude"
    ) as err:
        validate(program, spec)
    assert err.value.rule == "variables"


def test_a_check_remembered_for_one_device_does_not_pass_on_another() -> None:
    # Successful checks are cached; a stricter device must still refuse the same program.
    program = from_pulser(_sequence([(0.0, 0.0), (6.0, 0.0), (12.0, 0.0)]), 10)
    roomy = DeviceProfile.load("test").spec
    assert validate(program, roomy).num_qubits == 3
    data = roomy.json.replace('"max_atom_num": 16', '"max_atom_num": 2')
    assert data != roomy.json
    _refusal(program, DeviceSpec(data), "max_atom_num")
