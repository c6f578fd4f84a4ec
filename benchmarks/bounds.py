"""What a program's static bounds and the validation worker cost (docs/benchmarks.md).

Measures, in one run: the static scan and the full ``validate`` of the 957 KB OpenQASM body
that used to block the daemon; Qiskit's importer on the largest body the bounds accept (the
baseline the scan is a ratio of); ``validate_async`` on a cache hit, on a miss, and on a
budget overrun (which replaces the worker: the restart is timed too).

    .venv/bin/python benchmarks/bounds.py
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time

from qhpc_lab.programs import (
    Program,
    ProgramError,
    start_validation_worker,
    stop_validation_worker,
    validate,
    validate_async,
)
from qhpc_lab.programs.bounds import QASM_MAX_OPERATIONS, check_qasm3
from qhpc_lab.qpu import DeviceProfile


def _qasm(gates: int) -> str:
    lines = "".join(f"cx q[{i % 3}], q[3];\n" for i in range(gates))
    return 'OPENQASM 3.0; include "stdgates.inc"; qubit[4] q; bit[4] c;\n' + lines


def _best(run: object, repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()  # type: ignore[operator]
        times.append(time.perf_counter() - started)
    return min(times)


def _refused(program: Program, spec: object) -> None:
    try:
        validate(program, spec)  # type: ignore[arg-type]
    except ProgramError:
        return
    raise AssertionError("the big body was accepted")


async def _worker_figures(spec: object) -> None:
    small = Program("qasm3", _qasm(3), 10)
    start_validation_worker()
    started = time.perf_counter()
    await validate_async(small, spec)  # type: ignore[arg-type]
    print(f"first validate_async (worker start + check): {time.perf_counter() - started:.2f} s")
    hits = []
    for _ in range(1000):
        started = time.perf_counter()
        await validate_async(small, spec)  # type: ignore[arg-type]
        hits.append(time.perf_counter() - started)
    print(f"cache hit: median {statistics.median(hits) * 1e6:.0f} µs")
    started = time.perf_counter()
    await validate_async(Program("qasm3", _qasm(4), 10), spec)  # type: ignore[arg-type]
    print(f"miss (warm worker): {(time.perf_counter() - started) * 1e3:.0f} ms")
    started = time.perf_counter()
    try:
        await validate_async(Program("qasm3", _qasm(4900), 10), spec, budget_s=0.5)  # type: ignore[arg-type]
    except ProgramError as err:
        print(
            f"budget overrun (0.5 s) answered in {time.perf_counter() - started:.2f} s: {err.rule}"
        )
    started = time.perf_counter()
    await validate_async(Program("qasm3", _qasm(5), 10), spec)  # type: ignore[arg-type]
    print(f"next miss (waits for the fresh worker): {time.perf_counter() - started:.2f} s")
    stop_validation_worker()


def main() -> None:
    print(f"load average {os.getloadavg()[0]:.1f}")
    spec = DeviceProfile.load("test").spec
    big = Program("qasm3", _qasm(63_000), 10)
    print(f"big body: {len(big.body) / 1000:.0f} KB")
    accepted = _qasm(QASM_MAX_OPERATIONS - 10)
    scan = _best(lambda: check_qasm3(accepted, spec.name, spec.max_atom_num))
    refusal = _best(lambda: _refused(big, spec))
    from qiskit import qasm3

    qasm3.loads(_qasm(10))  # the importer's own imports, outside the timing
    parse = _best(lambda: qasm3.loads(accepted), repeat=1)
    print(f"validate(957 KB body), refused: {refusal * 1e3:.1f} ms")
    print(f"static scan of the largest accepted body: {scan * 1e3:.1f} ms")
    print(f"Qiskit importer on that body: {parse:.2f} s (scan/parse = {scan / parse:.4f})")
    asyncio.run(_worker_figures(spec))


if __name__ == "__main__":
    main()
