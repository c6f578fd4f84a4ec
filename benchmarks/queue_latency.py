"""Queue change → visible in the kernel: another user's submission to ``job.watch()`` moving.

Starts the real daemon (``qhpc scheduler serve --device test``, SQLite, token auth). User A
(a client discovered from a Slurm job's QRMI variables, as in a kernel) has a long job running
and one waiting at position 1, followed by ``job.watch()`` (both resubmitted every few
samples: the device runs at most 10 000 shots, 5 s, a job). Each sample, user B submits a job
of class ``test`` (it outranks A's waiting job: A moves to position 2), then cancels it (A
moves back to 1); the latency is from just before B's request to A's ``watch()`` yielding the
new position. The baseline, measured in the same run on the same changes, is a tight poll of
``GET /jobs/{id}`` every 20 ms (the fastest a client could see it by asking).

    .venv/bin/python benchmarks/queue_latency.py [--samples 40]
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

from qhpc_lab.client import Client
from qhpc_lab.programs import Program
from qhpc_lab.scheduler.auth import make_token

sys.path.insert(0, str(Path(__file__).parent))
from api import SECRET, one_shot_sequence, percentile, start_daemon

POLL_S = 0.02
BLOCKER_SHOTS = 10_000
"""The device's most: 5 s at 0.5 ms a shot, enough for :data:`PAIRS_PER_BLOCKER` samples."""
PAIRS_PER_BLOCKER = 3


async def measure(url: str, samples: int) -> dict[str, list[float]]:
    state = Path(tempfile.mkdtemp())
    client = Client(
        environ={
            "HOME": str(state),
            "QRMI_JOB_QPU_RESOURCES": "lab",
            "QRMI_JOB_QPU_TYPES": "pasqal-local",
            "lab_QRMI_WARDEN_URL": url,
            "QHPC_TOKEN": make_token(SECRET, "1000"),
        }
    )
    body = one_shot_sequence()
    user = {"Authorization": f"Bearer {make_token(SECRET, '1000')}"}
    other = {"Authorization": f"Bearer {make_token(SECRET, '1001')}"}
    results: dict[str, list[float]] = {"stream": [], "poll": []}
    async with (
        httpx.AsyncClient(base_url=url, headers=user, timeout=30) as a,
        httpx.AsyncClient(base_url=url, headers=other, timeout=30) as b,
    ):
        while len(results["stream"]) < 2 * samples:
            await cycle(client, body, a, b, results)
    client.close()
    return results


async def cycle(
    client: Client,
    body: str,
    a: httpx.AsyncClient,
    b: httpx.AsyncClient,
    results: dict[str, list[float]],
) -> None:
    """A's blocker and waiting job, then a few of B's submit-and-cancel pairs."""
    blocker = client.submit(Program("pulser", body, BLOCKER_SHOTS))
    mine = client.submit(Program("pulser", body, 10))
    positions: asyncio.Queue[tuple[float, int | None]] = asyncio.Queue()

    async def follow() -> None:
        async for state in mine.watch():
            positions.put_nowait((time.monotonic(), state.position))

    async def poll(want: int, since: float) -> float:
        while True:
            view = (await a.get(f"/jobs/{mine.id}")).json()
            if view["position"] == want:
                return time.monotonic() - since
            await asyncio.sleep(POLL_S)

    async def seen(want: int, since: float) -> float:
        while True:
            at, position = await positions.get()
            if position == want:
                return at - since

    follower = asyncio.create_task(follow())
    try:
        async with asyncio.timeout(60):
            await seen(1, 0)
        for _ in range(PAIRS_PER_BLOCKER):
            for want in (2, 1):
                while not positions.empty():
                    positions.get_nowait()
                since = time.monotonic()
                if want == 2:
                    job = {"sequence": body, "shots": BLOCKER_SHOTS, "job_class": "test"}
                    ahead = (await b.post("/jobs", json=job)).json()["id"]
                else:
                    await b.post(f"/jobs/{ahead}/cancel")
                async with asyncio.timeout(30):
                    stream, polled = await asyncio.gather(seen(want, since), poll(want, since))
                results["stream"].append(stream)
                results["poll"].append(polled)
                await asyncio.sleep(0.1)
    finally:
        follower.cancel()
        mine.cancel()
        blocker.cancel()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=40, help="submit+cancel pairs")
    args = parser.parse_args()
    state = Path(tempfile.mkdtemp())
    process, url = start_daemon(state)
    started = time.monotonic()
    try:
        results = asyncio.run(measure(url, args.samples))
    finally:
        process.terminate()
        process.wait(20)
    report: dict[str, object] = {"samples": len(results["stream"])}
    for name, values in results.items():
        ms = [v * 1000 for v in values]
        report[f"{name}_p50_ms"] = round(statistics.median(ms), 1)
        report[f"{name}_p95_ms"] = round(percentile(ms, 0.95), 1)
        report[f"{name}_max_ms"] = round(max(ms), 1)
    report["stream_over_poll_p50"] = round(
        report["stream_p50_ms"] / report["poll_p50_ms"],
        2,  # type: ignore[operator]
    )
    report["wall_s"] = round(time.monotonic() - started, 1)
    report["load_average"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
