"""The notebook-run tests' user and notebooks: ``qhpc`` as a real user on a dev cluster, a
notebook with a parameters cell, a ``%%qpu`` cell and, if asked, a failing cell."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import httpx
import nbformat

from qhpc_lab.hpc.devcluster import DevCluster, GridEngineCluster
from tests.support.clusters import RUNUSER, SchedulerView, User

SEQUENCE = """\
from pulser import Pulse, Register, Sequence
from pulser.devices import AnalogDevice

register = Register.from_coordinates([(-3.0, 0.0), (3.0, 0.0)], prefix="q")
sequence = Sequence(register, AnalogDevice)
sequence.declare_channel("g", "rydberg_global")
sequence.add(Pulse.ConstantPulse(200, omega, 0.0, 0.0), "g")
sequence.measure("ground-rydberg")"""


FAILING_CELL = 5
"""The cell ``write_notebook(..., fail=True)`` fails in, counted from 1 (markdown included)."""


def write_notebook(path: Path, kernel: str = "python3-qpu", fail: bool = False) -> Path:
    """A notebook: a markdown title, a parameters cell (``omega = 2.0``, the pulse's
    amplitude, and ``label = 'dev'``), the sequence, a ``%%qpu`` cell, with ``fail`` a
    division by zero, and a cell printing what ran."""
    cells = [
        nbformat.v4.new_markdown_cell("# A production run"),
        nbformat.v4.new_code_cell("omega = 2.0\nlabel = 'dev'"),
        nbformat.v4.new_code_cell(SEQUENCE),
        nbformat.v4.new_code_cell("%%qpu --shots 20 -o result\nsequence"),
        *([nbformat.v4.new_code_cell("ratio = 1 / 0")] if fail else []),
        nbformat.v4.new_code_cell("print(label, result.shots, result.job_id)"),
    ]
    cells[1].metadata["tags"] = ["parameters"]
    notebook = nbformat.v4.new_notebook(cells=cells)
    notebook.metadata["kernelspec"] = {"name": kernel, "display_name": kernel, "language": "python"}
    nbformat.write(notebook, path)
    path.chmod(0o644)
    return path


@dataclass
class RunsUser(SchedulerView):
    """A user of a dev cluster (Slurm or Grid Engine) who runs notebooks with ``qhpc``."""

    cluster: DevCluster | GridEngineCluster
    user: User
    admin: httpx.Client
    """Root's MUNGE identity: an administrator of the scheduler."""

    def qhpc(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``qhpc ARGS`` as the user, in their home, with a clean environment that reaches
        the cluster."""
        return subprocess.run(
            [RUNUSER, "-u", self.user.name, "--", self.cluster.python, "-m", "qhpc_lab.cli", *args],
            env={
                "PATH": "/usr/local/bin:/usr/bin:/bin",
                "LANG": "C.UTF-8",
                "HOME": str(self.user.home),
                **self.cluster.environ,
            },
            cwd=self.user.home,
            capture_output=True,
            text=True,
            timeout=300,
        )

    def notebook(self, name: str, kernel: str = "python3-qpu", fail: bool = False) -> Path:
        """:func:`write_notebook` in the user's home, theirs."""
        path = write_notebook(self.user.home / name, kernel, fail)
        subprocess.run(["chown", self.user.name, str(path)], check=True)
        return path

    def status(self, run_id: str) -> str:
        """What ``qhpc runs status ID`` prints."""
        done = self.qhpc("runs", "status", run_id)
        assert done.returncode == 0, done.stderr
        return done.stdout


def submitted(done: subprocess.CompletedProcess[str]) -> tuple[str, str]:
    """The run id and batch job id ``qhpc run`` printed."""
    found = re.search(r"as (?:slurm|gridengine) job (\d+) \(run (notebook-\S+)\)", done.stdout)
    assert found, done.stdout + done.stderr
    return found[2], found[1]


def executed_facts(done: subprocess.CompletedProcess[str]) -> tuple[list[str], dict]:
    """The executed notebook ``qhpc run --wait`` named: its cells' text outputs and its
    ``metadata.qhpc``."""
    path = Path(re.findall(r"executed notebook: (\S+)", done.stdout)[-1])
    result = nbformat.read(path, as_version=4)
    texts = ["".join(o.get("text", "")) for c in result.cells for o in c.get("outputs", [])]
    return texts, result.metadata["qhpc"]
