"""The cluster emulator's batch overhead: a small program emulated as a Slurm batch job
against the same program emulated in this process, on the Slurm dev cluster.

Starts a dev cluster (root: its daemons) in a fresh directory, then per round: the program
through ``qhpc_lab.emulators.emulate`` here (warm: SDKs imported once before the rounds), and
through a ``cluster-emulator`` target (``Client.submit``; ``poll_s`` 0.1 so that the states
are seen when they change): the time from submit to the first RUNNING state, and from submit
to the result. What the batch job adds is Slurm's scheduling, a fresh Python on the node
importing the SDKs, and the result's way back through the ledger.

    .venv/bin/python benchmarks/cluster_emulator.py [--atoms 8] [--duration-ns 1000]
        [--shots 100] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from qhpc_lab import emulators
from qhpc_lab.client import Client
from qhpc_lab.hpc.devcluster import DevCluster
from qhpc_lab.programs import Program
from tests.support.cluster_emulation import chain
from tests.support.daemons import free_port


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--atoms", type=int, default=8)
    parser.add_argument("--duration-ns", type=int, default=1000)
    parser.add_argument("--shots", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    program = Program.from_dict(chain(args.atoms, args.duration_ns, args.shots))
    plan = emulators.plan(program)
    emulators.emulate(program)  # warm: the SDKs imported, as in a kernel that emulated before
    directory = Path(tempfile.mkdtemp(prefix="qhpc-bench-cluster-"))
    directory.chmod(0o755)
    ports = ("scheduler_port", "qpu_port", "slurmctld_port", "slurmd_port")
    cluster = DevCluster(directory, **{port: free_port() for port in ports})
    started = time.monotonic()
    cluster.start()
    print(f"dev cluster started in {time.monotonic() - started:.1f} s", flush=True)
    try:
        targets = directory / "targets.toml"
        targets.write_text(
            f'[targets.cluster]\ntype = "cluster-emulator"\nscheduler = "slurm"\n'
            f'python = "{cluster.python}"\ncpus = 2\npoll_s = 0.1\n'
            f'batch_dir = "{directory / "batch"}"\n'
        )
        environ = {**os.environ, **cluster.environ}
        client = Client(environ=environ, targets_file=targets)
        here: list[float] = []
        to_running: list[float] = []
        to_done: list[float] = []
        for round_ in range(args.rounds):
            began = time.perf_counter()
            emulators.emulate(program)
            here.append(time.perf_counter() - began)
            began = time.perf_counter()
            job = client.submit(program, target="cluster")
            running = None
            while not job.refresh().final:
                if running is None and job.state.status == "RUNNING":
                    running = time.perf_counter() - began
                time.sleep(0.05)
            done = time.perf_counter() - began
            assert job.state.status == "DONE", job.state
            to_running.append(running if running is not None else float("nan"))
            to_done.append(done)
            print(
                f"round {round_ + 1}: in process {here[-1]:.2f} s; batch job: RUNNING after "
                f"{to_running[-1]:.2f} s, result after {done:.2f} s ({job.state.detail})",
                flush=True,
            )
        median = statistics.median
        print(
            f"\n{args.atoms} atoms, {args.duration_ns} ns, {args.shots} shots ({plan.describe()})"
            f"\nmedian of {args.rounds}: in process {median(here):.2f} s; batch job: submit → "
            f"RUNNING {median(to_running):.2f} s, submit → result {median(to_done):.2f} s "
            f"(overhead {median(to_done) - median(here):.2f} s)"
            f"\nload average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} "
            f"{os.getloadavg()[2]:.2f}",
            flush=True,
        )
        client.close()
    finally:
        cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
