"""What the request-metrics middleware costs a request: the real app with and without it.

Both apps come from ``create_app`` on the ``test`` profile; one has ``RequestMetrics`` taken out
of its middleware before its first request. Requests are ASGI calls made directly from this
process (no sockets, no HTTP client), so the framework's own work is the baseline. Runs
alternate A, B, B, A, … in batches so that the shared machine's drift hits both alike; the
overhead is the median of the per-pair differences.

    .venv/bin/python benchmarks/metrics_overhead.py [--requests 2000] [--pairs 30]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

from fastapi import FastAPI

from qhpc_lab.qpu.emulated import EmulatedQPU
from qhpc_lab.scheduler import SchedulerConfig, build_scheduler, create_app
from qhpc_lab.scheduler.auth import make_token
from qhpc_lab.scheduler.metrics import RequestMetrics

SECRET = "bench-secret"


async def batch(app: FastAPI, path: str, headers: list[tuple[bytes, bytes]], n: int) -> float:
    """Seconds per request over ``n`` GETs of ``path``."""

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        if message["type"] == "http.response.start":
            assert message["status"] == 200, message

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    started = time.perf_counter()
    for _ in range(n):
        await app(dict(scope), receive, send)
    return (time.perf_counter() - started) / n


async def main(requests: int, pairs: int) -> None:
    with tempfile.TemporaryDirectory() as state:
        config = SchedulerConfig(
            db=f"sqlite:///{Path(state) / 'bench.db'}",
            device="test",
            auth=("token",),
            token_secret=SECRET,
        )
        scheduler = build_scheduler(config, EmulatedQPU)
        with_metrics = create_app(config, scheduler=scheduler)
        without = create_app(config, scheduler=scheduler)
        without.user_middleware = [
            m for m in without.user_middleware if m.cls is not RequestMetrics
        ]
        await scheduler.start()
        token = make_token(SECRET, "1000", False)
        auth = [(b"authorization", f"Bearer {token}".encode())]
        job = scheduler.store.add_job(
            session_id=None,
            user_id="1000",
            slurm_job_id=None,
            job_class="production",
            name=None,
            format="pulser",
            body="{}",
            variables={},
            shots=1,
            num_qubits=2,
            max_calibration_age_s=None,
        )
        try:
            for path, headers in (("/health", []), (f"/jobs/{job.id}", auth)):
                for app in (with_metrics, without):  # warm-up
                    await batch(app, path, headers, requests // 4)
                differences, base = [], []
                for pair in range(pairs):
                    order = (with_metrics, without) if pair % 2 else (without, with_metrics)
                    timings = {id(app): await batch(app, path, headers, requests) for app in order}
                    differences.append(timings[id(with_metrics)] - timings[id(without)])
                    base.append(timings[id(without)])
                overhead = statistics.median(differences)
                floor = statistics.median(base)
                print(
                    f"GET {path:12} without {floor * 1e6:7.1f} µs  with +{overhead * 1e6:5.1f} µs"
                    f"  ratio {(floor + overhead) / floor:.3f}"
                )
        finally:
            await scheduler.stop()
            scheduler.store.close()
    print(f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--pairs", type=int, default=30)
    args = parser.parse_args()
    asyncio.run(main(args.requests, args.pairs))
