"""Engines by size: the choice, its estimate, the stated result, ``qhpc emulate``, and emu-mps
agreeing with emu-sv where both run."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from qhpc_lab import emulators
from qhpc_lab.cli import main as qhpc
from qhpc_lab.emulators import Approximation, Emulation
from qhpc_lab.programs import Program, ProgramError
from tests.support.programs import antiferromagnetic_json, chain, pulser_sequence_json

AGREEMENT_ATOMS = 12
AGREEMENT_SHOTS = 2000


def test_engine_for_goes_by_size_and_duration() -> None:
    sv_from = emulators.PULSER_SV_FROM_ATOMS
    assert emulators.engine_for("pulser", sv_from - 1, 6000) == "qutip"
    assert emulators.engine_for("pulser", sv_from, 1000) == "emu-sv"
    # a short program on 20 atoms stays exact; the same register for 3 µs goes to emu-mps
    assert emulators.engine_for("pulser", 20, 200) == "emu-sv"
    assert emulators.engine_for("pulser", 20, 3000) == "emu-mps"
    assert emulators.engine_for("pulser", 100, 100) == "emu-mps"
    assert emulators.engine_for("pulser", 24, 16) == "emu-mps"  # short, but 3 GB of vectors
    assert emulators.engine_for("qasm3", 30, 0) == "aer"
    for atoms in range(sv_from, 40):  # past the budget, never back to an exact engine
        fits = emulators.estimate_seconds("emu-sv", atoms, 3000) <= emulators.EXACT_BUDGET_S
        expected = "emu-sv" if fits else "emu-mps"
        assert emulators.engine_for("pulser", atoms, 3000) == expected


def test_plan_states_an_estimate_for_the_chosen_engine() -> None:
    program = Program("pulser", antiferromagnetic_json(chain(40)), 100)
    plan = emulators.plan(program)
    assert (plan.engine, plan.atoms, plan.duration_ns, plan.approximate) == (
        "emu-mps",
        40,
        3000,
        True,
    )
    assert 0 < plan.seconds < 600 and 0 < plan.memory_bytes < 4 * 2**30
    exact = emulators.plan(program, engine="emu-sv")  # asked for: a terabyte state vector
    assert not exact.approximate and exact.memory_bytes > 2**40
    assert "estimate" in plan.describe()
    with pytest.raises(ProgramError, match=r"'aer' cannot run pulser"):
        emulators.plan(program, engine="aer")


def test_emulation_json_round_trip_and_refusals() -> None:
    emulation = Emulation(
        counts={"0101": 60, "1010": 40},
        engine="emu-mps",
        approximation=Approximation(32, 1e-5, 20.0, 32),
        device="cpu",
        node="node17",
        atoms=4,
        duration_ns=3000,
        shots=100,
        started_at="2026-12-07T17:00:00Z",
        seconds=1.5,
        versions={"emu-mps": "2.10.1"},
    )
    again = Emulation.from_json(emulation.to_json())
    assert again == emulation and again.approximate
    assert "χ ≤ 32 (reached 32)" in again.describe()
    data = json.loads(emulation.to_json())
    assert data["format"] == emulators.EMULATION_FORMAT
    with pytest.raises(ValueError, match="not an emulation result"):
        Emulation.from_dict({**data, "format": "qhpc-emulation/0"})
    del data["engine"]
    with pytest.raises(ValueError, match="malformed"):
        Emulation.from_dict(data)


def test_qhpc_emulate_writes_the_stated_result(tmp_path: Path, capsys) -> None:
    program = tmp_path / "program.json"
    program.write_text(Program("pulser", pulser_sequence_json(4, spacing=7.0), 50).to_json())
    out = tmp_path / "result.json"
    argv = [str(program), "--out", str(out), "--engine", "emu-mps", "--max-bond-dim", "4"]
    assert qhpc(["emulate", *argv]) == 0
    result = Emulation.from_json(out.read_text())
    assert result.engine == "emu-mps" and result.approximation.max_bond_dim == 4
    assert sum(result.counts.values()) == 50 and result.device == "cpu" and result.node
    assert sorted(p.name for p in tmp_path.iterdir()) == ["program.json", "result.json"]
    stages = capsys.readouterr().err.splitlines()
    assert all(line.startswith("qhpc emulate: ") for line in stages)
    assert any("plan on cpu: emu-mps, 4 atoms" in line for line in stages)
    assert "wrote" in stages[-1] and "approximate" in stages[-1]


@pytest.mark.parametrize(
    ("envelope", "options", "named"),
    [
        ("{not json", [], "not valid JSON"),
        ('{"format": "pulser", "body": "x", "shots": 5, "colour": 1}', [], "colour"),
        ('{"format": "pulser", "body": "{}", "shots": 5}', [], "abstract representation"),
        (None, ["--engine", "aer"], "'aer' cannot run pulser"),
        (None, ["--device", "gpu"], "no CUDA device"),
        (None, ["--out", "/nonexistent/result.json"], "cannot write in /nonexistent"),
    ],
    ids=["json", "envelope", "body", "engine", "device", "out"],
)
def test_qhpc_emulate_refuses_before_any_work(
    tmp_path: Path, capsys, envelope: str | None, options: list[str], named: str
) -> None:
    program = tmp_path / "program.json"
    good = Program("pulser", pulser_sequence_json(2), 5).to_json()
    program.write_text(envelope or good)
    out = tmp_path / "result.json"
    assert qhpc(["emulate", str(program), "--out", str(out), *options]) == 2  # last --out wins
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and named in lines[0], lines
    assert not out.exists()


def _tvd(a: dict[str, int], b: dict[str, int]) -> float:
    """Total variation distance between two count tables of equal totals."""
    total = sum(a.values())
    return sum(abs(a.get(k, 0) - b.get(k, 0)) for k in a.keys() | b.keys()) / (2 * total)


def _shot_noise_tvd(reference: dict[str, int], shots: int, draws: int = 200) -> list[float]:
    """TVDs between two samplings of ``shots`` each from one distribution (``reference``'s
    frequencies): what two exact engines would differ by at this shot count."""
    rng = random.Random(7)
    keys = list(reference)
    weights = [reference[k] for k in keys]

    def draw() -> dict[str, int]:
        counts: dict[str, int] = {}
        for key in rng.choices(keys, weights, k=shots):
            counts[key] = counts.get(key, 0) + 1
        return counts

    return sorted(_tvd(draw(), draw()) for _ in range(draws))


@pytest.fixture
def one_torch_thread():
    """Two torch threads on two shared cores wait on each other (docs/benchmarks.md): the
    engines run as the emulated QPU's worker runs them."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.usefixtures("one_torch_thread")
def test_emu_mps_agrees_with_emu_sv_within_shot_noise() -> None:
    """A 12-atom antiferromagnetic preparation (1 µs): emu-mps at its defaults against
    emu-sv's exact state, both sampled at 2000 shots."""
    program = Program(
        "pulser", antiferromagnetic_json(chain(AGREEMENT_ATOMS), duration=1000), AGREEMENT_SHOTS
    )
    exact_state, _ = emulators.evolve(program, "emu-sv")
    exact = emulators.sample(exact_state, AGREEMENT_SHOTS)
    reference = emulators.sample(exact_state, 50 * AGREEMENT_SHOTS)
    mps = emulators.emulate(program, engine="emu-mps")
    assert mps.approximation == Approximation(
        emulators.MPS_MAX_BOND_DIM,
        emulators.MPS_PRECISION,
        emulators.MPS_DT_NS,
        mps.approximation.reached_bond_dim,
    )
    noise = _shot_noise_tvd(reference, AGREEMENT_SHOTS)
    floor, high = noise[len(noise) // 2], noise[int(0.99 * len(noise))]
    measured = _tvd(exact, mps.counts)
    # the floor: the median TVD between two exact samplings of this distribution at 2000
    # shots (measured 0.13, 99th percentile 0.16; emu-mps against emu-sv measured 0.12)
    assert measured <= high + 0.02, (
        f"emu-mps vs emu-sv TVD {measured:.3f}; shot noise at {AGREEMENT_SHOTS} shots: "
        f"median {floor:.3f}, 99th percentile {high:.3f}"
    )


def _triangular(atoms: int, spacing: float = 5.0) -> list[tuple[float, float]]:
    """The ``atoms`` sites of a triangular lattice nearest its centre."""
    sites = [
        (spacing * (i + j / 2), spacing * j * 3**0.5 / 2)
        for i in range(-12, 13)
        for j in range(-12, 13)
    ]
    return sorted(sites, key=lambda xy: xy[0] ** 2 + xy[1] ** 2)[:atoms]


def test_fresnel_like_takes_its_devices_full_register() -> None:
    """FRESNEL in Pasqal's QPU API mock allows 100 atoms; so does the profile imitating it."""
    from pulser import Pulse, Register, Sequence
    from pulser.devices import MockDevice

    from qhpc_lab.programs import DeviceRuleViolation, validate
    from qhpc_lab.qpu import DeviceProfile

    spec = DeviceProfile.load("fresnel-like").spec

    def program(atoms: int, device: object) -> Program:
        register = Register.from_coordinates(_triangular(atoms), prefix="q")
        sequence = Sequence(register, device)
        sequence.declare_channel("g", "rydberg_global")
        sequence.add(Pulse.ConstantPulse(100, 1.0, 0.0, 0.0), "g")
        sequence.measure("ground-rydberg")
        return Program("pulser", sequence.to_abstract_repr(), 100)

    full = program(100, spec.pulser_device)
    assert validate(full, spec).num_qubits == 100
    assert emulators.plan(full).engine == "emu-mps"
    with pytest.raises(DeviceRuleViolation, match="max_atom_num"):
        validate(program(101, MockDevice), spec)  # Pulser's own device refuses to build it
