"""The tests' shared fixtures; what they are built on lives in :mod:`tests.support`."""

from __future__ import annotations

import gc
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from qhpc_lab.hpc.devcluster import DevCluster, GridEngineCluster
from tests.support import munge, postgres
from tests.support.clusters import dev_cluster, slurm_dev_cluster
from tests.support.daemons import Daemon, daemon
from tests.support.in_process import Clients, in_process, scheduler_config
from tests.support.programs import pulser_sequence_json
from tests.support.reporting import say

if TYPE_CHECKING:
    from IPython.core.interactiveshell import InteractiveShell


def pytest_collection_finish(session: pytest.Session) -> None:
    """What the test modules' imports built (Pulser, torch, Qiskit, CUDA-Q: half a million
    objects) lives to the end of the run: out of the cyclic collector's full passes, which
    walked it again and again in the suite's in-process schedulers."""
    gc.freeze()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def sequence_json() -> str:
    return pulser_sequence_json()


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Clients]:
    """In-process scheduler on the fast ``test`` profile, token auth, sessions optional."""
    async with in_process(scheduler_config(tmp_path)) as clients:
        yield clients


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Daemon]:
    with daemon(tmp_path) as handle:
        yield handle


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """SQLAlchemy URL of database ``qhpc`` on a PostgreSQL server private to this session."""
    with postgres.running_server() as url:
        yield url


@pytest.fixture
def fresh_postgres_url(postgres_url: str) -> Iterator[str]:
    """A new, empty database on the session's server for one test; dropped afterwards."""
    with postgres.fresh_database(postgres_url) as url:
        yield url


@pytest.fixture(scope="session")
def munged() -> Iterator[None]:
    """Ensure munged answers on the default socket for the whole session."""
    with munge.system_munged():
        yield


@pytest.fixture(scope="session")
def batch_slurm_cluster(munged: None, pytestconfig: pytest.Config) -> Iterator[DevCluster]:
    """One Slurm dev cluster for every module on the single-QPU cluster (hooks, JupyterHub,
    cluster emulations, notebook runs): each adds its own users and leaves the cluster as it
    found it (a drain resumed, the hooks' settings restored), so one start serves them all."""
    with slurm_dev_cluster(pytestconfig) as started:
        yield started


@pytest.fixture(scope="session")
def batch_gridengine_cluster(
    munged: None, pytestconfig: pytest.Config
) -> Iterator[GridEngineCluster]:
    """One Grid Engine dev cluster for every module on it, as :func:`batch_slurm_cluster`."""
    ports = ("scheduler_port", "qpu_port", "qmaster_port", "execd_port")
    with dev_cluster(GridEngineCluster, "Grid Engine", pytestconfig, ports) as started:
        yield started


@pytest.fixture
def private_munged() -> Iterator[munge.PrivateMunged]:
    """A started munged that the test may stop and restart; stopped and removed afterwards."""
    with munge.started_private_munged() as started:
        yield started


@pytest.fixture
def shell() -> Iterator[InteractiveShell]:
    """IPython's shell, as a notebook's kernel runs cells; the test's ``sequence`` removed."""
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    yield shell
    shell.user_ns.pop("sequence", None)


@pytest.fixture
def report(pytestconfig: pytest.Config) -> Callable[[str], None]:
    """``report(name)`` prints the scenario's duration so far."""
    started = time.monotonic()

    def emit(name: str) -> None:
        say(pytestconfig, f"\n  scenario [{name}]: {time.monotonic() - started:.1f} s")

    return emit
