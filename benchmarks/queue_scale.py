"""API cost against queue length, and MUNGE against token identity, on the real daemon.

For each queue depth (jobs already waiting: the QPU is drained so they stay queued) it measures
``POST /jobs`` throughput and latency at 50 keep-alive clients, ``GET /jobs/{id}`` and
``GET /device`` latency at one client, and the daemon's resident memory. Throughput is also
given as a ratio to the empty queue measured in the same run, since the machine is shared.
Then, on an empty queue, the same submission load with a fresh MUNGE credential per request
(made before the timed run) against bearer tokens: unbound, as QRMI makes them, and bound to
the request, as qhpc's clients make them.

    .venv/bin/python benchmarks/queue_scale.py [--depths 0,1000,5000,20000] [--jobs 400]
        [--daemon-source CHECKOUT]   # the daemon of another checkout (a previous release)

MUNGE mode needs a running munged on the default socket (``runuser -u munge -- munged``).
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
import psutil

sys.path.insert(0, str(Path(__file__).parent))
from api import SECRET, one_shot_sequence, percentile, send_all, start_daemon

from qhpc_lab import munge
from qhpc_lab.scheduler.auth import make_token


def request(method: str, path: str, host: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    lines += ["Content-Type: application/json", f"Content-Length: {len(body)}", "", ""]
    return "\r\n".join(lines).encode() + body


NO_QUEUE_LIMITS = {
    f"QHPC_MAX_QUEUED_{what}_PER_{scope}": "0"
    for what in ("JOBS", "SHOTS")
    for scope in ("USER", "SESSION")
}
"""A deep queue is the point here: no per-user or per-session caps."""


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def queue_depths(args: argparse.Namespace, body: bytes) -> None:
    user = {"Authorization": f"Bearer {make_token(SECRET, 1000)}"}
    admin = {"Authorization": f"Bearer {make_token(SECRET, 0, True)}"}
    with tempfile.TemporaryDirectory() as state:
        process, url = start_daemon(Path(state), env={**NO_QUEUE_LIMITS, **daemon_source(args)})
        port = int(url.rsplit(":", 1)[1])
        host = f"127.0.0.1:{port}"
        try:
            httpx.post(f"{url}/admin/drain", headers=admin).raise_for_status()
            print(
                "| queued | POST /jobs /s | ratio | p50 ms | p99 ms | GET /jobs/{id} p50 ms "
                "| GET /device p50 ms | RSS MB |"
            )
            print("|---:|---:|---:|---:|---:|---:|---:|---:|")
            queued = 0
            baseline = None
            for depth in (int(d) for d in args.depths.split(",")):
                fill = [request("POST", "/jobs", host, admin, body)] * (depth - queued)
                if fill:
                    asyncio.run(send_all("127.0.0.1", port, fill, 20))
                queued = depth
                posts = [request("POST", "/jobs", host, user, body)] * args.jobs
                rate, latencies, failures = asyncio.run(send_all("127.0.0.1", port, posts, 50))
                queued += args.jobs
                assert failures == 0, f"{failures} submissions failed"
                deep = httpx.get(f"{url}/jobs?limit=1", headers=user).json()[0]["id"]
                one = [request("GET", f"/jobs/{deep}", host, user)] * 200
                _, reads, _ = asyncio.run(send_all("127.0.0.1", port, one, 1))
                dev = [request("GET", "/device", host, {})] * 200
                _, device_reads, _ = asyncio.run(send_all("127.0.0.1", port, dev, 1))
                baseline = baseline or rate
                print(
                    f"| {depth} | {rate:.0f} | {rate / baseline:.2f} | "
                    f"{ms(statistics.median(latencies))} | {ms(percentile(latencies, 0.99))} | "
                    f"{ms(statistics.median(reads))} | {ms(statistics.median(device_reads))} | "
                    f"{rss_mb(process.pid):.0f} |",
                    flush=True,
                )
        finally:
            process.terminate()
            process.wait(30)


def daemon_source(args: argparse.Namespace) -> dict[str, str]:
    """The daemon's environment for ``--daemon-source``: that checkout first on its path."""
    return {"PYTHONPATH": str(Path(args.daemon_source).resolve())} if args.daemon_source else {}


def munge_against_token(args: argparse.Namespace, body: bytes) -> None:
    with tempfile.TemporaryDirectory() as state:
        env = {**NO_QUEUE_LIMITS, **daemon_source(args)}
        process, url = start_daemon(Path(state), "--auth", "munge,token", env=env)
        port = int(url.rsplit(":", 1)[1])
        host = f"127.0.0.1:{port}"
        try:
            admin = {"X-Munge-Cred": munge.encode()}
            session = httpx.post(
                f"{url}/sessions", json={"user_id": str(os.getuid())}, headers=admin
            ).json()["id"]
            token = {
                "Authorization": f"Bearer {make_token(SECRET, os.getuid())}",
                "X-Warden-Session": session,
            }
            print("| identity | POST /jobs /s | p50 ms | p99 ms | daemon CPU ms/request |")
            print("|---|---:|---:|---:|---:|")
            daemon = psutil.Process(process.pid)
            for _ in range(args.rounds):
                for mode in ("token", "munge", "munge-bound"):
                    if mode != "token":
                        make = {
                            "munge": munge.encode,  # as QRMI's clients send them
                            "munge-bound": lambda: munge.encode_for_request("POST", "/jobs", body),
                        }[mode]
                        posts = [
                            request(
                                "POST",
                                "/jobs",
                                host,
                                {"X-Munge-Cred": make(), "X-Warden-Session": session},
                                body,
                            )
                            for _ in range(args.jobs)
                        ]
                    else:
                        posts = [request("POST", "/jobs", host, token, body)] * args.jobs
                    cpu = sum(daemon.cpu_times()[:2])
                    rate, latencies, failures = asyncio.run(send_all("127.0.0.1", port, posts, 50))
                    cpu = sum(daemon.cpu_times()[:2]) - cpu
                    assert failures == 0, f"{failures} {mode} submissions failed"
                    print(
                        f"| {mode} | {rate:.0f} | {ms(statistics.median(latencies))} | "
                        f"{ms(percentile(latencies, 0.99))} | {cpu / args.jobs * 1000:.2f} |",
                        flush=True,
                    )
                    while httpx.get(f"{url}/device").json()["queue_depth"]["production"]:
                        time.sleep(0.2)
        finally:
            process.terminate()
            process.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depths", default="0,1000,5000,20000")
    parser.add_argument("--jobs", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=2, help="MUNGE/token alternations")
    parser.add_argument("--skip-munge", action="store_true")
    parser.add_argument(
        "--daemon-source",
        help="a checkout whose qhpc_lab the daemon runs (a previous release, for a ratio)",
    )
    args = parser.parse_args()
    body = json.dumps({"sequence": one_shot_sequence(), "shots": 1}).encode()
    print(f"load average before: {os.getloadavg()}")
    queue_depths(args, body)
    if not args.skip_munge:
        munge_against_token(args, body)
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
