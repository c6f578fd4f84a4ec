"""The Program envelope and to_program, the one conversion out of the SDKs: what every
boundary accepts or refuses."""

from __future__ import annotations

import json

import pytest
from pulser import Pulse, Register, Sequence
from pulser.devices import AnalogDevice
from qiskit import QuantumCircuit

from qhpc_lab.programs import (
    FORMATS,
    DeviceSpec,
    NativeProgram,
    Program,
    ProgramError,
    has_analog_gate,
    to_program,
)
from qhpc_lab.qpu import DeviceProfile
from tests.support.programs import analog_qiskit_circuit, pulser_sequence_json

# Qadence and Pulser warn about their own deprecations on every conversion.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")


def _parametrised_sequence() -> Sequence:
    """A Pulser sequence whose pulse duration and amplitude are variables."""
    register = Register.from_coordinates([(0.0, 0.0), (6.0, 0.0)], prefix="q")
    sequence = Sequence(register, AnalogDevice)
    duration = sequence.declare_variable("duration", dtype=int)
    amplitude = sequence.declare_variable("amplitude")
    sequence.declare_channel("g", "rydberg_global")
    sequence.add(Pulse.ConstantPulse(duration, amplitude, 0.0, 0.0), "g")
    sequence.measure("ground-rydberg")
    return sequence


def _bell() -> QuantumCircuit:
    circuit = QuantumCircuit(2, name="bell")
    circuit.h(0)
    circuit.cx(0, 1)
    return circuit


# --- envelope ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "program",
    [
        Program("qasm3", "OPENQASM 3.0;", 10),
        Program("pulser", '{"x": 1}', 5, name="run-1", variables={"t": 200, "a": [1.0, 2.0]}),
    ],
)
def test_json_round_trip(program: Program) -> None:
    assert Program.from_json(program.to_json()) == program


def test_to_dict_leaves_out_empty_optional_fields() -> None:
    assert Program("qasm3", "OPENQASM 3.0;", 3).to_dict() == {
        "format": "qasm3",
        "body": "OPENQASM 3.0;",
        "shots": 3,
    }


def test_unknown_format_lists_the_supported_ones() -> None:
    with pytest.raises(ProgramError, match="'cudaq'") as err:
        Program("cudaq", "{}", 10)
    assert err.value.rule == "format"
    for fmt in FORMATS:
        assert fmt in str(err.value)


@pytest.mark.parametrize("body", ["", "   \n"])
def test_empty_body_is_refused(body: str) -> None:
    with pytest.raises(ProgramError, match="empty") as err:
        Program("qasm3", body, 10)
    assert err.value.rule == "body"


@pytest.mark.parametrize("shots", [0, -5, True, False, 2.0, "10", None])
def test_shots_must_be_a_positive_integer(shots: object) -> None:
    with pytest.raises(ProgramError, match="shots must be a positive integer") as err:
        Program("qasm3", "OPENQASM 3.0;", shots)  # type: ignore[arg-type]
    assert err.value.rule == "shots"


def test_unknown_envelope_fields_are_named() -> None:
    data = {"format": "qasm3", "body": "OPENQASM 3.0;", "shots": 1, "priority": 9, "foo": 1}
    with pytest.raises(ProgramError, match="unknown envelope fields: foo, priority") as err:
        Program.from_dict(data)
    assert err.value.rule == "envelope"


@pytest.mark.parametrize("missing", ["format", "body", "shots"])
def test_missing_envelope_field_is_named(missing: str) -> None:
    data = {"format": "qasm3", "body": "OPENQASM 3.0;", "shots": 1}
    del data[missing]
    with pytest.raises(ProgramError, match=f"'{missing}' is missing") as err:
        Program.from_json(json.dumps(data))
    assert err.value.rule == "envelope"


@pytest.mark.parametrize("text", ["not json", "[1, 2]", '"pulser"', "null"])
def test_envelope_that_is_not_a_json_object_is_a_program_error(text: str) -> None:
    with pytest.raises(ProgramError, match="envelope") as err:
        Program.from_json(text)
    assert err.value.rule == "envelope"


# --- to_program ---------------------------------------------------------------------------------


def test_to_program_pulser_carries_the_abstract_repr() -> None:
    body = pulser_sequence_json(3)
    program = to_program(Sequence.from_abstract_repr(body), 100, name="line")
    assert (program.format, program.shots, program.name, program.variables) == (
        "pulser",
        100,
        "line",
        {},
    )
    assert len(json.loads(program.body)["register"]) == 3
    assert Sequence.from_abstract_repr(program.body).get_duration() == 200


def test_to_program_pulser_keeps_the_variables_of_a_parametrised_sequence() -> None:
    program = to_program(_parametrised_sequence(), 50, duration=300, amplitude=1.5)
    assert program.variables == {"duration": 300, "amplitude": 1.5}
    rebuilt = Sequence.from_abstract_repr(program.body)
    assert rebuilt.is_parametrized()
    assert rebuilt.build(**program.variables).get_duration() == 300


def test_to_program_qiskit_measures_a_circuit_without_measurements() -> None:
    circuit = _bell()
    program = to_program(circuit, 200)
    assert (program.format, program.shots, program.name) == ("qasm3", 200, "bell")
    assert program.body.startswith("OPENQASM 3")
    assert program.body.count("measure") == 2
    assert circuit.num_clbits == 0, "the caller's circuit must not be modified"


def test_to_program_qiskit_keeps_existing_measurements() -> None:
    circuit = QuantumCircuit(2, 1)
    circuit.h(0)
    circuit.measure(0, 0)
    program = to_program(circuit, 10, name="one-bit")
    assert program.name == "one-bit"
    assert program.body.count("measure") == 1


def test_to_program_dispatches_on_the_sdk() -> None:
    assert to_program(_bell(), 20).format == "qasm3"
    assert to_program(_bell(), None).shots == 100, "SDK objects default to 100 shots"
    pulser_program = to_program(_parametrised_sequence(), 30, duration=100, amplitude=1.0)
    assert pulser_program.format == "pulser"
    assert pulser_program.variables == {"duration": 100, "amplitude": 1.0}


def test_to_program_overrides_a_programs_own_fields_with_the_arguments() -> None:
    program = Program("pulser", '{"x": 1}', 7, name="mine", variables={"a": 1.0, "t": 100})
    assert to_program(program, None) is program
    overridden = to_program(program, 999, name="yours", t=200)
    assert (overridden.shots, overridden.name) == (999, "yours")
    assert overridden.variables == {"a": 1.0, "t": 200}


@pytest.mark.parametrize(
    "obj",
    [
        "OPENQASM 3.0;",
        {"format": "qasm3"},
        Register.square(2, 6.0, prefix="q"),
    ],
    ids=["str", "dict", "pulser-register"],
)
def test_to_program_refuses_unsupported_objects(obj: object) -> None:
    with pytest.raises(ProgramError, match=r"cannot turn a .* into a program"):
        to_program(obj, 10)


def test_to_program_refuses_a_qiskit_object_that_is_not_a_circuit() -> None:
    from qiskit.quantum_info import SparsePauliOp

    with pytest.raises(ProgramError, match="SparsePauliOp"):
        to_program(SparsePauliOp("ZZ"), 10)


# --- analog circuits: Pulser on the target's device; digital Qadence: a NativeProgram ----------


@pytest.fixture(scope="module")
def device() -> DeviceSpec:
    """QHPC-Test, whose register must sit on a layout: what a real QPU's device asks."""
    return DeviceProfile.load("test").spec


def test_analog_qiskit_circuits_become_pulser_on_the_device(device: DeviceSpec) -> None:
    circuit = analog_qiskit_circuit()
    assert has_analog_gate(circuit) and not has_analog_gate(_bell())
    program = to_program(circuit, 50, device)
    assert (program.format, program.shots) == ("pulser", 50)
    sequence = Sequence.from_abstract_repr(program.body)
    assert sequence.device.name == "QHPC-Test" and sequence.register.layout is not None
    assert to_program(circuit, 50).format == "pulser", "no device: Pulser's AnalogDevice"


def test_analog_qadence_circuits_become_pulser_on_the_device(device: DeviceSpec) -> None:
    from qadence import AnalogInteraction, AnalogRX, QuantumCircuit, Register, chain

    circuit = QuantumCircuit(
        Register.line(2, spacing=8.0), chain(AnalogRX(3.14159), AnalogInteraction(500))
    )
    program = to_program(circuit, 60, device, name="rx")
    assert (program.format, program.shots, program.name) == ("pulser", 60, "rx")
    sequence = Sequence.from_abstract_repr(program.body)
    assert sequence.device.name == "QHPC-Test" and list(sequence.declared_channels) == ["Global"]
    assert list(sequence.register.qubit_ids) == ["q0", "q1"]


def test_digital_qadence_circuits_become_native_programs(device: DeviceSpec) -> None:
    from qadence import CNOT, RX, FeatureParameter, H, QuantumCircuit, chain

    circuit = QuantumCircuit(2, chain(H(0), CNOT(0, 1), RX(1, FeatureParameter("x"))))
    native = to_program(circuit, 40, device, x=0.0)
    assert isinstance(native, NativeProgram) and native.shots == 40
    assert native.engine == "qadence (pyqtorch)"
    counts = native.sample(native.shots)
    assert sum(counts.values()) == 40 and set(counts) <= {"00", "11"}
    with pytest.raises(ProgramError, match="shots must be a positive integer"):
        to_program(circuit, 0, x=0.0)
