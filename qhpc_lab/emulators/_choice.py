"""Which engine runs a program, and what it will cost: one pure choice, one cost model.

Every constant here was measured by ``benchmarks/emulators.py`` on the project's 2-core build
machine (docs/benchmarks.md, "Emulation engines by size"); the estimates are for that kind of
machine, one torch thread, and say so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

ENGINES = {"pulser": ("qutip", "emu-sv", "emu-mps"), "qasm3": ("aer",)}
"""The engines each program format can run on."""

EXACT_ENGINES = ("qutip", "emu-sv", "aer")
"""Engines whose counts sample the exact final state (no truncation)."""

PULSER_SV_FROM_ATOMS = 16
"""Register size from which emu-sv beats QuTiP (docs/benchmarks.md, "Emulator choice")."""

EXACT_BUDGET_S = 60.0
"""An exact engine is chosen while its estimate stays within this many seconds; past it,
emu-mps (approximate, about linear in the register) runs instead (docs/benchmarks.md)."""

EXACT_MEMORY_BYTES = 2 * 2**30
"""Nor past this estimated memory: a state vector doubles with every atom, and the kernel's
machine (or the emulated QPU's worker, 4 GiB by default) must hold it."""

MPS_MAX_BOND_DIM = 32
"""emu-mps's default bond dimension cap: the chain benchmark's setting (docs/benchmarks.md)."""

MPS_PRECISION = 1e-5
"""emu-mps's default truncation precision (its own default)."""

MPS_DT_NS = 40.0
"""emu-mps's longest time step: four times emu-mps's own 10 ns, which agreed with emu-sv as
closely as 10 ns did and ran a 32-atom chain 1.5× faster than 20 ns (docs/benchmarks.md)."""

MPS_STEPS_PER_PULSE = 10
"""emu-mps samples each step's Hamiltonian at its midpoint, so the step shrinks until the
shortest pulse spans this many steps (a 16 ns π pulse must not fall between two midpoints)."""

# The cost model: seconds = setup + per_unit × units, fitted to the CPU seconds of the chain
# benchmark's points (one core of its own; docs/benchmarks.md "Emulation engines by size").
QUTIP_S_PER_US_AT_12 = 0.8
"""QuTiP seconds per µs of sequence at 12 atoms (2.5 CPU s for 3 µs)."""
QUTIP_GROWTH = 1.95
"""QuTiP's growth per atom (12 → 16 atoms: 2.5 → 35.7 CPU s)."""
SV_S_PER_US_AT_16 = 4.5
"""emu-sv seconds per µs of sequence at 16 atoms (14.7 CPU s for 3 µs); ×2 per atom, as its
state vector."""
MPS_S_PER_US_AT_32 = 17.6
"""emu-mps seconds per µs of sequence at 32 atoms, χ ≤ 32 and dt 40 ns (52.9 CPU s for 3 µs)."""
MPS_GROWTH = 1.75
"""emu-mps's cost grows as atoms ** 1.75 at its χ cap (32 → 100 atoms: 52.9 → 392 CPU s)."""
SETUP_S = {"qutip": 0.3, "emu-sv": 1.0, "emu-mps": 2.0, "aer": 0.1}
"""Fixed seconds each engine spends before its first step (SDK imports excluded)."""
PROCESS_BYTES = 500 * 2**20
"""Resident memory of a Python process with torch and Pulser imported, before any state."""
SV_VECTORS = 12
"""State-vector-sized buffers emu-sv holds at once (state, Krylov basis, Hamiltonian terms)."""
QUTIP_VECTORS = 40
"""State-vector-sized buffers QuTiP's solver holds (sparse Hamiltonian and ODE workspace)."""
MPS_TENSORS = 24
"""χ²-sized complex tensors emu-mps holds per atom (state, environments, TDVP workspace)."""


@dataclass(frozen=True)
class EnginePlan:
    """What running a program would take: an **estimate** for this project's measured CPU
    machine, for routing (the kernel or the cluster), never a promise."""

    engine: str
    atoms: int
    duration_ns: int
    seconds: float
    memory_bytes: int
    approximate: bool

    def describe(self) -> str:
        """One line: ``emu-mps, 40 atoms, 3000 ns: about 35 s and 1.2 GB (approximate)``."""
        kind = "approximate" if self.approximate else "exact"
        return (
            f"{self.engine}, {self.atoms} atoms, {self.duration_ns} ns: about "
            f"{self.seconds:.0f} s and {self.memory_bytes / 1e9:.1f} GB (estimate, {kind})"
        )


def engine_for(fmt: str, atoms: int, duration_ns: int) -> str:
    """The engine for a program of ``fmt`` on ``atoms`` atoms lasting ``duration_ns``.

    QuTiP below :data:`PULSER_SV_FROM_ATOMS`, emu-sv while its estimates fit in
    :data:`EXACT_BUDGET_S` and :data:`EXACT_MEMORY_BYTES`, emu-mps past them; aer for gate
    circuits. Pure, so routing and tests
    can ask it without running anything.
    """
    if fmt == "qasm3":
        return "aer"
    if atoms < PULSER_SV_FROM_ATOMS:
        return "qutip"
    fits_time = estimate_seconds("emu-sv", atoms, duration_ns) <= EXACT_BUDGET_S
    if fits_time and estimate_memory("emu-sv", atoms) <= EXACT_MEMORY_BYTES:
        return "emu-sv"
    return "emu-mps"


def estimate_seconds(
    engine: str, atoms: int, duration_ns: int, max_bond_dim: int = MPS_MAX_BOND_DIM
) -> float:
    """Estimated wall seconds of one evolution on this project's measured machine."""
    micros = max(duration_ns, 1) / 1000
    if engine == "qutip":
        return SETUP_S[engine] + QUTIP_S_PER_US_AT_12 * QUTIP_GROWTH ** (atoms - 12) * micros
    if engine == "emu-sv":
        return SETUP_S[engine] + SV_S_PER_US_AT_16 * 2.0 ** (atoms - 16) * micros
    if engine == "emu-mps":
        growth = (atoms / 32) ** MPS_GROWTH
        return SETUP_S[engine] + MPS_S_PER_US_AT_32 * growth * micros * _chi_factor(
            atoms, max_bond_dim
        )
    return SETUP_S["aer"] + 2.0**atoms * 1e-7


def estimate_memory(engine: str, atoms: int, max_bond_dim: int = MPS_MAX_BOND_DIM) -> int:
    """Estimated peak resident bytes of one evolution, the process included."""
    vector = 16 * 2**atoms  # complex128 amplitudes
    if engine == "qutip":
        return PROCESS_BYTES + QUTIP_VECTORS * vector
    if engine == "emu-sv":
        return PROCESS_BYTES + SV_VECTORS * vector
    if engine == "emu-mps":
        chi = _bond_dim(atoms, max_bond_dim)
        return PROCESS_BYTES + MPS_TENSORS * atoms * 2 * 16 * chi * chi
    return PROCESS_BYTES + 2 * vector


def _bond_dim(atoms: int, max_bond_dim: int) -> int:
    """The largest bond dimension an MPS of ``atoms`` sites can need, under the cap."""
    return min(max_bond_dim, 2 ** (atoms // 2))


def _chi_factor(atoms: int, max_bond_dim: int) -> float:
    """Cost relative to the measured χ = 32: TDVP steps grow with χ³."""
    return max(1.0, (_bond_dim(atoms, max_bond_dim) / MPS_MAX_BOND_DIM) ** 3)


def plan_for(
    fmt: str,
    atoms: int,
    duration_ns: int,
    engine: str | None = None,
    max_bond_dim: int | None = None,
) -> EnginePlan:
    """The plan for a program's facts (what :func:`qhpc_lab.emulators.plan` answers)."""
    engine = engine or engine_for(fmt, atoms, duration_ns)
    chi = max_bond_dim or MPS_MAX_BOND_DIM
    return EnginePlan(
        engine=engine,
        atoms=atoms,
        duration_ns=duration_ns,
        seconds=round(estimate_seconds(engine, atoms, duration_ns, chi), 1),
        memory_bytes=math.ceil(estimate_memory(engine, atoms, chi)),
        approximate=engine not in EXACT_ENGINES,
    )
