"""Running a program on an engine: facts, evolution, sampling, and the stated result."""

from __future__ import annotations

import importlib.metadata
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from qhpc_lab.emulators._choice import (
    ENGINES,
    MPS_DT_NS,
    MPS_MAX_BOND_DIM,
    MPS_PRECISION,
    MPS_STEPS_PER_PULSE,
    EnginePlan,
    engine_for,
    plan_for,
)
from qhpc_lab.emulators._result import Approximation, Emulation
from qhpc_lab.programs import Program, ProgramError
from qhpc_lab.wire.times import iso_time

DEVICES = ("cpu", "gpu")
"""Where an evolution may run: ``gpu`` takes the first CUDA device torch sees."""

_PACKAGES = {
    "qutip": ("pulser-simulation", "qutip"),
    "emu-sv": ("emu-sv", "torch"),
    "emu-mps": ("emu-mps", "torch"),
    "aer": ("qiskit", "qiskit-aer"),
}


@dataclass(frozen=True)
class Facts:
    """What the choice of engine reads from a program."""

    atoms: int
    duration_ns: int


def facts(program: Program) -> Facts:
    """Register size and duration (qubits and 0 ns for a gate circuit); ProgramError if the
    body cannot be read."""
    if program.format == "qasm3":
        return Facts(_circuit(program).num_qubits, 0)
    sequence = _sequence(program)
    return Facts(len(sequence.register.qubit_ids), int(sequence.get_duration()))


def choose_engine(program: Program) -> str:
    """The engine :func:`~qhpc_lab.emulators.engine_for` picks for this program."""
    if program.format == "qasm3":
        return "aer"
    found = facts(program)
    return engine_for(program.format, found.atoms, found.duration_ns)


def plan(
    program: Program, engine: str | None = None, max_bond_dim: int | None = None
) -> EnginePlan:
    """The engine this program would run on, with its estimated seconds and memory on this
    project's measured CPU machine: what routing reads before sending it anywhere."""
    if engine is not None:
        _check_engine(program, engine)
    found = facts(program)
    return plan_for(program.format, found.atoms, found.duration_ns, engine, max_bond_dim)


def run(program: Program, shots: int | None = None, engine: str | None = None) -> dict[str, int]:
    """Emulate ``program`` for ``shots`` (default: the program's) and return bitstring counts.

    Pulser bitstrings list atoms in register order; Qiskit bitstrings keep Qiskit's order
    (classical bit 0 rightmost).
    """
    return emulate(program, shots, engine).counts


def emulate(
    program: Program,
    shots: int | None = None,
    engine: str | None = None,
    *,
    max_bond_dim: int | None = None,
    precision: float | None = None,
    device: str = "cpu",
    progress: Callable[[str], None] = lambda line: None,
) -> Emulation:
    """Emulate ``program`` and say how: engine, approximation, device, node, seconds.

    ``max_bond_dim`` and ``precision`` apply to emu-mps (its defaults
    :data:`MPS_MAX_BOND_DIM`, :data:`MPS_PRECISION`); ``device="gpu"`` runs emu-sv or emu-mps
    on the first CUDA device and is refused where torch sees none. ``progress`` receives one
    line per stage.
    """
    shots = program.shots if shots is None else shots
    if engine is not None:
        _check_engine(program, engine)
    where = device_name(device)
    found = facts(program)
    chosen = engine or engine_for(program.format, found.atoms, found.duration_ns)
    if where != "cpu" and chosen in ("qutip", "aer"):
        if engine is not None or chosen == "aer":
            raise ValueError(f"engine {chosen} runs on the CPU only; use device cpu")
        chosen = "emu-sv"  # QuTiP's registers, on the GPU
    progress(f"{chosen} on {where}: {found.atoms} atoms, {found.duration_ns} ns, {shots} shots")
    started = time.time()
    if chosen == "aer":
        counts, approximation = _run_qasm3(program, shots), None
    else:
        state, approximation = evolve(
            program, chosen, max_bond_dim=max_bond_dim, precision=precision, device=where
        )
        progress(f"{chosen}: evolved in {time.time() - started:.1f} s; sampling {shots} shots")
        counts = sample(state, shots)
    return Emulation(
        counts=counts,
        engine=chosen,
        approximation=approximation,
        device=where,
        node=socket.gethostname(),
        atoms=found.atoms,
        duration_ns=found.duration_ns,
        shots=shots,
        started_at=iso_time(started, timespec="seconds"),
        seconds=round(time.time() - started, 3),
        versions={p: importlib.metadata.version(p) for p in _PACKAGES[chosen]},
    )


def final_state(program: Program, engine: str | None = None) -> Any:
    """The state a Pulser program leaves the register in: the costly part, worth caching.

    Sampling it (:func:`sample`) is cheap, so repeated runs of one program need one evolution.
    """
    return evolve(program, engine or choose_engine(program))[0]


def evolve(
    program: Program,
    engine: str,
    *,
    max_bond_dim: int | None = None,
    precision: float | None = None,
    device: str = "cpu",
) -> tuple[Any, Approximation | None]:
    """The final state of a Pulser program on ``engine`` and the approximation it used."""
    if engine not in ENGINES["pulser"]:
        raise ProgramError(
            f"engine {engine!r} has no Pulser final state; use {' or '.join(ENGINES['pulser'])}",
            "engine",
        )
    from pulser.backend import StateResult

    sequence = _sequence(program)
    observables = [StateResult(evaluation_times=[1.0])]
    gpu = device != "cpu"
    if engine == "qutip":
        from pulser_simulation import QutipBackendV2, QutipConfig

        backend = QutipBackendV2(sequence, config=QutipConfig(observables=observables))
        return backend.run().final_state, None
    if engine == "emu-sv":
        import emu_sv

        config = emu_sv.SVConfig(observables=observables, log_level=logging.WARNING, gpu=gpu)
        return emu_sv.SVBackend(sequence, config=config).run().final_state, None
    import emu_mps

    chi = max_bond_dim or MPS_MAX_BOND_DIM
    eps = precision or MPS_PRECISION
    dt = _mps_dt(sequence)
    mps_config = emu_mps.MPSConfig(
        observables=observables,
        max_bond_dim=chi,
        precision=eps,
        dt=dt,
        gpu=gpu,
        # a sampled final state keeps register order (emu-mps reorders only for bitstrings and
        # says so at WARNING each run: ERROR keeps its stdout handler quiet)
        optimize_qubit_ordering=False,
        log_level=logging.ERROR,
    )
    results = emu_mps.MPSBackend(sequence, config=mps_config).run()
    steps = results.get_tagged_results().get("statistics") or []
    reached = max((step["max_bond_dimension"] for step in steps), default=None)
    return results.final_state, Approximation(chi, eps, dt, reached)


def _mps_dt(sequence: Any) -> float:
    """:data:`MPS_DT_NS`, or less so that the shortest pulse spans
    :data:`MPS_STEPS_PER_PULSE` steps (whole nanoseconds, at least 1)."""
    from pulser.sampler import sample as samples_of

    samples = samples_of(sequence)
    pulses = [
        slot.tf - slot.ti
        for channel in samples.channels
        for slot in samples.channel_samples[channel].slots
    ]
    shortest = min(pulses, default=sequence.get_duration())
    return float(min(MPS_DT_NS, max(1, shortest // MPS_STEPS_PER_PULSE)))


def sample(state: Any, shots: int) -> dict[str, int]:
    """Measure ``shots`` bitstrings from a final state."""
    return dict(state.sample(num_shots=shots))


def _check_engine(program: Program, engine: str) -> None:
    fits = ENGINES[program.format]
    if engine not in fits:
        raise ProgramError(
            f"engine {engine!r} cannot run {program.format} programs; use {' or '.join(fits)}",
            "engine",
        )


def device_name(device: str) -> str:
    """``cpu``, or ``cuda:N`` for ``gpu``; ValueError where no CUDA device is visible."""
    if device not in DEVICES:
        raise ValueError(f"device {device!r} is not one of {', '.join(DEVICES)}")
    if device == "cpu":
        return "cpu"
    import torch

    if not torch.cuda.is_available():
        raise ValueError(f"no CUDA device is visible on {socket.gethostname()}; use device cpu")
    return f"cuda:{torch.cuda.currentdevice_name()}"


def _sequence(program: Program) -> Any:
    """The built Pulser sequence; ProgramError naming what is wrong with the body."""
    from pulser import Sequence

    try:
        sequence = Sequence.from_abstract_repr(program.body)
    except Exception as err:
        raise ProgramError(
            f"body is not a valid Pulser abstract representation: {_first_line(err)}", "body"
        ) from None
    if sequence.is_parametrized() or program.variables:
        try:
            sequence = sequence.build(**program.variables)
        except Exception as err:
            raise ProgramError(
                f"cannot build the parametrised sequence: {_first_line(err)}", "variables"
            ) from None
    return sequence


def _first_line(err: Exception) -> str:
    """An SDK's error in one line (jsonschema's run to hundreds)."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _circuit(program: Program) -> Any:
    from qiskit import qasm3

    try:
        return qasm3.loads(program.body)
    except Exception as err:
        raise ProgramError(f"body is not valid OpenQASM 3: {_first_line(err)}", "body") from None


def _run_qasm3(program: Program, shots: int) -> dict[str, int]:
    from qiskit_aer import AerSimulator

    return dict(AerSimulator().run(_circuit(program), shots=shots).result().get_counts())
