"""Scheduler API benchmark: submissions/s and latency under concurrency, submit→RUNNING on idle.

Starts the real daemon (``qhpc scheduler serve``, ``test`` profile, SQLite, token auth) and
loads it from this process over keep-alive connections; dispatch latency is read through
httpx and the event stream, as the kernel-side client does. Because the machine is
shared and noisy, every throughput figure is also given as a ratio to a baseline measured in
the same run: the rate of ``GET /health`` (the framework's floor) at the same concurrency.

    .venv/bin/python benchmarks/api.py [--jobs 400] [--clients 1,10,50] [--idle-samples 30]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx

from qhpc_lab.scheduler.auth import make_token

SECRET = "benchmark-secret"
START_TIMEOUT_S = 300
"""How long a daemon may take to answer /health: past 2 minutes at load average 20-30 (two
cores shared by several engineers' test suites), the Pulser imports included."""


def one_shot_sequence() -> str:
    """The workload Warden was measured with: a one-shot, 2-atom Pulser sequence."""
    from pulser import Pulse, Register, Sequence
    from pulser.devices import AnalogDevice

    sequence = Sequence(Register.from_coordinates([(-3, 0), (3, 0)], prefix="q"), AnalogDevice)
    sequence.declare_channel("g", "rydberg_global")
    sequence.add(Pulse.ConstantPulse(100, 1.0, 0.0, 0.0), "g")
    sequence.measure("ground-rydberg")
    return sequence.to_abstract_repr()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def load(
    url: str, token: str, clients: int, total: int, method: str, path: str, body: bytes | None
) -> tuple[float, list[float], int]:
    """``total`` requests over ``clients`` keep-alive connections; (rate, latencies, failures).

    A minimal HTTP/1.1 client over asyncio streams with pre-encoded requests: httpx spent
    ~20 ms of CPU per request at 50 connections, so on a shared 2-core machine it measured
    itself, not the scheduler.
    """
    host, port = url.removeprefix("http://").split(":")
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body or b'')}\r\n\r\n"
    )
    return await send_all(host, int(port), [head.encode() + (body or b"")] * total, clients)


async def exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> int:
    """One request on a keep-alive connection; its status."""
    writer.write(request)
    status = int((await reader.readline()).split()[1])
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        if name.lower() == "content-length":
            length = int(value)
    await reader.readexactly(length)
    return status


async def send_all(
    host: str, port: int, requests: list[bytes], clients: int
) -> tuple[float, list[float], int]:
    """Send pre-encoded HTTP/1.1 ``requests`` over ``clients`` keep-alive connections, each
    taking the next one as it is answered; (rate, latencies, non-200 answers)."""
    latencies: list[float] = []
    failures = 0
    waiting = list(reversed(requests))

    async def worker() -> None:
        nonlocal failures
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while waiting:
                request = waiting.pop()
                started = time.perf_counter()
                status = await exchange(reader, writer, request)
                latencies.append(time.perf_counter() - started)
                failures += status != 200
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    return len(requests) / (time.perf_counter() - started), latencies, failures


async def idle_dispatch(url: str, token: str, body: bytes, samples: int) -> dict[str, list[float]]:
    """Submit one job at a time to an idle QPU; time until the scheduler reports it RUNNING.

    ``server`` is the daemon's own created_at → started_at; ``client`` is from sending the POST
    to receiving the RUNNING event on the /events stream.
    """
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    server_side: list[float] = []
    client_side: list[float] = []
    async with (
        httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as http,
        http.stream("GET", "/events") as events,
    ):
        lines = events.aiter_lines()
        for _ in range(samples):
            sent = time.perf_counter()
            job = (await http.post("/jobs", content=body)).json()
            running_seen: float | None = None
            async for status in job_statuses(lines, job["id"]):
                if status == "RUNNING" and running_seen is None:
                    running_seen = time.perf_counter()
            final = (await http.get(f"/jobs/{job['id']}")).json()
            created = _parse(final["created_at"])
            started = _parse(final["started_at"])
            server_side.append(started - created)
            if running_seen is not None:
                client_side.append(running_seen - sent)
    return {"server": server_side, "client": client_side}


async def job_statuses(lines: AsyncIterator[str], job_id: int) -> AsyncIterator[str]:
    """Job ``job_id``'s statuses as its ``job`` events arrive on an open ``/events`` stream's
    lines (others' events skipped), up to and including its final one."""
    kind = ""
    async for line in lines:
        if line.startswith("event: "):
            kind = line[7:]
        elif line.startswith("data: ") and kind == "job":
            data = json.loads(line[6:])
            if data["id"] != job_id:
                continue
            yield data["status"]
            if data["status"] in ("DONE", "ERROR", "CANCELED"):
                return


def wait_until_idle(url: str) -> None:
    """Until the QPU has run every queued job."""
    while any(httpx.get(f"{url}/device").json()["queue_depth"].values()):
        time.sleep(0.2)


def _parse(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def start_daemon(
    state: Path,
    *extra: str,
    env: dict[str, str] | None = None,
    log: Path | None = None,
    cwd: Path | None = None,
) -> tuple[subprocess.Popen[bytes], str]:
    """``qhpc scheduler serve --device test`` on a free port (more flags in ``extra``, more
    variables in ``env``, its output in ``log`` or nowhere, run in ``cwd``: ``python -m``
    imports qhpc_lab from there first), once it answers ``/health``; the benchmarks' one way
    to start it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    environment = {
        **os.environ,
        "QHPC_STATE_DIR": str(state),
        "QHPC_TOKEN_SECRET": SECRET,
        **(env or {}),
    }
    command = [sys.executable, "-m", "qhpc_lab.cli", "scheduler", "serve", "--device", "test"]
    output = log.open("ab") if log is not None else subprocess.DEVNULL
    # With PYTHONPATH, that tree's code: run from it, as `python -m` puts the working
    # directory before PYTHONPATH and a checkout's own qhpc_lab would win.
    process = subprocess.Popen(
        [*command, "--port", str(port), *extra],
        cwd=cwd or (env or {}).get("PYTHONPATH"),
        env=environment,
        stdout=output,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    process.kill()
    raise RuntimeError("the scheduler did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=400)
    parser.add_argument("--clients", default="1,10,50")
    parser.add_argument("--idle-samples", type=int, default=30)
    args = parser.parse_args()
    body = json.dumps({"sequence": one_shot_sequence(), "shots": 1}).encode()
    token = make_token(SECRET, 1000)
    rows = []
    with tempfile.TemporaryDirectory() as state:
        process, url = start_daemon(Path(state))
        try:
            # Warm up: the first submission pays the validation of this sequence and imports.
            asyncio.run(load(url, token, 1, 20, "POST", "/jobs", body))
            for clients in (int(c) for c in args.clients.split(",")):
                wait_until_idle(url)  # each row starts from an empty queue, as Warden's did
                base_rate, _, _ = asyncio.run(
                    load(url, token, clients, args.jobs, "GET", "/health", None)
                )
                rate, latencies, failures = asyncio.run(
                    load(url, token, clients, args.jobs, "POST", "/jobs", body)
                )
                rows.append((clients, rate, base_rate, latencies, failures))
            wait_until_idle(url)
            idle = asyncio.run(idle_dispatch(url, token, body, args.idle_samples))
        finally:
            process.terminate()
            process.wait(10)
    print(f"POST /jobs, {args.jobs} one-shot 2-atom Pulser jobs per row (test profile, SQLite)\n")
    print("| clients | submissions/s | p50 ms | p99 ms | failures | GET /health/s | ratio |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for clients, rate, base, latencies, failures in rows:
        print(
            f"| {clients} | {rate:.0f} | {1000 * statistics.median(latencies):.1f} | "
            f"{1000 * percentile(latencies, 0.99):.1f} | {failures} | {base:.0f} | "
            f"{rate / base:.2f} |"
        )
    for name, values in idle.items():
        if values:
            print(
                f"\nsubmit→RUNNING on an idle QPU ({name} side, {len(values)} jobs): "
                f"p50 {1000 * statistics.median(values):.1f} ms, "
                f"p90 {1000 * percentile(values, 0.9):.1f} ms, max {1000 * max(values):.1f} ms"
            )


if __name__ == "__main__":
    main()
