"""A notebook run's cost: from ``qhpc run`` to a RUNNING batch job and to its end, against the
same notebook executed with papermill inside an allocation (``srun -L qpu:1``, as a kernel of a
Lab in an allocation would run it: the interactive cost), rounds interleaved, medians of
``--rounds``.

The notebook is the tests' (tests/support/notebook_runs.py: a parameters cell, a two-atom
Pulser sequence, one 20-shot ``%%qpu`` cell). Both send its QPU job, class production, to the
dev cluster's scheduler through their job's session. Run it as root beside a running Slurm
dev cluster, for a user who has the QPU kernel (docs/benchmarks.md):

    qhpc dev-cluster start --dir /tmp/bench-slurm
    useradd -m bench && runuser -u bench -- /tmp/bench-slurm/python/bin/python -m qhpc_lab.cli \\
        kernels install --user
    .venv/bin/python benchmarks/notebook_run.py --dir /tmp/bench-slurm --user bench
"""

from __future__ import annotations

import argparse
import os
import pwd
import re
import statistics
import subprocess
import time
from pathlib import Path

from qhpc_lab.batch import BatchState, batch_system
from qhpc_lab.hpc.devcluster import load_cluster
from tests.support.notebook_runs import write_notebook


def as_user(user: str, home: Path, env: dict[str, str], *command: str) -> str:
    done = subprocess.run(
        ["/usr/sbin/runuser", "-u", user, "--", *command],
        env={"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": str(home), **env},
        cwd=home,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def batch_round(cluster: object, user: str, home: Path, notebook: Path) -> tuple[float, float]:
    """Seconds from ``qhpc run`` to RUNNING, and to the job's end."""
    environ = {**os.environ, **cluster.environ}  # type: ignore[attr-defined]
    slurm = batch_system("slurm", environ)
    started = time.perf_counter()
    printed = as_user(
        user,
        home,
        cluster.environ,
        cluster.python,
        "-m",
        "qhpc_lab.cli",
        "run",
        str(notebook),  # type: ignore[attr-defined]
    )
    job_id = re.search(r"slurm job (\d+)", printed)[1]  # type: ignore[index]
    running = None
    while True:
        state = slurm.job(job_id).state
        if running is None and state != BatchState.PENDING:
            running = time.perf_counter() - started
        if state in (BatchState.COMPLETED, BatchState.FAILED, BatchState.CANCELLED):
            assert state == BatchState.COMPLETED, state
            return running, time.perf_counter() - started
        time.sleep(0.1)


TIMED_PAPERMILL = """\
import sys, time
import papermill
started = time.perf_counter()
papermill.execute_notebook(sys.argv[1], sys.argv[2], progress_bar=False)
print(f"papermill {time.perf_counter() - started:.3f}")
"""


def direct_round(cluster: object, user: str, home: Path, notebook: Path) -> float:
    """Seconds papermill takes to execute the notebook where a kernel in an allocation holding
    ``qpu:1`` would (``srun -L qpu:1``; the allocation's own start is not counted): the
    interactive cost of the same notebook."""
    printed = as_user(
        user,
        home,
        {**cluster.environ, "QHPC_JOB_CLASS": "production"},  # type: ignore[attr-defined]
        "srun",
        "-L",
        "qpu:1",
        cluster.python,  # type: ignore[attr-defined]
        "-c",
        TIMED_PAPERMILL,
        str(notebook),
        str(home / "bench-direct.ipynb"),
    )
    return float(re.search(r"papermill (\S+)", printed)[1])  # type: ignore[index]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", required=True, help="the running Slurm dev cluster's folder")
    parser.add_argument("--user", required=True, help="a user with the QPU kernel installed")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    cluster = load_cluster(args.dir, "slurm")
    entry = pwd.getpwnam(args.user)
    home = Path(entry.pw_dir)
    notebook = write_notebook(home / "bench.ipynb")
    os.chown(notebook, entry.pw_uid, entry.pw_gid)
    running, ended, direct = [], [], []
    for _ in range(args.rounds):
        to_running, to_end = batch_round(cluster, args.user, home, notebook)
        running.append(to_running)
        ended.append(to_end)
        direct.append(direct_round(cluster, args.user, home, notebook))
    median = statistics.median

    def each(values: list[float]) -> str:
        return f"{median(values):.1f} s (each {', '.join(f'{v:.1f}' for v in values)})"

    print(
        f"qhpc run → RUNNING {each(running)}"
        f"\nqhpc run → batch job ended {each(ended)}"
        f"\npapermill in an allocation {each(direct)}"
        f"\noverhead of the batch run {median(ended) - median(direct):.1f} s"
        f"  (load average {os.getloadavg()[0]:.2f}, {args.rounds} rounds)"
    )


if __name__ == "__main__":
    main()
