"""Static bounds: a program too big to parse or to run is refused from its text, in
milliseconds, with the limit and the program's value; programs within them still validate."""

from __future__ import annotations

import json
import time

import pytest

from qhpc_lab.programs import DeviceRuleViolation, DeviceSpec, Program, ProgramError, validate
from qhpc_lab.programs.bounds import (
    PULSER_MAX_OPERATIONS,
    QASM_MAX_OPERATIONS,
    check_pulser,
    check_qasm3,
)
from qhpc_lab.qpu import DeviceProfile
from tests.support.programs import pulser_sequence_json

HEAD = 'OPENQASM 3.0; include "stdgates.inc"; qubit[2] q; bit[2] c;\n'
LOOP = HEAD + "for int i in [0:1000000000] { h q[0]; } c = measure q;"
"""The program that held the QPU forever: a billion and one iterations (ranges are inclusive)."""


@pytest.fixture(scope="module")
def spec() -> DeviceSpec:
    return DeviceProfile.load("test").spec


def _refused(body: str, rule: str) -> str:
    with pytest.raises(ProgramError) as err:
        check_qasm3(body, "QHPC-Test", 16)
    assert err.value.rule == rule
    return str(err.value)


def test_a_billion_iteration_loop_is_refused_at_validation(spec: DeviceSpec) -> None:
    with pytest.raises(ProgramError) as err:
        validate(Program("qasm3", LOOP, 10), spec)
    assert err.value.rule == "qasm_operations"
    message = str(err.value)
    assert "1000000001 operations" in message
    assert f"the limit is {QASM_MAX_OPERATIONS}" in message


def test_nested_loops_multiply() -> None:
    inner = "for int i in [0:69] { for int j in [0:69] { x q[0]; } }"
    check_qasm3(HEAD + inner, "QHPC-Test", 16)  # 70 × 70 = 4900
    message = _refused(HEAD + inner.replace("69", "70"), "qasm_operations")
    assert "5041 operations" in message


def test_ranges_with_steps_sets_and_constants() -> None:
    _refused(HEAD + "for int i in [0:2:10001] { x q[0]; }", "qasm_operations")
    check_qasm3(HEAD + "for int i in [0:2:9997] { x q[0]; }", "QHPC-Test", 16)  # 4999
    check_qasm3(HEAD + "for int i in {1, 2, 3} { x q[0]; }", "QHPC-Test", 16)
    counted = HEAD + "const int n = 1_000; for int i in [1:n * 6] { x q[0]; }"
    assert "6001 operations" in _refused(counted, "qasm_operations")


def test_gate_calls_cost_their_body() -> None:
    program = HEAD + "gate g a { x a; y a; } for int i in [1:1700] { g q[0]; }"
    assert "5100 operations" in _refused(program, "qasm_operations")  # 1700 × (call + 2)


def test_while_loops_are_refused() -> None:
    message = _refused(HEAD + "while (true) { x q[0]; }", "qasm_while")
    assert "for loop" in message


def test_a_loop_that_cannot_be_bounded_is_refused() -> None:
    assert "'c'" in _refused(HEAD + "for bit b in c { x q[0]; }", "qasm_loops")
    _refused(HEAD + "input int n; for int i in [0:n] { x q[0]; }", "qasm_loops")


def test_literals_are_not_blocks() -> None:
    program = HEAD + "array[int, 3] a = {1, 2, 3}; for int i in {4, 5} { x q[0]; }"
    check_qasm3(program, "QHPC-Test", 16)


def test_more_qubits_than_atoms_is_refused_before_parsing() -> None:
    with pytest.raises(DeviceRuleViolation) as err:
        check_qasm3("OPENQASM 3.0; qubit[9] a; qubit[8] b;", "QHPC-Test", 16)
    assert err.value.rule == "max_atom_num"
    assert "17 qubits" in str(err.value) and "16 atoms" in str(err.value)


def test_a_program_within_the_bounds_still_validates(spec: DeviceSpec) -> None:
    program = HEAD + (
        "gate bell a, b { h a; cx a, b; }\n"
        "for int i in [0:99] { bell q[0], q[1]; }\n"
        "if (c[0]) { x q[1]; } else { z q[1]; }\n"
        "c = measure q;"
    )
    assert validate(Program("qasm3", program, 10), spec).num_qubits == 2


def test_a_957_kb_body_is_answered_fast(spec: DeviceSpec) -> None:
    # Under the 1 MiB payload limit; Qiskit's importer took 27-35 s on it.
    lines = "".join(f"cx q[{i % 3}], q[3];\n" for i in range(60_000))
    body = 'OPENQASM 3.0; include "stdgates.inc"; qubit[4] q;\n' + lines
    assert len(body) > 900_000
    started = time.perf_counter()
    with pytest.raises(ProgramError) as err:
        validate(Program("qasm3", body, 10), spec)
    assert time.perf_counter() - started < 2.0
    assert err.value.rule == "qasm_operations"
    commented = HEAD + "// " + "x" * 950_000 + "\n/* " + "y q[0];" * 1000 + " */ h q[0];"
    started = time.perf_counter()
    check_qasm3(commented, "QHPC-Test", 16)
    assert time.perf_counter() - started < 2.0


def test_pulser_operations_are_bounded_before_pulser_parses_them() -> None:
    data = json.loads(pulser_sequence_json(2))
    data["operations"] = data["operations"] * (PULSER_MAX_OPERATIONS + 1)
    count = len(data["operations"])
    with pytest.raises(ProgramError) as err:
        check_pulser(json.dumps(data), "QHPC-Test", 16)
    assert err.value.rule == "pulser_operations"
    assert f"{count} operations" in str(err.value)
    assert f"the limit is {PULSER_MAX_OPERATIONS}" in str(err.value)


def test_pulser_register_bounded_before_pulser_parses_it() -> None:
    data = json.loads(pulser_sequence_json(2))
    atom = data["register"][0]
    data["register"] = [{**atom, "name": f"q{i}", "x": 6.0 * i} for i in range(17)]
    with pytest.raises(DeviceRuleViolation) as err:
        check_pulser(json.dumps(data), "QHPC-Test", 16)
    assert err.value.rule == "max_atom_num"
    assert "17 atoms" in str(err.value)
