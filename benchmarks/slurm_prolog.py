"""The Slurm Prolog's read of its job against the cluster's queue length: ``squeue -j JOB -O``
(what the Prolog runs) against ``squeue --json`` (the structured form, which Slurm 22.05 fills
with every job of the cluster whatever ``--jobs`` says), each the median of 5 runs.

Run it as root beside a running dev cluster with jobs queued (docs/benchmarks.md):

    qhpc dev-cluster start --dir /tmp/bench-slurm
    export SLURM_CONF=/tmp/bench-slurm/etc/slurm.conf
    for i in $(seq 1000); do sbatch -H -o /dev/null --wrap true; done
    .venv/bin/python benchmarks/slurm_prolog.py
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import time
from collections.abc import Callable

from qhpc_lab.hpc import slurm

CONF = os.environ["SLURM_CONF"]


def median_s(run: Callable[[], object], n: int = 5) -> float:
    times = []
    for _ in range(n):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return sorted(times)[n // 2]


def main() -> None:
    listed = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True)
    jobs = listed.stdout.split()
    job = max(jobs, key=int)

    def as_json() -> object:
        command = ["/usr/bin/squeue", "--json", "--jobs", job]
        env = {"SLURM_CONF": CONF, "PATH": "/usr/bin"}
        out = subprocess.run(command, capture_output=True, text=True, env=env).stdout
        return next(j for j in json.loads(out)["jobs"] if str(j["job_id"]) == job)

    def as_prolog() -> object:
        return slurm.job_details(job, slurm.HookConfig(timeout_s=60), {"SLURM_CONF": CONF})

    prolog_s = median_s(as_prolog)
    json_s = median_s(as_json)
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(
        f"| {len(jobs)} | {prolog_s * 1000:.0f} | {json_s * 1000:.0f} | {rss:.0f} |"
        f"  (load average {os.getloadavg()[0]:.2f})"
    )


if __name__ == "__main__":
    main()
