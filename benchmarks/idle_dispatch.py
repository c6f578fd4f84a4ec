"""Submit → RUNNING on an idle QPU, hop by hop, with the emulated QPU and the QPU API driver.

The figure (issue 26): from the client sending ``POST /jobs`` to the client reading the job's
RUNNING event on ``/events`` (a stream it opened before), one job at a time, each waited to
its end before the next. That is ``api.py``'s ``idle_dispatch`` "client side"; this splits it
at the daemon's own timestamps (the same host's clock as this process's):

- *POST answered*: the client has the POST's answer (the job PENDING);
- *send → created_at*: the request's way in (HTTP, auth, parsing, validation) up to the
  admission's timestamp;
- *created_at → started_at*: the admission's write and the dispatcher's decision, up to the
  moment it marks the job RUNNING (the server side ``api.py`` reports);
- *started_at → RUNNING read*: the RUNNING write, the event's way to the stream, the client
  reading it.

Each daemon is ``qhpc scheduler serve --device test`` (SQLite, token auth) from ``--source``
(default: this checkout), once with its in-process emulated QPU and once (``--qpu-api``, the
default runs both) against ``qhpc qpu serve --profile test --setup 0`` through the QPU API
driver. Not a test: it asserts nothing.

    .venv/bin/python benchmarks/idle_dispatch.py [--samples 40] [--rounds 2] [--source TREE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
import qpu_api
from api import (
    SECRET,
    _parse,
    job_statuses,
    load,
    one_shot_sequence,
    percentile,
    start_daemon,
    wait_until_idle,
)

from qhpc_lab.scheduler.auth import make_token

HOPS = (
    "POST answered",
    "send → created_at",
    "created_at → started_at",
    "started_at → RUNNING read",
    "send → RUNNING read (the figure)",
)


async def hops(url: str, token: str, body: bytes, samples: int) -> dict[str, list[float]]:
    """``samples`` jobs one at a time on an idle QPU; each hop's seconds per job."""
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    found: dict[str, list[float]] = {hop: [] for hop in HOPS}
    async with (
        httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as http,
        http.stream("GET", "/events") as events,
    ):
        lines = events.aiter_lines()
        for _ in range(samples):
            sent_wall, sent = time.time(), time.perf_counter()
            job = (await http.post("/jobs", content=body)).json()
            answered = time.perf_counter()
            running: tuple[float, float] | None = None  # (wall, perf) when RUNNING was read
            async for status in job_statuses(lines, job["id"]):
                if status == "RUNNING" and running is None:
                    running = (time.time(), time.perf_counter())
            final = (await http.get(f"/jobs/{job['id']}")).json()
            if running is None:
                continue  # ended without a RUNNING event read (an error): not a sample
            created, started = _parse(final["created_at"]), _parse(final["started_at"])
            for hop, seconds in zip(
                HOPS,
                (
                    answered - sent,
                    created - sent_wall,
                    started - created,
                    running[0] - started,
                    running[1] - sent,
                ),
                strict=True,
            ):
                found[hop].append(seconds)
    return found


def one_daemon(source: Path, qpu_url: str | None, samples: int) -> dict[str, list[float]]:
    body = json.dumps({"sequence": one_shot_sequence(), "shots": 1}).encode()
    token = make_token(SECRET, 1000)
    env = {"PYTHONPATH": str(source), **({"QHPC_QPU_URL": qpu_url} if qpu_url else {})}
    with tempfile.TemporaryDirectory() as state:
        process, url = start_daemon(Path(state), env=env)
        try:
            asyncio.run(load(url, token, 1, 10, "POST", "/jobs", body))  # warm-up
            wait_until_idle(url)
            return asyncio.run(hops(url, token, body, samples))
        finally:
            process.terminate()
            process.wait(20)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--source", type=Path, default=Path(__file__).resolve().parent.parent)
    parser.add_argument("--qpu-api", choices=("both", "only", "no"), default="both")
    args = parser.parse_args()
    qpu_api.SEQUENCE = one_shot_sequence()  # what the stand-in's warm-up job runs
    drivers = {"no": ["emulated"], "only": ["QPU API"], "both": ["emulated", "QPU API"]}
    found: dict[str, dict[str, list[float]]] = {}
    before = os.getloadavg()
    with tempfile.TemporaryDirectory() as scratch:
        for _ in range(args.rounds):
            for driver in drivers[args.qpu_api]:
                if driver == "emulated":
                    figures = one_daemon(args.source, None, args.samples)
                else:
                    with qpu_api.served("test", 0.0, Path(scratch) / "qpu.log") as qpu_url:
                        figures = one_daemon(args.source, qpu_url, args.samples)
                for hop, values in figures.items():
                    found.setdefault(driver, {}).setdefault(hop, []).extend(values)
    after = os.getloadavg()
    print(
        f"{args.rounds} rounds of {args.samples} jobs, daemon from {args.source}; "
        f"load average {before[0]:.2f} before, {after[0]:.2f} after\n"
    )
    print("| QPU | hop | p50 ms | p90 ms | min ms |")
    print("|---|---|---:|---:|---:|")
    for driver, figures in found.items():
        for hop, values in figures.items():
            ms = [1000 * v for v in values]
            print(
                f"| {driver} | {hop} | {statistics.median(ms):.1f} | "
                f"{percentile(ms, 0.9):.1f} | {min(ms):.1f} |"
            )


if __name__ == "__main__":
    main()
