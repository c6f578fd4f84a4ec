"""Local engines that turn a Program into measured counts.

Pulser programs run on QuTiP (``QutipBackendV2``) for small registers and on emu-sv above
:data:`PULSER_SV_FROM_ATOMS` atoms, where its state-vector engine overtakes QuTiP (measured by
``benchmarks/emulators.py``); OpenQASM 3 runs on qiskit-aer.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from qhpc_lab.programs import Program, ProgramError

PULSER_SV_FROM_ATOMS = 16
"""Register size from which emu-sv is used instead of QuTiP (see docs/benchmarks.md)."""


def choose_engine(program: Program) -> str:
    """The fastest engine for this program, by format and register size."""
    if program.format == "qasm3":
        return "aer"
    atoms = len(json.loads(program.body).get("register") or [])
    return "emu-sv" if atoms >= PULSER_SV_FROM_ATOMS else "qutip"


def run(program: Program, shots: int | None = None, engine: str | None = None) -> dict[str, int]:
    """Emulate ``program`` for ``shots`` (default: the program's) and return bitstring counts.

    Pulser bitstrings list atoms in register order; Qiskit bitstrings keep Qiskit's order
    (classical bit 0 rightmost).
    """
    shots = program.shots if shots is None else shots
    engine = engine or choose_engine(program)
    fits = {"qasm3": ("aer",), "pulser": ("qutip", "emu-sv")}[program.format]
    if engine not in fits:
        raise ProgramError(
            f"engine {engine!r} cannot run {program.format} programs; use {' or '.join(fits)}",
            "engine",
        )
    if engine == "aer":
        return _run_qasm3(program, shots)
    return sample(final_state(program, engine), shots)


def final_state(program: Program, engine: str | None = None) -> Any:
    """The state a Pulser program leaves the register in: the costly part, worth caching.

    Sampling it (:func:`sample`) is cheap, so repeated runs of one program need one evolution.
    """
    engine = engine or choose_engine(program)
    if engine not in ("qutip", "emu-sv"):
        raise ProgramError(f"engine {engine!r} has no Pulser final state; use qutip or emu-sv")
    from pulser import Sequence
    from pulser.backend import StateResult

    sequence = Sequence.from_abstract_repr(program.body)
    if sequence.is_parametrized() or program.variables:
        sequence = sequence.build(**program.variables)
    observables = [StateResult(evaluation_times=[1.0])]
    if engine == "qutip":
        from pulser_simulation import QutipBackendV2, QutipConfig

        backend = QutipBackendV2(sequence, config=QutipConfig(observables=observables))
    else:
        import emu_sv

        config = emu_sv.SVConfig(observables=observables, log_level=logging.WARNING)
        backend = emu_sv.SVBackend(sequence, config=config)
    return backend.run().final_state


def sample(state: Any, shots: int) -> dict[str, int]:
    """Measure ``shots`` bitstrings from a final state."""
    return dict(state.sample(num_shots=shots))


def _run_qasm3(program: Program, shots: int) -> dict[str, int]:
    from qiskit import qasm3
    from qiskit_aer import AerSimulator

    circuit = qasm3.loads(program.body)
    return dict(AerSimulator().run(circuit, shots=shots).result().get_counts())
