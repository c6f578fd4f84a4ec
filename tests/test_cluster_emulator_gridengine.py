"""The cluster emulator target on the real Grid Engine dev cluster (Debian's 8.1.9, MUNGE).

The Slurm module (tests/test_cluster_emulator.py) covers the target's behaviour; this one
shows the Grid Engine side of the seam carries it too, in one scenario: a held job waits with
Grid Engine's reason and cancel removes it, a small program comes back done with the node
it ran on, and a restarted kernel lists both from the ledger.
"""

from __future__ import annotations

import re
import socket
import subprocess
from collections.abc import Callable, Iterator

import pytest

from qhpc_lab.hpc.devcluster import GridEngineCluster
from tests.support.cluster_emulation import Kernel, chain, user_kernel
from tests.support.clusters import User, add_user

pytestmark = [pytest.mark.munge, pytest.mark.slow]

TARGETS = """\
[targets.cluster]
type = "cluster-emulator"
scheduler = "gridengine"
python = "{python}"
poll_s = 2

[targets.cluster-held]
type = "cluster-emulator"
scheduler = "gridengine"
python = "{python}"
extra = ["-h"]
"""
"""``cluster-held``'s jobs are submitted on hold (``qsub -h``): they wait until released."""


@pytest.fixture(scope="module")
def cluster(batch_gridengine_cluster: GridEngineCluster) -> GridEngineCluster:
    """The session's batch-work cluster (conftest), shared with the other batch modules."""
    return batch_gridengine_cluster


@pytest.fixture(scope="module")
def user(cluster: GridEngineCluster) -> Iterator[User]:
    added = add_user(cluster)
    try:
        yield added
    finally:
        cluster.qcommand("qdel", "-u", added.name, check=False)
        subprocess.run(["userdel", "-r", "-f", added.name], capture_output=True, timeout=30)


@pytest.fixture(scope="module")
def kernel(cluster: GridEngineCluster, user: User) -> Kernel:
    return user_kernel(cluster, user, TARGETS.format(python=cluster.python))


def test_grid_engine_runs_holds_and_cancels_cluster_emulations(
    kernel: Kernel, cluster: GridEngineCluster, report: Callable[[str], None]
) -> None:
    program = kernel.program("tiny", chain(2, 100, 10))
    held = kernel.call("submit", program, "cluster-held").last
    assert held["status"] == "PENDING", held
    assert re.match(r"Grid Engine job (\d+) waits \(.*hqw\)", held["detail"]), held
    batch_id = re.match(r"Grid Engine job (\d+)", held["detail"]).group(1)
    cancelled = kernel.call("cancel", held["id"], "cluster-held").last
    assert cancelled["status"] == "CANCELED", cancelled
    assert cluster.qcommand("qstat", "-j", batch_id, check=False).returncode != 0

    answer = kernel.call("submit", program, "cluster", "wait")
    done = answer.last
    assert done["status"] == "DONE", (done, kernel.outputs())
    assert sum(done["counts"].values()) == 10 and done["engine"] == "qutip"
    assert done["approximation"] is None and "engine qutip (exact)" in done["result"]
    assert f"ran on {socket.gethostname()}, cpu" in done["detail"], done

    listed = {line["id"]: line["status"] for line in kernel.call("jobs", "cluster-held").lines}
    assert listed == {held["id"]: "CANCELED"}
    report(f"Grid Engine: {held['detail']}; cancelled; {done['detail']}")
