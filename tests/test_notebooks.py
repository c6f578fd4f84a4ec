"""The tutorial notebooks under nbval, against a real scheduler on the fast ``test`` profile,
seen the way a kernel inside a Slurm job with a QPU share sees it (its QRMI variables).

nbval runs in a subprocess (it is a pytest plugin with its own collection); its kernels inherit
the environment given here. Outputs that vary are not compared (``nbval-ignore-output`` cell
tags) or sanitised (``notebooks/sanitize.cfg``); the ones that matter — totals of counts,
states, bitstring sets — are.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from qhpc_lab.scheduler.auth import make_token
from tests.support.daemons import daemon
from tests.support.identities import SECRET, USER

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
ABSOLUTE_PATH = re.compile(r"(?<![\w.~$])/(?:home|root|tmp|work|usr|opt|var|srv)/")
DEVICE = re.compile(r"\bQHPC-\w+")
ON_TARGET = re.compile(r"\bjob \d+ on (\w+)")
LOCAL_JOB = re.compile(r"\bjob (\d+) on local\b")
RESOURCE = "qpu"
"""The QRMI resource name the QPU share gets in the job (the Slurm side chooses it)."""


def kernel_environment(scheduler_url: str, tmp_path: Path) -> dict[str, str]:
    """This process's environment without any QPU discovery of its own, plus a Slurm job's
    QRMI variables for the scheduler at ``scheduler_url``."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("QRMI_", "SLURM_", "QHPC_")) and "_QRMI_" not in key
    }
    empty = tmp_path / "targets.toml"  # no targets file of the user's
    empty.write_text("")
    env.update(
        {
            "QRMI_JOB_QPU_RESOURCES": RESOURCE,
            "QRMI_JOB_QPU_TYPES": "pasqal-local",
            f"{RESOURCE}_QRMI_WARDEN_URL": scheduler_url,
            "QRMI_JOB_ID": "4242",
            "QHPC_TOKEN": make_token(SECRET, USER),
            "QHPC_TARGETS_FILE": str(empty),
        }
    )
    return env


@pytest.mark.slow
def test_tutorial_notebooks_run_and_keep_their_outputs(tmp_path: Path) -> None:
    notebooks = sorted(NOTEBOOKS.glob("*.ipynb"))
    assert [n.name for n in notebooks] == [
        "01-getting-started.ipynb",
        "02-scheduler.ipynb",
        "03-qiskit-and-qadence.ipynb",
        "04-cudaq.ipynb",
        "05-production-run.ipynb",
        "06-batch-scripts-and-job-control.ipynb",
    ]
    with daemon(tmp_path) as scheduler:
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "--nbval",
                "--nbval-current-env",
                "--nbval-sanitize-with",
                str(NOTEBOOKS / "sanitize.cfg"),
                "--nbval-cell-timeout",
                "240",
                "-p",
                "no:cacheprovider",
                "-q",
                *map(str, notebooks),
            ],
            env=kernel_environment(scheduler.url, tmp_path),
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=900,
        )
    assert run.returncode == 0, run.stdout[-8000:] + run.stderr[-2000:]
    assert " passed" in run.stdout and "failed" not in run.stdout


def test_stored_outputs_come_from_one_make_lab_run() -> None:
    """What ``make tutorials`` stores (docs/client.md, "Tutorials"): every notebook's outputs as
    ``make lab`` shows them — its scheduler ``local``, the demo device, not the test one —
    with their execution counts, and without timings, widget state or absolute paths; the
    scheduler's job ids growing from one notebook to the next, as in one run."""
    failures = []
    last_job = 0  # the scheduler's job ids grow through the run, notebook after notebook
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        notebook = json.loads(path.read_text(encoding="utf-8"))
        outputs = json.dumps([cell.get("outputs", []) for cell in notebook["cells"]])
        ids = [int(n) for n in LOCAL_JOB.findall(outputs)]
        if ids and min(ids) <= last_job:
            failures.append(f"{path.name}: scheduler job {min(ids)} after job {last_job}")
        last_job = max(ids, default=last_job)
        if "widgets" in notebook["metadata"]:
            failures.append(f"{path.name}: widget state in its metadata")
        for number, cell in enumerate(notebook["cells"]):
            where = f"{path.name} cell {number}"
            if "execution" in cell["metadata"]:
                failures.append(f"{where}: execution timings")
            outputs = cell.get("outputs", [])
            if outputs and cell.get("execution_count") is None:
                failures.append(f"{where}: outputs without an execution_count")
            text = json.dumps(outputs, ensure_ascii=False)
            failures += [f"{where}: absolute path {p!r}" for p in ABSOLUTE_PATH.findall(text)]
            failures += [
                f"{where}: device {name}" for name in set(DEVICE.findall(text)) - {"QHPC-Demo"}
            ]
            failures += [
                f"{where}: target {name}"
                for name in set(ON_TARGET.findall(text)) - {"local", "emulator"}
            ]
            if "application/vnd.jupyter.widget-view+json" in text:
                failures.append(f"{where}: a live panel's view")
    assert not failures, "stored outputs not from one make tutorials run:\n" + "\n".join(failures)
