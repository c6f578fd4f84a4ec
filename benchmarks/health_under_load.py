"""``/health`` while anonymous clients hammer ``/estimate`` with a long queue (issue 27, 8).

Starts the real daemon (``qhpc scheduler serve``, ``test`` profile, SQLite, token auth),
drains the QPU and queues ``--jobs`` one-shot jobs (so every ``/estimate`` ranks against
them), then for ``--seconds`` runs ``--clients`` anonymous keep-alive clients calling
``GET /estimate`` back to back from this host while one prober times ``GET /health`` every
20 ms. Prints the /health median and p95 and what the anonymous clients were answered.
``--daemon-flags`` pass on (``"--anonymous-rate-per-second 0"``: no per-address limit).

    .venv/bin/python benchmarks/health_under_load.py [--jobs 2000] [--clients 16] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from api import SECRET, exchange, load, one_shot_sequence, percentile, start_daemon

from qhpc_lab.scheduler.auth import make_token

PROBE_EVERY_S = 0.02


async def hammer_and_probe(url: str, clients: int, seconds: float) -> tuple[list[float], dict]:
    """/health latencies while ``clients`` anonymous clients call /estimate; their answers."""
    host, port = url.removeprefix("http://").split(":")
    estimate = f"GET /estimate?shots=100 HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    health = f"GET /health HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    stop = time.monotonic() + seconds
    answers: collections.Counter[int] = collections.Counter()

    async def client() -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            while time.monotonic() < stop:
                status = await exchange(reader, writer, estimate)
                answers[status] += 1  # a 429's Retry-After ignored, as an attacker would
        finally:
            writer.close()

    async def probe() -> list[float]:
        reader, writer = await asyncio.open_connection(host, int(port))
        latencies = []
        try:
            while time.monotonic() < stop:
                started = time.perf_counter()
                assert await exchange(reader, writer, health) == 200
                latencies.append(time.perf_counter() - started)
                await asyncio.sleep(PROBE_EVERY_S)
        finally:
            writer.close()
        return latencies

    *_, latencies = await asyncio.gather(*(client() for _ in range(clients)), probe())
    return latencies, dict(answers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--daemon-flags", default="", help="more `qhpc scheduler serve` flags")
    args = parser.parse_args()
    body = json.dumps({"sequence": one_shot_sequence(), "shots": 1}).encode()
    user, admin = make_token(SECRET, 1000), make_token(SECRET, 0, True)
    with tempfile.TemporaryDirectory() as state:
        process, url = start_daemon(Path(state), *args.daemon_flags.split())
        try:
            asyncio.run(load(url, admin, 1, 1, "POST", "/admin/drain", None))
            asyncio.run(load(url, user, 8, args.jobs, "POST", "/jobs", body))
            quiet = asyncio.run(hammer_and_probe(url, 0, 3.0))[0]
            latencies, answers = asyncio.run(hammer_and_probe(url, args.clients, args.seconds))
        finally:
            process.terminate()
            process.wait(10)
    print(
        f"{args.jobs} jobs queued (QPU drained), {args.clients} anonymous clients on "
        f"/estimate for {args.seconds:g} s, flags {args.daemon_flags or '(defaults)'}; "
        f"load average {' / '.join(f'{x:.1f}' for x in os.getloadavg())}"
    )
    print(
        f"/health alone: median {1000 * statistics.median(quiet):.1f} ms "
        f"({len(quiet)} calls); under load: median {1000 * statistics.median(latencies):.1f} "
        f"ms, p95 {1000 * percentile(latencies, 0.95):.1f} ms ({len(latencies)} calls)"
    )
    print(f"/estimate answers: {answers}")


if __name__ == "__main__":
    main()
