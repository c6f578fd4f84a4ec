"""The hybrid loop's round trip: a result in the kernel → the next job RUNNING on the QPU.

The inner loop of every variational algorithm: a job's result reaches the kernel, the kernel
submits the next program, the scheduler starts it. One real daemon (``qhpc scheduler serve``,
``test`` profile, SQLite, token and MUNGE auth, an idle QPU) runs the same loop of
``--iterations`` small jobs (the one-shot 2-atom Pulser sequence of ``api.py`` at ``--shots``
shots) from two clients, alternately for ``--rounds`` rounds:

- ``qhpc_lab``: :meth:`qhpc_lab.client.Client.loop` (``qhpc_lab.loop()``), each job
  ``client.submit(...)`` then ``job.result()``, with a bearer token;
- ``qrmi``: QRMI's own ``pasqal-local`` client (the real ``qrmi`` wheel, MUNGE), as a Slurm job
  uses it: ``task_start``, ``task_status`` polled every ``--qrmi-poll-ms``, ``task_result``.

Per iteration after the first: *round trip* = the next job's ``started_at`` (the daemon's
clock) − the moment the previous result was in the kernel (this process's clock: the same
host's); *scheduler side* = that job's ``started_at`` − ``created_at``, both the daemon's, so
the rest is the client's (its request, its own work) and the wire. Prints p50/p90/max of each
over every round's iterations, and the load average.

    .venv/bin/python benchmarks/loop_round_trip.py [--iterations 20] [--rounds 3] [--shots 10]

The QRMI loop needs the system munged (``runuser -u munge -- munged``) and runs as root (QRMI
acts for ``QRMI_JOB_UID``; root opens its session). A Warden is not measured here: the only
one on this machine is tests/support/warden_standin.py, a clock-driven fake that starts every
job ``pending_s`` (0.3 s) after its submission by construction.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from api import SECRET, _parse, one_shot_sequence, percentile, start_daemon

from qhpc_lab.client import Client
from qhpc_lab.programs import Program
from qhpc_lab.scheduler.auth import make_token

USER_ID = 1000


def qhpc_loop(url: str, sequence: str, iterations: int, shots: int) -> list[tuple[int, float]]:
    """The loop through ``qhpc_lab``'s client in one hybrid loop: (job id, result in kernel)."""
    with tempfile.TemporaryDirectory() as home:
        environ = {
            "HOME": home,
            "QRMI_JOB_QPU_RESOURCES": "lab",
            "QRMI_JOB_QPU_TYPES": "pasqal-local",
            "lab_QRMI_WARDEN_URL": url,
            "QHPC_TOKEN": make_token(SECRET, USER_ID),
        }
        client = Client(environ=environ)
        try:
            done: list[tuple[int, float]] = []
            with client.loop():
                for _ in range(iterations):
                    job = client.submit(Program(format="pulser", body=sequence, shots=shots))
                    job.result()
                    done.append((int(job.id), time.time()))
            return done
        finally:
            client.close()


def qrmi_loop(
    url: str, sequence: str, iterations: int, shots: int, poll_s: float
) -> list[tuple[int, float]]:
    """The same loop through QRMI's ``pasqal-local`` resource, as a Slurm job would."""
    from qrmi import Payload, QuantumResource, ResourceType, TaskStatus

    final = (TaskStatus.Completed, TaskStatus.Failed, TaskStatus.Cancelled)
    os.environ["BENCH_QRMI_WARDEN_URL"] = url
    os.environ["QRMI_JOB_UID"] = str(os.getuid())
    os.environ["QRMI_JOB_ID"] = "1"
    os.environ.pop("BENCH_QRMI_JOB_ACQUISITION_TOKEN", None)  # a previous round's, released
    qpu = QuantumResource("BENCH", ResourceType.PasqalLocal)
    session_id = qpu.acquire()
    os.environ["BENCH_QRMI_JOB_ACQUISITION_TOKEN"] = session_id
    done: list[tuple[int, float]] = []
    try:
        for _ in range(iterations):
            task_id = qpu.task_start(Payload.PasqalCloud(sequence=sequence, job_runs=shots))
            while qpu.task_status(task_id) not in final:
                time.sleep(poll_s)
            qpu.task_result(task_id)
            done.append((int(task_id), time.time()))
    finally:
        qpu.release(session_id)
    return done


def round_trips(url: str, done: list[tuple[int, float]]) -> tuple[list[float], list[float]]:
    """Per iteration after the first: (result → next RUNNING, created → started), seconds."""
    headers = {"Authorization": f"Bearer {make_token(SECRET, 0)}"}  # uid 0: sees every job
    trips: list[float] = []
    server: list[float] = []
    with httpx.Client(base_url=url, headers=headers) as http:
        for (_, result_at), (job_id, _) in itertools.pairwise(done):
            job = job_document(http, job_id)
            started = _parse(job["started_at"])
            trips.append(started - result_at)
            server.append(started - _parse(job["created_at"]))
    return trips, server


def job_document(http: httpx.Client, job_id: int) -> dict[str, Any]:
    """``GET /jobs/{id}``, waited out while the daemon answers 503 (a busy machine)."""
    for _ in range(20):
        response = http.get(f"/jobs/{job_id}")
        if response.status_code != 503:
            break
        time.sleep(float(response.headers.get("Retry-After", "1")))
    response.raise_for_status()
    return response.json()


def summary(values: list[float]) -> str:
    ms = [1000 * v for v in values]
    return (
        f"{statistics.median(ms):.1f} | {percentile(ms, 0.9):.1f} | {max(ms):.1f} | {min(ms):.1f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--shots", type=int, default=10)
    parser.add_argument("--qrmi-poll-ms", type=float, default=10.0)
    parser.add_argument("--no-qrmi", action="store_true", help="only qhpc_lab's client")
    args = parser.parse_args()
    sequence = one_shot_sequence()
    loops = {"qhpc_lab loop": lambda url: qhpc_loop(url, sequence, args.iterations, args.shots)}
    if not args.no_qrmi:
        poll_s = args.qrmi_poll_ms / 1000
        loops[f"QRMI pasqal-local ({args.qrmi_poll_ms:g} ms polling)"] = lambda url: qrmi_loop(
            url, sequence, args.iterations, args.shots, poll_s
        )
    trips: dict[str, list[float]] = {name: [] for name in loops}
    server: dict[str, list[float]] = {name: [] for name in loops}
    before = os.getloadavg()
    env = {"QHPC_AUTH": "token,munge", "QHPC_REQUIRE_SESSION": "false"}
    with tempfile.TemporaryDirectory() as state:
        process, url = start_daemon(Path(state), env=env)
        try:
            qhpc_loop(url, sequence, 3, args.shots)  # warm-up: validation, imports
            for round_ in range(args.rounds):
                order = list(loops) if round_ % 2 == 0 else list(reversed(loops))
                for name in order:
                    done = loops[name](url)
                    trip, side = round_trips(url, done)
                    trips[name] += trip
                    server[name] += side
        finally:
            process.terminate()
            process.wait(30)
    after = os.getloadavg()
    print(
        f"{args.rounds} rounds of {args.iterations} jobs of {args.shots} shots; "
        f"load average {before[0]:.2f} before, {after[0]:.2f} after\n"
    )
    print("| client | figure | p50 ms | p90 ms | max ms | min ms |")
    print("|---|---|---:|---:|---:|---:|")
    for name in loops:
        print(f"| {name} | result in kernel → next job RUNNING | {summary(trips[name])} |")
        print(f"| {name} | scheduler side (created → started) | {summary(server[name])} |")
    print(json.dumps({"trips": trips, "server": server}), file=sys.stderr)


if __name__ == "__main__":
    main()
