"""Validation against the ``test`` device: each rule refuses with the program's value and the
device's limit, so a user can fix the program without reading the device JSON."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from pulser import Pulse, Register, Sequence
from pulser.devices import AnalogDevice, DigitalAnalogDevice, MockDevice
from pulser.register import RegisterLayout
from qiskit import QuantumCircuit

from qhpc_lab.programs import (
    DeviceRuleViolation,
    DeviceSpec,
    Program,
    ProgramError,
    ProgramFacts,
    start_validation_worker,
    stop_validation_worker,
    to_program,
    validate,
    validate_async,
    validation,
    validation_worker_pid,
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
    program = to_program(_sequence(PAIR, AnalogDevice, duration=400), 100)
    assert validate(program, spec) == ProgramFacts(num_qubits=2)


def test_valid_qasm3_program_returns_its_facts(spec: DeviceSpec) -> None:
    circuit = QuantumCircuit(3)
    circuit.h(0)
    assert validate(to_program(circuit, 100), spec) == ProgramFacts(3)


def test_max_runs(spec: DeviceSpec) -> None:
    program = to_program(_sequence(PAIR, AnalogDevice), 10_001)
    message = _refusal(program, spec, "max_runs")
    assert "10001" in message and "10000" in message


def test_max_atom_num(spec: DeviceSpec) -> None:
    line = [(6.0 * i - 48.0, 0.0) for i in range(17)]
    message = _refusal(to_program(_sequence(line), 10), spec, "max_atom_num")
    assert "17 atoms" in message and "16" in message


def test_min_atom_distance(spec: DeviceSpec) -> None:
    program = to_program(_sequence([(0.0, 0.0), (4.0, 0.0)]), 10)
    message = _refusal(program, spec, "min_atom_distance")
    assert "4.00 µm" in message and "5 µm" in message


def test_max_radial_distance(spec: DeviceSpec) -> None:
    program = to_program(_sequence([(0.0, 0.0), (40.0, 0.0)]), 10)
    message = _refusal(program, spec, "max_radial_distance")
    assert "40.00 µm" in message and "38 µm" in message


def test_max_sequence_duration(spec: DeviceSpec) -> None:
    program = to_program(_sequence(PAIR, duration=7000), 10)
    message = _refusal(program, spec, "max_sequence_duration")
    assert "7000 ns" in message and "6000 ns" in message


@pytest.mark.parametrize("channel", ["raman_local", "rydberg_local"])
def test_channels_the_device_lacks(spec: DeviceSpec, channel: str) -> None:
    program = to_program(_sequence(PAIR, DigitalAnalogDevice, channel=channel), 10)
    message = _refusal(program, spec, "channels")
    assert channel in message and "rydberg_global" in message


def test_amplitude_above_the_channel_max(spec: DeviceSpec) -> None:
    # DigitalAnalogDevice allows 15.7 rad/µs on rydberg_global; the test device 12.57.
    program = to_program(_sequence(PAIR, DigitalAnalogDevice, amplitude=14.0), 10)
    message = _refusal(program, spec, "device_compatibility")
    assert "amplitude of 14.00" in message and "12.57" in message


def test_detuning_above_the_channel_max(spec: DeviceSpec) -> None:
    program = to_program(_sequence(PAIR, detuning=-130.0), 10)
    message = _refusal(program, spec, "device_compatibility")
    assert "detuning of 130.00" in message and "125.66" in message


def test_other_incompatibilities_keep_pulsers_reason(spec: DeviceSpec) -> None:
    # 10 ns is below the channel's 16 ns minimum pulse duration: no value check of ours covers
    # it, so Pulser's own message must still come through under the rule.
    program = to_program(_sequence(PAIR, duration=10), 10)
    message = _refusal(program, spec, "device_compatibility")
    assert "at least 16 ns" in message


def test_qasm3_with_more_qubits_than_atoms(spec: DeviceSpec) -> None:
    circuit = QuantumCircuit(17)
    circuit.h(0)
    message = _refusal(to_program(circuit, 10), spec, "max_atom_num")
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
    program = to_program(_parametrised(), 10, duration=800, amplitude=1.0)
    assert validate(program, spec) == ProgramFacts(num_qubits=2)


def test_variables_are_checked_against_the_device(spec: DeviceSpec) -> None:
    # Built on MockDevice, so the 7000 ns only breaks the test device's limit.
    program = to_program(_parametrised(MockDevice), 10, duration=7000, amplitude=1.0)
    _refusal(program, spec, "max_sequence_duration")


def test_parametrised_sequence_with_a_missing_variable(spec: DeviceSpec) -> None:
    program = to_program(_parametrised(), 10, duration=800)
    with pytest.raises(
        ProgramError, match=r"cannot build the parametrised sequence.*amplitude"
    ) as err:
        validate(program, spec)
    assert err.value.rule == "variables"


def test_a_check_remembered_for_one_device_does_not_pass_on_another() -> None:
    # Successful checks are cached; a stricter device must still refuse the same program.
    program = to_program(_sequence([(0.0, 0.0), (6.0, 0.0), (12.0, 0.0)]), 10)
    roomy = DeviceProfile.load("test").spec
    assert validate(program, roomy).num_qubits == 3
    data = roomy.json.replace('"max_atom_num": 16', '"max_atom_num": 2')
    assert data != roomy.json
    _refusal(program, DeviceSpec(data), "max_atom_num")


# --- agreement with Pulser's own device checks ------------------------------------------------


def _on(register: Register, device: Any, duration: int = 200) -> Program:
    sequence = Sequence(register, device)
    sequence.declare_channel("g", "rydberg_global")
    sequence.add(Pulse.ConstantPulse(duration, 1.0, 0.0, 0.0), "g")
    return to_program(sequence, 10)


def _accepted_by_both(register: Register, spec: DeviceSpec, duration: int = 200) -> None:
    program = _on(register, spec.pulser_device, duration)  # Pulser's checks run here
    assert validate(program, spec).num_qubits == len(register.qubits)


UNLIMITED = dataclasses.replace(MockDevice, max_layout_filling=1.0)
"""MockDevice without its one limit on registers, so only the test device can refuse them."""


def _refused_by_both(register: Register, spec: DeviceSpec, rule: str) -> str:
    with pytest.raises(ValueError):
        spec.pulser_device.validate_register(register)
    return _refusal(_on(register, UNLIMITED), spec, rule)


def test_rectangle_at_the_minimum_distance(spec: DeviceSpec) -> None:
    limit = spec.pulser_device.min_atom_distance
    _accepted_by_both(Register.rectangle(4, 4, spacing=limit, prefix="q"), spec)
    # Within Pulser's 1e-6 µm of slack: both accept; past it both refuse.
    _accepted_by_both(Register.rectangle(4, 4, spacing=limit - 5e-7, prefix="q"), spec)
    below = Register.rectangle(4, 4, spacing=limit - 2e-6, prefix="q")
    assert "4.99999800 µm" in _refused_by_both(below, spec, "min_atom_distance")


def test_triangular_lattice_at_the_minimum_distance(spec: DeviceSpec) -> None:
    limit = spec.pulser_device.min_atom_distance
    _accepted_by_both(Register.triangular_lattice(4, 4, spacing=limit, prefix="q"), spec)
    below = Register.triangular_lattice(4, 4, spacing=limit - 2e-6, prefix="q")
    _refused_by_both(below, spec, "min_atom_distance")


def test_register_on_the_devices_trap_layout(spec: DeviceSpec) -> None:
    # The shipped layout's coordinates have 6 decimals: neighbours sit 4.99999998 µm apart.
    layout = spec.pulser_device.pre_calibrated_layouts[0]
    nearest = sorted(layout.traps_dict, key=lambda t: float(np.hypot(*layout.traps_dict[t])))
    _accepted_by_both(layout.define_register(*nearest[:16]), spec)


def test_layout_filling(spec: DeviceSpec) -> None:
    layout = RegisterLayout([(5.0 * i, 5.0 * j) for i in range(5) for j in range(4)])
    _accepted_by_both(layout.define_register(*range(10)), spec)
    message = _refused_by_both(layout.define_register(*range(11)), spec, "max_layout_filling")
    assert "11 of its layout's 20 traps" in message and "allows 10" in message


def test_atom_at_the_maximum_radius(spec: DeviceSpec) -> None:
    limit = spec.pulser_device.max_radial_distance
    edge = Register.from_coordinates([(0.0, 0.0), (limit, 0.0)], center=False, prefix="q")
    _accepted_by_both(edge, spec)
    past = Register.from_coordinates([(0.0, 0.0), (limit + 1e-6, 0.0)], center=False, prefix="q")
    assert "38.00000100 µm" in _refused_by_both(past, spec, "max_radial_distance")


def test_sequence_at_the_maximum_duration(spec: DeviceSpec) -> None:
    limit = spec.max_sequence_duration
    assert limit is not None
    _accepted_by_both(Register.from_coordinates(PAIR, prefix="q"), spec, duration=limit)
    clock = spec.channels["rydberg_global"]["clock_period"]
    with pytest.raises(RuntimeError, match="exceeded the maximum duration"):
        _on(Register.from_coordinates(PAIR, prefix="q"), spec.pulser_device, limit + clock)
    program = _on(Register.from_coordinates(PAIR, prefix="q"), MockDevice, limit + clock)
    _refusal(program, spec, "max_sequence_duration")


# --- validate_async: off the event loop, within a budget --------------------------------------


@pytest.fixture(scope="module")
def validator() -> Iterator[None]:
    """The validation worker, started once for these tests and stopped after them."""
    start_validation_worker()
    yield
    stop_validation_worker()


def _qasm(gates: int, qubits: int = 4) -> Program:
    lines = "".join(f"cx q[{i % (qubits - 1)}], q[{qubits - 1}];\n" for i in range(gates))
    return Program(
        "qasm3", f'OPENQASM 3.0; include "stdgates.inc"; qubit[{qubits}] q;\n' + lines, 5
    )


@pytest.mark.anyio
async def test_validate_async_answers_like_validate(spec: DeviceSpec, validator: None) -> None:
    program = to_program(_sequence(PAIR, AnalogDevice, duration=404), 100)
    assert await validate_async(program, spec) == ProgramFacts(num_qubits=2)
    with pytest.raises(DeviceRuleViolation) as err:
        await validate_async(to_program(_sequence(PAIR, duration=7000), 10), spec)
    assert err.value.rule == "max_sequence_duration"
    assert (
        str(err.value)
        == "max_sequence_duration: sequence lasts 7000 ns; QHPC-Test allows at most 6000 ns"
    )
    with pytest.raises(ProgramError) as body:
        await validate_async(Program("qasm3", "OPENQASM 3.0;\nqubit q;\nnope q;", 10), spec)
    assert body.value.rule == "body" and not isinstance(body.value, DeviceRuleViolation)


@pytest.mark.anyio
async def test_cache_hits_and_static_refusals_never_reach_the_worker(
    spec: DeviceSpec, validator: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    program = _qasm(3, qubits=3)
    facts = await validate_async(program, spec)
    calls: list[object] = []

    async def no_worker(*args: object) -> object:
        calls.append(args)
        raise AssertionError("the worker was asked")

    monkeypatch.setattr(validation._VALIDATOR, "call_async", no_worker)
    answers = await asyncio.gather(*(validate_async(program, spec) for _ in range(500)))
    assert set(answers) == {facts}
    with pytest.raises(ProgramError) as err:
        await validate_async(Program("qasm3", "qubit q; while (true) { x q; }", 1), spec)
    assert err.value.rule == "qasm_while"
    assert calls == []


@pytest.mark.anyio
async def test_concurrent_identical_misses_share_one_check(
    spec: DeviceSpec, validator: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = 0
    original = validation._VALIDATOR.call_async

    async def counted(*args: Any) -> Any:
        nonlocal calls
        calls += 1
        return await original(*args)

    monkeypatch.setattr(validation._VALIDATOR, "call_async", counted)
    program, other = _qasm(7, qubits=2), _qasm(8, qubits=2)
    answers = await asyncio.gather(
        *(validate_async(p, spec) for _ in range(200) for p in (program, other))
    )
    assert {a.num_qubits for a in answers} == {2} and len(answers) == 400
    assert calls == 2


@pytest.mark.anyio
async def test_validation_past_its_budget_is_refused_and_the_worker_replaced(
    spec: DeviceSpec, validator: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # ~4900 gates: about 2.5 s in Qiskit's importer, far past a 0.2 s budget.
    await validate_async(_qasm(2, qubits=2), spec)  # a warm worker: its start is not counted
    before = validation_worker_pid()
    with pytest.raises(ProgramError) as err:
        await validate_async(_qasm(4900), spec, budget_s=0.2)
    assert err.value.rule == "validation_budget"
    assert "time budget of 0.2 s" in str(err.value)
    assert validation_worker_pid() not in (None, before)
    assert (await validate_async(_qasm(5, qubits=3), spec)).num_qubits == 3

    async def no_worker(*args: object) -> object:
        raise AssertionError("the worker was asked")

    # Resubmitted, the refused program does not cost the worker its budget again.
    monkeypatch.setattr(validation._VALIDATOR, "call_async", no_worker)
    with pytest.raises(ProgramError) as again:
        await validate_async(_qasm(4900), spec, budget_s=0.2)
    assert again.value.rule == "validation_budget"
