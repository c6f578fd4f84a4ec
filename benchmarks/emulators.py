"""Emulator choice: QuTiP (``QutipBackendV2``) against emu-sv on Pulser registers, aer on GHZ-N;
with ``--sweep``, the largest register each engine (QuTiP, emu-sv, emu-mps) finishes in time.

Its crossover, the register size from which emu-sv is faster than QuTiP, is what
:data:`qhpc_lab.emulators.PULSER_SV_FROM_ATOMS` is set to (docs/benchmarks.md). Each engine
runs through ``qhpc_lab.emulators.run``, the path jobs take.
Workload: N atoms on a ring 7 µm apart (inside AnalogDevice's 5 µm / 38 µm limits), one 1 µs
global pulse, 500 shots; per point one warm-up run, then the median of 3. N stops growing once
an engine's median passes ``--limit-s``, and the next N is tried only while every median is
under half of it; a warm-up over the limit is reported alone, unrepeated.

    .venv/bin/python benchmarks/emulators.py [--sizes 4,6,8,10,12,14,16] [--shots 500]
        [--repeats 3] [--limit-s 20] [--torch-threads N]

emu-sv computes with torch, whose default is one thread per core; on a shared machine those
threads wait on each other, so ``--torch-threads 1`` shows what the engine does without that.

Sizes (``--sweep chain`` or ``--sweep square``): Pulser's adiabatic antiferromagnetic
preparation (``tests.support.programs.antiferromagnetic_json``, 7 µm spacing, 3 µs, 100
shots) on a 1D chain or a square lattice; each point is ``qhpc_lab.emulators.emulate`` in a
fresh process (SDK imports excluded from its time) killed at ``--limit-s``. An engine's column
grows N along ``--sizes`` until a point fails its limit. The emu-mps column leaves the engine
to ``engine_for`` wherever that picks emu-mps, and names the engine otherwise:

    .venv/bin/python benchmarks/emulators.py --sweep chain --sizes 8,12,16,20,24,32,40
        [--engines qutip,emu-sv,emu-mps] [--limit-s 60] [--torch-threads 1]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
import warnings

from qhpc_lab import emulators
from qhpc_lab.programs import Program, to_program

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

PULSER_ENGINES = ("qutip", "emu-sv")


def ring(atoms: int, spacing: float = 7.0) -> list[tuple[float, float]]:
    """Atoms on a circle, neighbours ``spacing`` µm apart."""
    radius = spacing / (2 * math.sin(math.pi / atoms))
    return [
        (radius * math.cos(2 * math.pi * i / atoms), radius * math.sin(2 * math.pi * i / atoms))
        for i in range(atoms)
    ]


def pulser_program(atoms: int, shots: int) -> Program:
    from pulser import Pulse, Register, Sequence
    from pulser.devices import AnalogDevice

    sequence = Sequence(Register.from_coordinates(ring(atoms), prefix="q"), AnalogDevice)
    sequence.declare_channel("g", "rydberg_global")
    sequence.add(Pulse.ConstantPulse(1000, 4.0, 0.0, 0.0), "g")
    sequence.measure("ground-rydberg")
    return to_program(sequence, shots, name=f"ring-{atoms}")


def ghz_program(qubits: int, shots: int) -> Program:
    from qiskit import QuantumCircuit

    circuit = QuantumCircuit(qubits, name=f"ghz-{qubits}")
    circuit.h(0)
    for i in range(qubits - 1):
        circuit.cx(i, i + 1)
    return to_program(circuit, shots)


def timed(program: Program, engine: str) -> float:
    started = time.perf_counter()
    counts = emulators.run(program, engine=engine)
    elapsed = time.perf_counter() - started
    assert sum(counts.values()) == program.shots, (engine, counts)
    return elapsed


def measure(program: Program, engine: str, repeats: int, limit_s: float) -> tuple[float, bool]:
    """(median seconds, whether the warm-up was the only run: it took over the limit)."""
    warm_up = timed(program, engine)
    if warm_up > limit_s:
        return warm_up, True
    return statistics.median(timed(program, engine) for _ in range(repeats)), False


def crossover(rows: list[dict[str, float | int]]) -> int | None:
    """Smallest N from which emu-sv beats QuTiP at that N and every larger N measured."""
    found = None
    for row in reversed(rows):
        if row["emu-sv"] >= row["qutip"]:
            break
        found = int(row["n"])
    return found


def cell(seconds: float, warm_up_only: bool) -> str:
    return f"{seconds:.3f} †" if warm_up_only else f"{seconds:.3f}"


def af_program(lattice: str, atoms: int, shots: int = 100) -> Program:
    """The antiferromagnetic preparation on ``atoms`` atoms: a chain, or a square lattice
    (``atoms`` a square number)."""
    from tests.support.programs import antiferromagnetic_json, chain, square

    coordinates = chain(atoms) if lattice == "chain" else square(math.isqrt(atoms))
    return Program("pulser", antiferromagnetic_json(coordinates), shots, f"{lattice}-{atoms}")


def point(lattice: str, atoms: int, engine: str | None) -> None:
    """One emulation, in this process: prints its facts as one JSON line."""
    program = af_program(lattice, atoms)
    emulators.facts(program)  # the SDK imports, outside the timed part
    cpu = _cpu_seconds()
    started = time.perf_counter()
    result = emulators.emulate(program, engine=engine)
    elapsed = time.perf_counter() - started
    cpu = _cpu_seconds() - cpu
    approximation = result.approximation
    print(
        json.dumps(
            {
                "engine": result.engine,
                "seconds": round(elapsed, 1),
                "cpu_s": round(cpu, 1),
                "reached": approximation.reached_bond_dim if approximation else None,
                "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
                "plan_s": emulators.plan(program, result.engine).seconds,
            }
        )
    )


def _cpu_seconds() -> float:
    """User and system CPU seconds of this process: what the point cost, whatever the load."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timed_point(lattice: str, atoms: int, engine: str | None, args: argparse.Namespace) -> dict:
    """:func:`point` in a fresh process, killed past ``--limit-s``."""
    command = [sys.executable, __file__, "--point", lattice, str(atoms), engine or "auto"]
    if args.torch_threads:
        command += ["--torch-threads", str(args.torch_threads)]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=args.limit_s + 30, check=False
        )
    except subprocess.TimeoutExpired:
        return {"engine": engine, "seconds": None, "why": f"> {args.limit_s:g} s (killed)"}
    if done.returncode != 0:
        return {"engine": engine, "seconds": None, "why": done.stderr.strip().splitlines()[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def sweep(args: argparse.Namespace) -> None:
    sizes = [int(s) for s in args.sizes.split(",")]
    engines = args.engines.split(",")
    versions = ", ".join(
        f"{p} {importlib.metadata.version(p)}"
        for p in ("pulser-simulation", "qutip", "emu-sv", "emu-mps", "torch")
    )
    print(f"{os.cpu_count()} CPUs, torch threads {args.torch_threads or 'default'}; {versions}")
    print(f"{args.sweep}, 3 µs, 100 shots, limit {args.limit_s:g} s; uptime: {_uptime()}")
    started = time.perf_counter()
    largest: dict[str, int] = {}
    print("| N | engine | wall s | CPU s | χ reached | peak RSS (MB) | plan estimate (s) |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for engine in engines:
        for n in sizes:
            auto = engine == "emu-mps" and emulators.engine_for("pulser", n, 3000) == "emu-mps"
            row = timed_point(args.sweep, n, None if auto else engine, args)
            name = f"{row['engine'] or engine} (chosen)" if auto else str(row["engine"])
            if row["seconds"] is None:
                print(f"| {n} | {name} | {row['why']} | | | | |", flush=True)
                break
            print(
                f"| {n} | {name} | {row['seconds']:.1f} | {row['cpu_s']:.1f} | "
                f"{row['reached'] or ''} | {row['rss_mb']} | {row['plan_s']:.0f} |",
                flush=True,
            )
            if row["seconds"] > args.limit_s:
                break
            largest[engine] = n
    print(f"largest within {args.limit_s:g} s: {largest}")
    print(f"total {time.perf_counter() - started:.0f} s; uptime after: {_uptime()}")


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="4,6,8,10,12,14,16")
    parser.add_argument("--shots", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--limit-s", type=float, default=20.0)
    parser.add_argument("--torch-threads", type=int, help="default: torch's own choice")
    parser.add_argument("--sweep", choices=("chain", "square"), help="largest register in time")
    parser.add_argument("--engines", default="qutip,emu-sv,emu-mps")
    parser.add_argument("--point", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")  # Pulser's deprecation notices would bury the table

    import torch

    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    if args.point:
        lattice, atoms, engine = args.point
        point(lattice, int(atoms), None if engine == "auto" else engine)
        return
    if args.sweep:
        sweep(args)
        return

    versions = ", ".join(
        f"{p} {importlib.metadata.version(p)}"
        for p in ("pulser-simulation", "qutip", "emu-sv", "qiskit-aer", "torch")
    )
    print(f"{os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}; {versions}")
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    rows: list[dict[str, float | int]] = []
    single = False
    lines = [
        "| N | QuTiP (s) | emu-sv (s) | faster | aer GHZ-N (s) |",
        "|---:|---:|---:|---|---:|",
    ]
    for n in (int(s) for s in args.sizes.split(",")):
        if rows and max(rows[-1]["qutip"], rows[-1]["emu-sv"]) > args.limit_s / 2:
            print(f"stopping before N={n}: the last point took over {args.limit_s / 2:g} s")
            break
        program = pulser_program(n, args.shots)
        row: dict[str, float | int] = {"n": n}
        cells: list[str] = []
        for engine in PULSER_ENGINES:
            row[engine], warm_up_only = measure(program, engine, args.repeats, args.limit_s)
            cells.append(cell(row[engine], warm_up_only))
            single = single or warm_up_only
        aer, aer_only = measure(ghz_program(n, args.shots), "aer", args.repeats, args.limit_s)
        single = single or aer_only
        faster = "emu-sv" if row["emu-sv"] < row["qutip"] else "QuTiP"
        lines.append(f"| {n} | {cells[0]} | {cells[1]} | {faster} | {cell(aer, aer_only)} |")
        print(lines[-1], flush=True)
        rows.append(row)
        if max(row["qutip"], row["emu-sv"]) > args.limit_s:
            print(f"stopping after N={n}: an engine took over {args.limit_s:g} s")
            break
    print()
    print("\n".join(lines))
    if single:
        print(f"\n† one run: the warm-up took over {args.limit_s:g} s, so it was not repeated.")
    print(
        f"total {time.perf_counter() - started:.0f} s; 1-min load average "
        f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after"
    )
    found = crossover(rows)
    if found is None:
        print(f"crossover: none up to N={rows[-1]['n']}: QuTiP is as fast or faster everywhere")
    else:
        print(f"crossover: emu-sv is faster from N={found}")


if __name__ == "__main__":
    main()
