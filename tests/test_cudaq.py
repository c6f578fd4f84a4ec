"""CUDA-Q analog programs (the AHS JSON its pasqal target sends) against hand-built Pulser
sequences: the same register and the same samples, and malformed programs refused by field."""

from __future__ import annotations

import copy
import json
import math
import re
import subprocess
import sys
import textwrap
from typing import Any

import numpy as np
import pytest
from pulser import Pulse, Register, Sequence
from pulser.sampler import sample
from pulser.waveforms import ConstantWaveform, InterpolatedWaveform, RampWaveform

from qhpc_lab.programs import DeviceRuleViolation, ProgramError, to_program, validate
from qhpc_lab.programs.cudaq import analog_program, cudaq_to_pulser, is_cudaq_analog
from qhpc_lab.qpu import DeviceProfile

pytestmark = pytest.mark.filterwarnings(
    "ignore::DeprecationWarning", "ignore::UserWarning", "ignore::FutureWarning"
)

SPEC = DeviceProfile.load("test").spec
TWO_PI = 2 * math.pi


def decimal(value: float) -> str:
    """A number as CUDA-Q writes it: a decimal string with 8 places."""
    return f"{value:.8f}"


def field(times: list[float], values: list[float]) -> dict[str, Any]:
    return {
        "pattern": "uniform",
        "time_series": {"times": list(map(decimal, times)), "values": list(map(decimal, values))},
    }


def ahs(
    amplitude: dict[str, Any], detuning: dict[str, Any], phase: dict[str, Any]
) -> dict[str, Any]:
    """Three sites 6 µm apart, the middle one empty."""
    sites = [[decimal(0.0), decimal(0.0)], [decimal(6e-6), decimal(0.0)], [decimal(1.2e-5), "0"]]
    return {
        "setup": {"ahs_register": {"sites": sites, "filling": [1, 0, 1]}},
        "hamiltonian": {
            "drivingFields": [{"amplitude": amplitude, "detuning": detuning, "phase": phase}],
            "localDetuning": [],
        },
    }


# A trapezoid (2π rad/µs plateau), a detuning ramp from -10 to 10 rad/µs, a constant phase.
TRAPEZOID = ahs(
    field([0, 1e-7, 9e-7, 1e-6], [0, TWO_PI * 1e6, TWO_PI * 1e6, 0]),
    field([0, 1e-6], [-1e7, 1e7]),
    field([0, 1e-6], [0.5, 0.5]),
)


def hand_built(pulse: Pulse) -> Sequence:
    """What a Pulser user writes for TRAPEZOID's register: atoms 12 µm apart, on the device."""
    device = SPEC.pulser_device
    register = Register.from_coordinates([(0.0, 0.0), (12.0, 0.0)], prefix="q")
    sequence = Sequence(register.with_automatic_layout(device), device)
    sequence.declare_channel("rydberg_global", "rydberg_global")
    sequence.add(pulse, "rydberg_global")
    sequence.measure("ground-rydberg")
    return sequence


def assert_same(converted: str, expected: Sequence) -> None:
    sequence = Sequence.from_abstract_repr(converted)
    assert list(sequence.register.qubit_ids) == list(expected.register.qubit_ids)
    relative = [c - sequence.register.qubits["q0"] for c in sequence.register.qubits.values()]
    wanted = [c - expected.register.qubits["q0"] for c in expected.register.qubits.values()]
    np.testing.assert_allclose(np.array(relative, float), np.array(wanted, float), atol=1e-6)
    assert sequence.register.layout is not None  # the test device requires a layout
    assert sequence.get_measurement_basis() == "ground-rydberg"
    got = sample(sequence).channel_samples["rydberg_global"]
    want = sample(expected).channel_samples["rydberg_global"]
    assert got.duration == want.duration
    for name in ("amp", "det", "phase"):
        np.testing.assert_allclose(getattr(got, name), getattr(want, name), atol=1e-9)


def test_trapezoid_is_the_hand_built_sequence() -> None:
    pulse = Pulse(
        InterpolatedWaveform(
            1000, [0, TWO_PI, TWO_PI, 0], times=[0, 0.1, 0.9, 1], interpolator="interp1d"
        ),
        RampWaveform(1000, -10.0, 10.0),
        -0.5,  # AHS and Pulser write the phase with opposite signs
    )
    expected = hand_built(pulse)
    assert_same(cudaq_to_pulser(TRAPEZOID, SPEC), expected)
    assert_same(cudaq_to_pulser(json.dumps(TRAPEZOID), SPEC.pulser_device), expected)


def test_plain_numbers_are_accepted_as_well_as_decimal_strings() -> None:
    program = copy.deepcopy(TRAPEZOID)
    for drive in program["hamiltonian"]["drivingFields"][0].values():
        series = drive["time_series"]
        series["times"] = [float(t) for t in series["times"]]
        series["values"] = [float(v) for v in series["values"]]
    assert cudaq_to_pulser(program, SPEC) == cudaq_to_pulser(TRAPEZOID, SPEC)


def test_a_varying_phase_becomes_pulsers_arbitrary_phase() -> None:
    program = ahs(
        field([0, 1e-6], [TWO_PI * 1e6, TWO_PI * 1e6]),
        field([0, 1e-6], [0, 0]),
        field([0, 1e-6], [0, math.pi]),
    )
    expected = hand_built(
        Pulse.ArbitraryPhase(ConstantWaveform(1000, TWO_PI), RampWaveform(1000, 0, -math.pi))
    )
    assert_same(cudaq_to_pulser(program, SPEC), expected)


def test_the_converted_program_passes_validation_on_the_device() -> None:
    sequence = Sequence.from_abstract_repr(cudaq_to_pulser(TRAPEZOID, SPEC))
    facts = validate(to_program(sequence, 100), SPEC)
    assert (facts.num_qubits, sequence.get_duration()) == (2, 1000)


def test_analog_program_is_what_cudaq_evolve_sends() -> None:
    from cudaq.dynamics import Schedule
    from cudaq.operators import RydbergHamiltonian, ScalarOperator

    hamiltonian = RydbergHamiltonian(
        atom_sites=[(0.0, 0.0), (6e-6, 0.0), (1.2e-5, 0.0)],
        atom_filling=[1, 0, 1],
        amplitude=ScalarOperator(
            lambda t: TWO_PI * 1e6 * min(1.0, t.real / 1e-7, (1e-6 - t.real) / 1e-7)
        ),
        phase=ScalarOperator.const(0.5),
        delta_global=ScalarOperator(lambda t: -1e7 + 2e13 * t.real),
    )
    program = analog_program(hamiltonian, Schedule([0.0, 1e-7, 9e-7, 1e-6], ["t"]))
    assert is_cudaq_analog(program)
    drive = program["hamiltonian"]["drivingFields"][0]
    assert drive["amplitude"]["time_series"]["times"] == [
        "0.00000000", "0.00000010", "0.00000090", "0.00000100"
    ]  # fmt: skip
    assert program["setup"]["ahs_register"]["filling"] == [1, 0, 1]
    # the ramp's two end points and the trapezoid's four give the same samples as TRAPEZOID's
    assert_same(
        cudaq_to_pulser(program, SPEC),
        Sequence.from_abstract_repr(cudaq_to_pulser(TRAPEZOID, SPEC)),
    )


def test_without_cudaq_programs_convert_and_building_one_names_the_extra() -> None:
    """A scheduler host and ``make lab`` lack the optional extra: CUDA-Q's JSON still converts
    (the scheduler's admission imports fine), and building a program says what to install."""
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["cudaq"] = None  # as if qhpc-lab[cudaq] were not installed
        import qhpc_lab.scheduler.admission
        from qhpc_lab.programs.cudaq import analog_program, cudaq_to_pulser
        from qhpc_lab.qpu import DeviceProfile
        assert cudaq_to_pulser({json.dumps(TRAPEZOID)!r}, DeviceProfile.load("test").spec)
        try:
            analog_program(None, None)
        except ImportError as err:
            print(err)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "CUDA-Q is not installed: pip install 'qhpc-lab[cudaq]'\n"


def test_is_cudaq_analog_tells_ahs_from_other_bodies(sequence_json: str) -> None:
    assert is_cudaq_analog(TRAPEZOID) and is_cudaq_analog(json.dumps(TRAPEZOID))
    for other in (sequence_json, "OPENQASM 3.0;", "{", '{"ahs_register": 1}', [], None, {}):
        assert not is_cudaq_analog(other)


def broken(path: str, value: Any) -> dict[str, Any]:
    """TRAPEZOID with the field at ``path`` (dots, and [i] for items) set or, for None, removed."""
    program = copy.deepcopy(TRAPEZOID)
    keys = [
        int(k) if k.isdigit() else k for k in path.replace("[", ".").replace("]", "").split(".")
    ]
    parent = program
    for key in keys[:-1]:
        parent = parent[key]
    if value is None:
        del parent[keys[-1]]
    else:
        parent[keys[-1]] = value
    return program


DRIVE = "hamiltonian.drivingFields[0]"
DRIVE_RE = re.escape(DRIVE)
FIELDS_BUT_AMPLITUDE = ("detuning", "phase")


@pytest.mark.parametrize(
    ("path", "value", "named"),
    [
        ("setup", None, "setup: expected a JSON object, got nothing"),
        ("setup.ahs_register.filling", [1, 1], "setup.ahs_register.filling: 2 entries for 3 sites"),
        ("setup.ahs_register.filling", [1, 2, 1], r"setup.ahs_register.filling\[1\]: 0 or 1"),
        ("setup.ahs_register.filling", [0, 0, 0], "setup.ahs_register.filling: no site is filled"),
        ("setup.ahs_register.sites[2]", ["x", "0"], r"setup.ahs_register.sites\[2\]: .*number"),
        (
            "setup.ahs_register.sites[0]",
            [0.0],
            r"setup.ahs_register.sites\[0\]: a site is \[x, y\]",
        ),
        ("hamiltonian.drivingFields", [], "hamiltonian.drivingFields: exactly one driving field"),
        ("hamiltonian.localDetuning", [{"pattern": [0.5]}], "hamiltonian.localDetuning: local"),
        (f"{DRIVE}.amplitude.pattern", "local", rf"{DRIVE_RE}.amplitude.pattern: only 'uniform'"),
        (f"{DRIVE}.phase", None, rf"{DRIVE_RE}.phase: expected a JSON object"),
        (f"{DRIVE}.detuning.time_series.times", ["1e-9", "1e-6"], "times: must start at 0"),
        (f"{DRIVE}.detuning.time_series.times", ["0", "0"], "times: times must increase"),
        (f"{DRIVE}.detuning.time_series.values", ["0"], "at least two points and one value"),
        (f"{DRIVE}.detuning.time_series.values", ["0", "inf"], "values: expected a finite"),
        (f"{DRIVE}.detuning.time_series.values", "0", "values: expected a JSON array"),
        (
            f"{DRIVE}.phase.time_series.times",
            ["0", "2e-6"],
            rf"{DRIVE_RE}.amplitude.*ends at 1e-06 s",
        ),
    ],
)
def test_malformed_programs_are_refused_naming_the_field(path: str, value: Any, named: str) -> None:
    with pytest.raises(ProgramError, match=named) as refusal:
        cudaq_to_pulser(broken(path, value), SPEC)
    assert refusal.value.rule == "body"


def test_text_that_is_not_json_is_refused() -> None:
    with pytest.raises(ProgramError, match="not valid JSON"):
        cudaq_to_pulser('{"setup": ', SPEC)


def test_device_limits_refuse_before_any_sample_is_drawn() -> None:
    long = broken(f"{DRIVE}.amplitude.time_series.times", ["0", "0.00000010", "0.00000090", "1"])
    for name in FIELDS_BUT_AMPLITUDE:
        long["hamiltonian"]["drivingFields"][0][name]["time_series"]["times"] = ["0", "1"]
    with pytest.raises(DeviceRuleViolation, match="lasts 1000000000 ns; QHPC-Test allows at most"):
        cudaq_to_pulser(long, SPEC)
    crowd = copy.deepcopy(TRAPEZOID)
    crowd["setup"]["ahs_register"] = {
        "sites": [[decimal(6e-6 * i), "0"] for i in range(17)],
        "filling": [1] * 17,
    }
    with pytest.raises(DeviceRuleViolation, match="17 filled sites; QHPC-Test holds at most 16"):
        cudaq_to_pulser(crowd, SPEC)


def test_what_pulser_refuses_is_refused_naming_the_drive() -> None:
    negative = broken(f"{DRIVE}.amplitude.time_series.values", ["0", "-1e6", "-1e6", "0"])
    refused = rf"{DRIVE_RE}: .*amplitude .* greater than or equal to zero"
    with pytest.raises(ProgramError, match=refused) as refusal:
        cudaq_to_pulser(negative, SPEC)
    assert refusal.value.rule == "body"


def test_a_duration_off_the_clock_period_is_rounded_up_as_pulser_does() -> None:
    program = copy.deepcopy(TRAPEZOID)
    for drive in program["hamiltonian"]["drivingFields"][0].values():
        drive["time_series"]["times"][-1] = "0.00000101"
    assert Sequence.from_abstract_repr(cudaq_to_pulser(program, SPEC)).get_duration() == 1012
