"""Sweeps accepted: one POST /jobs of N points against the same N points as single submissions.

A parameter scan of one parametrised 10-atom Pulser sequence (``omega`` and ``delta`` vary
over the points), submitted to the real daemon (``qhpc scheduler serve``, ``test`` profile,
SQLite, token auth, the QPU drained so nothing runs meanwhile) either as one sweep (one
request: the time until it is answered) or as N plain jobs over 50 keep-alive clients (the
time until the last is answered). Each size in each round has a fresh daemon, warmed with one
job of the same sequence (the validation worker has imported Pulser), that takes the sweep
first and then the single submissions (which thus meet a queue of one more job), so both
meet the same machine within seconds of each other.

    .venv/bin/python benchmarks/sweeps.py [--points 1000,10000] [--rounds 2] [--clients 50]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from api import SECRET, send_all, start_daemon

from qhpc_lab.scheduler.auth import make_token

SHOTS = 100
NO_LIMITS = {
    **{
        f"QHPC_MAX_QUEUED_{what}_PER_{scope}": "0"
        for what in ("JOBS", "SHOTS")
        for scope in ("USER", "SESSION")
    },
    "QHPC_MAX_SWEEP_SETS": "0",
    "QHPC_MAX_SWEEP_SHOTS": "0",
}
"""A scan of 10 000 single jobs is over the default per-user cap: no caps here."""


def ten_atom_sequence() -> str:
    """10 atoms (2 × 5, 6 µm), one global pulse whose amplitude and detuning are variables."""
    from pulser import Pulse, Register, Sequence
    from pulser.devices import AnalogDevice

    register = Register.rectangle(2, 5, spacing=6.0, prefix="q")
    sequence = Sequence(register, AnalogDevice)
    sequence.declare_channel("g", "rydberg_global")
    omega = sequence.declare_variable("omega")
    delta = sequence.declare_variable("delta")
    sequence.add(Pulse.ConstantPulse(500, omega, delta, 0.0), "g")
    sequence.measure("ground-rydberg")
    return sequence.to_abstract_repr()


def points(n: int) -> list[dict[str, float]]:
    """An n-point grid: 2 ≤ omega ≤ 10 rad/µs, −5 ≤ delta ≤ 5 rad/µs."""
    side = max(1, int(n**0.5))
    return [
        {"omega": 2 + 8 * (i % side) / side, "delta": -5 + 10 * (i // side) / (n / side)}
        for i in range(n)
    ]


def as_sweep(
    url: str, sequence: str, grid: list[dict[str, float]], headers: dict[str, str]
) -> float:
    body = {"sequence": sequence, "shots": SHOTS, "sweep": [{"variables": p} for p in grid]}
    started = time.perf_counter()
    answer = httpx.post(f"{url}/jobs", json=body, headers=headers, timeout=600)
    elapsed = time.perf_counter() - started
    answer.raise_for_status()
    assert answer.json()["sets"] == len(grid), answer.text
    return elapsed


def as_singles(
    url: str, sequence: str, grid: list[dict[str, float]], token: str, clients: int
) -> float:
    host, port = url.removeprefix("http://").split(":")
    requests = []
    for point in grid:
        body = json.dumps({"sequence": sequence, "shots": SHOTS, "variables": point}).encode()
        head = (
            f"POST /jobs HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        requests.append(head.encode() + body)
    started = time.perf_counter()
    _, _, failures = asyncio.run(send_all(host, int(port), requests, clients))
    elapsed = time.perf_counter() - started
    assert failures == 0, f"{failures} submissions refused"
    return elapsed


def measure(sequence: str, n: int, clients: int) -> tuple[float, float]:
    """The sweep's and the single submissions' seconds on a fresh, warmed daemon with a
    drained QPU."""
    token = make_token(SECRET, 1000)
    headers = {"Authorization": f"Bearer {token}"}
    admin = {"Authorization": f"Bearer {make_token(SECRET, 0, True)}"}
    with tempfile.TemporaryDirectory() as state:
        try:
            process, url = start_daemon(Path(state), env=NO_LIMITS)
        except RuntimeError:  # it did not answer in 2 minutes: once more, on a loaded machine
            process, url = start_daemon(Path(state), env=NO_LIMITS)
        try:
            httpx.post(f"{url}/admin/drain", headers=admin).raise_for_status()
            warm = {"sequence": sequence, "shots": SHOTS, "variables": {"omega": 1, "delta": 0}}
            httpx.post(f"{url}/jobs", json=warm, headers=headers, timeout=300).raise_for_status()
            grid = points(n)
            sweep = as_sweep(url, sequence, grid, headers)
            return sweep, as_singles(url, sequence, grid, token, clients)
        finally:
            process.terminate()
            process.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", default="1000,10000")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--clients", type=int, default=50)
    args = parser.parse_args()
    sequence = ten_atom_sequence()
    sizes = [int(n) for n in args.points.split(",")]
    seconds: dict[tuple[str, int], list[float]] = {}
    for round_ in range(args.rounds):
        for n in sizes:
            sweep, singles = measure(sequence, n, args.clients)
            for kind, took in (("sweep", sweep), ("singles", singles)):
                seconds.setdefault((kind, n), []).append(took)
                print(f"round {round_ + 1}: {n} points as {kind}: {took:.3f} s", flush=True)
    print("\n| points | one sweep (s) | single submissions (s) | singles / sweep |")
    print("|---:|---:|---:|---:|")
    for n in sizes:
        sweep, singles = seconds[("sweep", n)], seconds[("singles", n)]
        shown = [", ".join(f"{s:.3f}" for s in values) for values in (sweep, singles)]
        ratio = statistics.median(singles) / statistics.median(sweep)
        print(f"| {n} | {shown[0]} | {shown[1]} | {ratio:.0f}× |")


if __name__ == "__main__":
    main()
