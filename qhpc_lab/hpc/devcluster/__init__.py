"""Single-node dev clusters on this machine, wired to qhpc-lab's hooks: ``qhpc dev-cluster``.

A dev cluster starts munged (unless one answers already), per QPU the emulated device behind
Pasqal's QPU API (``qhpc qpu serve``) and a scheduler daemon with MUNGE auth driving it through
that API, as a site's scheduler drives its QPU, then the first-level scheduler's daemons without
systemd: slurmctld and slurmd (``slurm``, Debian's Slurm 22.05, 1 or 2 QPUs) or sge_qmaster and
sge_execd (``gridengine``, Debian's Grid Engine 8.1.9). ``packages`` installs what is missing
with apt-get, ``munged`` starts munged, ``processes`` keeps each daemon's pid file under
``{dir}/run`` and stops exactly those daemons, so a munged or a Slurm that was there before is
left alone; ``cluster`` is what both kinds share. Tests and developers use the same clusters
(tests/test_slurm.py, tests/test_slurm_two_qpus.py, tests/test_gridengine.py).
"""

from __future__ import annotations

import json
from pathlib import Path

from qhpc_lab.hpc.devcluster.cluster import DEFAULT_DIR, job_python
from qhpc_lab.hpc.devcluster.errors import DevClusterError
from qhpc_lab.hpc.devcluster.gridengine import GridEngineCluster
from qhpc_lab.hpc.devcluster.munged import munge_answers
from qhpc_lab.hpc.devcluster.packages import install_packages
from qhpc_lab.hpc.devcluster.slurm import DevCluster, slurm_conf

__all__ = [
    "DEFAULT_DIR",
    "DevCluster",
    "DevClusterError",
    "GridEngineCluster",
    "install_packages",
    "job_python",
    "load_cluster",
    "munge_answers",
    "slurm_conf",
]


def load_cluster(
    directory: str | Path, scheduler: str | None = None
) -> DevCluster | GridEngineCluster:
    """The cluster ``{directory}/cluster.json`` describes (defaults if none); ``scheduler``
    (slurm, gridengine) picks the kind when there is none yet."""
    state = Path(directory) / "cluster.json"
    values = json.loads(state.read_text()) if state.is_file() else {}
    kind = values.pop("scheduler", None) or scheduler or "slurm"
    if scheduler and kind != scheduler:
        raise DevClusterError(
            f"{directory} holds a {kind} dev cluster: pick another --dir for {scheduler}"
        )
    if kind == "gridengine":
        return GridEngineCluster(Path(directory), **values)
    return DevCluster(Path(directory), **values)
