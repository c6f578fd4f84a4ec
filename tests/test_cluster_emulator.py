"""The cluster emulator target on the real Slurm dev cluster (Debian's Slurm 22.05, MUNGE).

A real unprivileged user's kernel (a fresh process per call, so every call after the first
is a kernel after a restart) submits emulations through the targets file a site would write:
a program too large for the kernel (the site's threshold set low, so that a 4-atom program
already is: seconds of the cluster's time, not minutes) goes to the cluster with its
announcement and comes back with its engine (the site's, emu-mps), approximation and node;
a job waiting on its start time shows Slurm's reason and start estimate, and cancel ends the
batch job; a malformed program never becomes a batch job; a batch job stopped at its time
limit reaches the user as one line naming the limit.
The over-time job is submitted first and runs beside the others (one minute of Slurm's).
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Callable, Iterator

import pytest

from qhpc_lab.hpc.devcluster import DevCluster
from tests.support.cluster_emulation import Kernel, chain, squeue, user_kernel
from tests.support.clusters import User, add_user, remove_user

pytestmark = [pytest.mark.munge, pytest.mark.slow]

TARGETS = """\
[targets.cluster]
type = "cluster-emulator"
scheduler = "slurm"
python = "{python}"
cpus = 1
engine = "emu-mps"
poll_s = 1
fallback_above_s = 0.1

[targets.cluster-later]
type = "cluster-emulator"
python = "{python}"
extra = ["--begin=now+1hour"]

[targets.cluster-nowhere]
type = "cluster-emulator"
python = "{python}"
partition = "nosuch"

[targets.cluster-short]
type = "cluster-emulator"
python = "{python}"
cpus = 1
time_limit_s = 60
poll_s = 1
"""
"""``cluster`` takes what the kernel cannot (past 0.1 s of planned emulation, to keep the test
short: any program is past it) and runs emu-mps; ``cluster-later``'s jobs wait an hour to start;
``cluster-nowhere`` names a partition Slurm does not have; ``cluster-short`` gives one minute.
Those the tests wait on ask Slurm every second."""


@pytest.fixture(scope="module")
def cluster(batch_slurm_cluster: DevCluster) -> DevCluster:
    """The session's batch-work cluster (conftest), shared with the other batch modules."""
    return batch_slurm_cluster


@pytest.fixture(scope="module")
def user(cluster: DevCluster) -> Iterator[User]:
    added = add_user(cluster)
    try:
        yield added
    finally:
        remove_user(cluster, added)


@pytest.fixture(scope="module")
def kernel(cluster: DevCluster, user: User) -> Kernel:
    return user_kernel(cluster, user, TARGETS.format(python=cluster.python))


@pytest.fixture(scope="module")
def over_time(kernel: Kernel) -> str:
    """A 60-atom, 4 µs emulation (minutes on these cores) on ``cluster-short``'s one minute,
    submitted before the other tests run so that its minute passes beside them; its id."""
    program = kernel.program("long", chain(60, 4000, 10))
    submitted = kernel.call("submit", program, "cluster-short").last
    assert submitted["status"] in ("PENDING", "RUNNING"), submitted
    return str(submitted["id"])


def test_a_program_the_kernel_cannot_hold_runs_on_the_cluster(
    kernel: Kernel, over_time: str, report: Callable[[str], None]
) -> None:
    """No QPU in sight and a program past the kernel's limit (the site's ``fallback_above_s``:
    its in-kernel plan, QuTiP on 4 atoms, is over it): the fallback sends it to the cluster
    emulator, says so with the plan and the limit, and the result names the target's engine,
    its approximation and the node it ran on; a restarted kernel reads the same job back from
    the ledger. (Which engine a large program gets is test_engines'.)"""
    program = kernel.program("chain4", chain(4, 100, 20))
    answer = kernel.call("submit", program, "-", "wait")
    assert "it runs as a batch job on cluster emulator 'cluster'" in answer.stderr, answer.stderr
    assert "(qutip, 4 atoms, 100 ns: about 0 s" in answer.stderr, answer.stderr
    assert "is over this kernel's emulation limit" in answer.stderr, answer.stderr
    submitted, done = answer.lines if len(answer.lines) == 2 else (answer.lines, kernel.outputs())
    assert submitted["target"] == "cluster" and submitted["status"] in ("PENDING", "RUNNING")
    assert done["status"] == "DONE", (done, kernel.outputs())
    assert sum(done["counts"].values()) == 20
    assert done["engine"] == "emu-mps" and done["approximation"].startswith("χ ≤ 32"), done
    assert f"ran on {socket.gethostname()}, cpu" in done["detail"], done
    assert "engine emu-mps (approximate: χ ≤ 32" in done["result"], done["result"]
    again = kernel.call("state", done["id"], "cluster").last
    assert (again["status"], again["counts"], again["engine"]) == (
        "DONE",
        done["counts"],
        "emu-mps",
    )
    listed = [line["id"] for line in kernel.call("jobs", "cluster").lines]
    assert done["id"] in listed
    entry = json.loads((kernel.ledger / done["id"] / "entry.json").read_text())
    assert (entry["kind"], entry["system"]) == ("emulation", "slurm")
    report(f"4-atom chain on the cluster: {done['detail']}; {done['approximation']}")


def test_a_waiting_job_shows_its_reason_and_cancel_ends_it(
    kernel: Kernel, cluster: DevCluster, user: User, report: Callable[[str], None]
) -> None:
    program = kernel.program("tiny", chain(2, 100, 10))
    waiting = kernel.call("submit", program, "cluster-later").last
    assert waiting["status"] == "PENDING", waiting
    assert re.search(r"Slurm job \d+ waits \(BeginTime\), expected to start at ", waiting["detail"])
    assert waiting["detail"] in waiting["text"]  # what %qpu jobs prints
    batch_id = re.search(r"Slurm job (\d+)", waiting["detail"]).group(1)
    assert batch_id in squeue(cluster, user)
    cancelled = kernel.call("cancel", waiting["id"], "cluster-later").last
    assert cancelled["status"] == "CANCELED", cancelled
    assert batch_id not in squeue(cluster, user)
    report(f"pending: {waiting['detail']}; cancelled")


def test_a_malformed_program_or_a_refused_submission_leaves_no_batch_job(
    kernel: Kernel, cluster: DevCluster, user: User
) -> None:
    """A program the engines cannot read is refused before anything is submitted; a
    submission Slurm refuses (no such partition) is one line in Slurm's words. Neither leaves
    a batch job or a folder in the ledger."""
    before, queued = kernel.folders(), squeue(cluster, user)
    broken = {"format": "pulser", "body": json.dumps({"version": "1", "register": 5}), "shots": 5}
    refused = kernel.call("submit", kernel.program("broken", broken), "cluster").last
    assert refused["type"] == "RefusedError", refused
    assert refused["refused"].startswith("the program cannot be emulated: body is not a valid")
    tiny = kernel.program("tiny", chain(2, 100, 10))
    nowhere = kernel.call("submit", tiny, "cluster-nowhere").last
    assert nowhere["type"] == "RefusedError", nowhere
    refusal = nowhere["refused"]
    assert re.fullmatch(r"Slurm refused the emulation: .*[Ii]nvalid partition.*", refusal)
    assert (kernel.folders(), squeue(cluster, user)) == (before, queued)


def test_the_time_limit_reaches_the_user_in_one_line(
    kernel: Kernel, over_time: str, report: Callable[[str], None]
) -> None:
    ended = kernel.call("wait", over_time, "cluster-short").last
    assert ended["status"] == "ERROR", ended
    error = ended["error"]
    assert re.fullmatch(r"Slurm job \d+ was stopped at its time limit 60 s: .*", error), error
    report(f"over time: {error}")
