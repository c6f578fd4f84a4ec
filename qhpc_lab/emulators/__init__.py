"""Local engines that turn a Program into measured counts, and say how.

Pulser programs run on QuTiP (``QutipBackendV2``) for small registers, on emu-sv's exact state
vector while it stays affordable, and on emu-mps (a matrix product state, approximate, about
linear in the register) past that; OpenQASM 3 runs on qiskit-aer. :func:`engine_for` is the
choice, :func:`plan` its estimate, :func:`emulate` the run and :class:`Emulation` its stated
result (docs/benchmarks.md has the measurements behind every threshold).
"""

from qhpc_lab.emulators._choice import (
    ENGINES,
    EXACT_BUDGET_S,
    EXACT_ENGINES,
    EXACT_MEMORY_BYTES,
    MPS_DT_NS,
    MPS_MAX_BOND_DIM,
    MPS_PRECISION,
    MPS_STEPS_PER_PULSE,
    PULSER_SV_FROM_ATOMS,
    EnginePlan,
    engine_for,
    estimate_memory,
    estimate_seconds,
)
from qhpc_lab.emulators._engines import (
    DEVICES,
    Facts,
    choose_engine,
    device_name,
    emulate,
    evolve,
    facts,
    final_state,
    plan,
    run,
    sample,
)
from qhpc_lab.emulators._result import EMULATION_FORMAT, Approximation, Emulation

__all__ = [
    "DEVICES",
    "EMULATION_FORMAT",
    "ENGINES",
    "EXACT_BUDGET_S",
    "EXACT_ENGINES",
    "EXACT_MEMORY_BYTES",
    "MPS_DT_NS",
    "MPS_MAX_BOND_DIM",
    "MPS_PRECISION",
    "MPS_STEPS_PER_PULSE",
    "PULSER_SV_FROM_ATOMS",
    "Approximation",
    "Emulation",
    "EnginePlan",
    "Facts",
    "choose_engine",
    "device_name",
    "emulate",
    "engine_for",
    "estimate_memory",
    "estimate_seconds",
    "evolve",
    "facts",
    "final_state",
    "plan",
    "run",
    "sample",
]
