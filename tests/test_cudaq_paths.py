"""CUDA-Q analog programs end to end: ``POST /jobs`` with the AHS object as ``sequence`` (as
Warden takes it), the same object as text through the real QRMI ``pasqal-local`` client (what
CUDA-Q's ``machine="qrmi"`` hands QRMI), CUDA-Q 0.16's own QRMI mode against the daemon, and
``submit()`` in the kernel. The conversion itself is tests/test_cudaq.py's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from qrmi import Payload, QuantumResource, ResourceType, TaskStatus

from qhpc_lab.client import Client
from qhpc_lab.programs.cudaq import analog_program
from tests.support.daemons import Daemon, daemon
from tests.support.munge import FreshCredential
from tests.support.polling import poll_until, wait_for_status

pytestmark = pytest.mark.filterwarnings(
    "ignore::DeprecationWarning", "ignore::UserWarning", "ignore::FutureWarning"
)

SHOTS = 40

# What a CUDA-Q user writes: two atoms 5 µm apart (SI units), a 400 ns Rabi drive.
HAMILTONIAN = """
from cudaq.dynamics import Schedule
from cudaq.operators import RydbergHamiltonian, ScalarOperator

hamiltonian = RydbergHamiltonian(
    atom_sites=[(0.0, 0.0), (5e-6, 0.0)],
    amplitude=ScalarOperator.const(6.0e6),
    phase=ScalarOperator.const(0.0),
    delta_global=ScalarOperator.const(0.0),
)
schedule = Schedule([0.0, 2e-7, 4e-7], ["t"])
"""


def cudaq_program() -> dict[str, Any]:
    """The AHS object ``cudaq.evolve(hamiltonian, schedule=schedule)`` sends on ``pasqal``."""
    scope: dict[str, Any] = {}
    exec(HAMILTONIAN, scope)
    return analog_program(scope["hamiltonian"], scope["schedule"])


def assert_counts(counts: dict[str, int], shots: int = SHOTS) -> None:
    assert sum(counts.values()) == shots
    assert all(len(bits) == 2 and set(bits) <= {"0", "1"} for bits in counts)


# -- (a) POST /jobs, as Warden takes it -------------------------------------------------------


@pytest.mark.anyio
async def test_post_jobs_takes_the_cudaq_object_as_sequence(api) -> None:
    program = cudaq_program()
    for sequence in (program, json.dumps(program)):  # the object, and its text
        response = await api.user.post("/jobs", json={"sequence": sequence, "shots": SHOTS})
        assert response.status_code == 200, response.text
        job = await wait_for_status(api.user, response.json()["id"])
        assert job["format"] == "pulser"
        assert_counts(json.loads(job["results"])["counter"])


# -- (b) QRMI -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def warden(tmp_path_factory: pytest.TempPathFactory, munged: None) -> Iterator[Daemon]:
    """The daemon as a QPU node runs it (MUNGE), for QRMI clients in a Slurm job."""
    with daemon(tmp_path_factory.mktemp("cudaq-qrmi"), "--auth", "munge") as handle:
        yield handle


def qrmi_environment(warden: Daemon, name: str, job_id: str) -> dict[str, str]:
    """A Slurm job's QRMI variables for resource ``name`` (the SPANK plugin's; CUDA-Q 0.16
    reads the resource list from ``SLURM_JOB_QPU_RESOURCES``, later QRMI from ``QRMI_*``)."""
    return {
        "SLURM_JOB_QPU_RESOURCES": name,
        "SLURM_JOB_QPU_TYPES": "pasqal-local",
        "QRMI_JOB_QPU_RESOURCES": name,
        "QRMI_JOB_QPU_TYPES": "pasqal-local",
        f"{name}_QRMI_WARDEN_URL": warden.url,
        "QRMI_JOB_UID": str(os.getuid()),
        "QRMI_JOB_ID": job_id,
    }


@pytest.mark.munge
def test_qrmi_carries_the_cudaq_object_as_cudaq_hands_it(
    monkeypatch: pytest.MonkeyPatch, warden: Daemon
) -> None:
    """CUDA-Q's QRMI mode starts a ``PasqalCloud`` payload whose ``sequence`` is the AHS
    object as JSON text; here the real ``qrmi`` wheel does the same on a ``pasqal-local``
    resource (cuda-quantum's PasqalExecutor.cpp / PasqalQrmiServerHelper.cpp)."""
    name = "cudaq_qrmi"
    for key, value in qrmi_environment(warden, name, "201").items():
        monkeypatch.setenv(key, value)
    qpu = QuantumResource(name, ResourceType.PasqalLocal)
    session_id = qpu.acquire()
    monkeypatch.setenv(f"{name}_QRMI_JOB_ACQUISITION_TOKEN", session_id)
    try:
        payload = Payload.PasqalCloud(sequence=json.dumps(cudaq_program()), job_runs=SHOTS)
        task_id = qpu.task_start(payload)
        final = (TaskStatus.Completed, TaskStatus.Failed, TaskStatus.Cancelled)
        status = poll_until(
            lambda: (s := qpu.task_status(task_id)) in final and s, f"task {task_id} to end"
        )
        assert status == TaskStatus.Completed, qpu.task_logs(task_id)
        assert_counts(json.loads(qpu.task_result(task_id).value)["counter"])
    finally:
        qpu.release(session_id)


CUDAQ_ON_QRMI = HAMILTONIAN + textwrap.dedent("""
    import cudaq

    cudaq.set_target("pasqal", machine="qrmi")
    result = cudaq.evolve(hamiltonian, schedule=schedule, shots_count=%d)
    print(dict(result.get_sampling_result().items()))
""")


@pytest.mark.munge
@pytest.mark.slow
def test_cudaq_0_16_qrmi_mode_reaches_only_pasqal_cloud(warden: Daemon, tmp_path: Path) -> None:
    """CUDA-Q 0.16.0.post1's ``machine="qrmi"`` cannot reach a Warden: it opens every
    resource as ``pasqal-cloud`` whatever ``QRMI_JOB_QPU_TYPES`` says, and the libqrmi it
    bundles (cuda_quantum_cu13.libs, not the ``qrmi`` wheel) has no ``pasqal-local`` at all.
    So the program stops before any request, asking for Pasqal Cloud credentials, and the
    daemon sees no job. cuda-quantum's main branch reads QRMI_JOB_QPU_TYPES and opens
    ``pasqal-local`` (QrmiUtils.h); with a release that does, this test must assert counts
    (the payload it will send is test_qrmi_carries_the_cudaq_object_as_cudaq_hands_it's)."""
    name = "cudaq_native"
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("QRMI_", "SLURM_")) and "_QRMI_" not in key
    }
    env.update(qrmi_environment(warden, name, "202"))
    env["HOME"] = str(tmp_path)  # no ~/.pasqal/config of the user's
    env["CUDAQ_QRMI_TIMEOUT_SEC"] = "60"
    run = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", CUDAQ_ON_QRMI % SHOTS],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert run.returncode != 0, run.stdout
    assert f"{name}_QRMI_PASQAL_CLOUD_PROJECT_ID is not set" in run.stderr, run.stderr[-2000:]
    with httpx.Client(base_url=warden.url, auth=FreshCredential()) as admin:
        assert all(job["slurm_job_id"] != "202" for job in admin.get("/jobs").json())


# -- (c) submit() in the kernel -------------------------------------------------------------


def test_submit_runs_a_cudaq_program_on_the_emulator(tmp_path: Path) -> None:
    empty = tmp_path / "targets.toml"
    empty.write_text("")
    client = Client(environ={"HOME": str(tmp_path), "QHPC_TARGETS_FILE": str(empty)})
    try:
        result = client.submit(cudaq_program(), shots=SHOTS, target="emulator").result(120)
        assert_counts(result.counts)
    finally:
        client.close()
