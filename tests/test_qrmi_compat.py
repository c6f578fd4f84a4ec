"""The real QRMI ``pasqal-local`` client (and Pulser through it) against the real daemon.

This is the compatibility promise of docs/scheduler.md: the pinned ``qrmi`` wheel, unchanged, talks
to ``qhpc scheduler serve --auth munge`` with MUNGE credentials from the system munged.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator

import httpx
import pytest
import qrmi
from qrmi import (
    Payload,
    QRMIService,
    QuantumResource,
    ResourceStatusCode,
    ResourceType,
    TaskStatus,
)

from tests.support.daemons import Daemon, daemon
from tests.support.munge import FreshCredential

pytestmark = pytest.mark.munge

SHOTS = 40
LONG_SHOTS = 10_000  # 5 s on the test profile: long enough to stop while it runs
FINAL = (TaskStatus.Completed, TaskStatus.Failed, TaskStatus.Cancelled)


@pytest.fixture(scope="module")
def warden(tmp_path_factory: pytest.TempPathFactory, munged: None) -> Iterator[Daemon]:
    """One daemon for the module (startup imports Pulser); root (uid 0) is its admin."""
    with daemon(tmp_path_factory.mktemp("qrmi"), "--auth", "munge") as handle:
        yield handle


@pytest.fixture
def admin(warden: Daemon) -> Iterator[httpx.Client]:
    """The scheduler's own view, as root with MUNGE (to check what QRMI did)."""
    with httpx.Client(base_url=warden.url, auth=FreshCredential()) as client:
        yield client


def resource(
    monkeypatch: pytest.MonkeyPatch, warden: Daemon, name: str, job_id: str
) -> QuantumResource:
    """A pasqal-local resource set up as the QRMI Slurm plugin would (it reads env at init)."""
    monkeypatch.setenv(f"{name}_QRMI_WARDEN_URL", warden.url)
    monkeypatch.setenv("QRMI_JOB_UID", str(os.getuid()))
    monkeypatch.setenv("QRMI_JOB_ID", job_id)
    return QuantumResource(name, ResourceType.PasqalLocal)


def acquire(monkeypatch: pytest.MonkeyPatch, qpu: QuantumResource, name: str) -> str:
    """Open a session (the Slurm prolog's step) and hand its token to the job's environment."""
    session_id = qpu.acquire()
    monkeypatch.setenv(f"{name}_QRMI_JOB_ACQUISITION_TOKEN", session_id)
    return session_id


def wait(qpu: QuantumResource, task_id: str, until: tuple[TaskStatus, ...] = FINAL) -> TaskStatus:
    """Poll task_status (bounded: about a minute) until one of ``until``."""
    for _ in range(1200):
        status = qpu.task_status(task_id)
        if status in until:
            return status
        time.sleep(0.05)
    raise AssertionError(f"task {task_id} stuck in {status}")


def test_qrmi_job_lifecycle(
    monkeypatch: pytest.MonkeyPatch, warden: Daemon, admin: httpx.Client, sequence_json: str
) -> None:
    qpu = resource(monkeypatch, warden, "qpu_life", job_id="101")
    session_id = acquire(monkeypatch, qpu, "qpu_life")

    task_id = qpu.task_start(Payload.PasqalCloud(sequence=sequence_json, job_runs=SHOTS))
    assert wait(qpu, task_id) == TaskStatus.Completed
    counts = json.loads(qpu.task_result(task_id).value)["counter"]
    assert sum(counts.values()) == SHOTS
    assert "DONE" in qpu.task_logs(task_id)

    targets = json.loads(qpu.target().value)
    assert [t["device_type"] for t in targets] == ["QHPC-Test"]
    assert json.loads(targets[0]["specs"])["name"] == "QHPC-Test"

    job = admin.get(f"/jobs/{task_id}").json()
    assert (job["user_id"], job["session_id"], job["slurm_job_id"]) == ("0", session_id, "101")

    qpu.release(session_id)
    with pytest.raises(qrmi.QrmiError, match="revoked"):
        qpu.task_start(Payload.PasqalCloud(sequence=sequence_json, job_runs=SHOTS))
    session = next(s for s in admin.get("/sessions").json() if s["id"] == session_id)
    assert session["revoked_at"] is not None


def test_qrmi_task_stop_cancels_a_running_job(
    monkeypatch: pytest.MonkeyPatch, warden: Daemon, admin: httpx.Client, sequence_json: str
) -> None:
    qpu = resource(monkeypatch, warden, "qpu_stop", job_id="102")
    session_id = acquire(monkeypatch, qpu, "qpu_stop")
    task_id = qpu.task_start(Payload.PasqalCloud(sequence=sequence_json, job_runs=LONG_SHOTS))
    assert wait(qpu, task_id, (TaskStatus.Running, *FINAL)) == TaskStatus.Running

    qpu.task_stop(task_id)
    assert qpu.task_status(task_id) == TaskStatus.Cancelled
    job = admin.get(f"/jobs/{task_id}").json()
    assert job["status"] == "CANCELED" and job["shots_done"] < LONG_SHOTS
    with pytest.raises(qrmi.TaskNotReadyError):
        qpu.task_result(task_id)
    qpu.release(session_id)


def test_pulser_through_qrmi(
    monkeypatch: pytest.MonkeyPatch, warden: Daemon, admin: httpx.Client
) -> None:
    """What a user writes in a Slurm job: the connection finds the resource from the env."""
    import pulser
    import qrmi.pulser.connection as connection
    from pulser import Pulse, Sequence

    qpu = resource(monkeypatch, warden, "qpu_pulser", job_id="103")
    session_id = acquire(monkeypatch, qpu, "qpu_pulser")
    monkeypatch.setenv("QRMI_JOB_QPU_RESOURCES", "qpu_pulser")
    monkeypatch.setenv("QRMI_JOB_QPU_TYPES", "pasqal-local")
    monkeypatch.setattr(connection, "JOB_EXECUTION_POLLING_INTERVAL_S", 0.05)  # 1 s otherwise
    conn = connection.PulserQRMIConnection()

    device = conn.fetch_available_devices()["QHPC-Test"]
    register = device.pre_calibrated_layouts[0].define_register(21, 30, qubit_ids=["q0", "q1"])
    sequence = Sequence(register, device)
    sequence.declare_channel("g", "rydberg_global")
    sequence.add(Pulse.ConstantPulse(400, 6.0, 0.0, 0.0), "g")
    sequence.measure("ground-rydberg")

    results = pulser.QPUBackend(sequence, connection=conn).run(
        job_params=[{"runs": SHOTS}], wait=True
    )
    counts = results.results[0].final_bitstrings
    assert sum(counts.values()) == SHOTS
    assert all(len(bits) == 2 and set(bits) <= {"0", "1"} for bits in counts)
    (task_id,) = results.job_ids
    assert admin.get(f"/jobs/{task_id}").json()["session_id"] == session_id
    qpu.release(session_id)


def test_qrmi_sees_maintenance(
    monkeypatch: pytest.MonkeyPatch, warden: Daemon, admin: httpx.Client
) -> None:
    """POST /accessible false reaches QRMI: status offline, and discovery hides the resource."""
    qpu = resource(monkeypatch, warden, "qpu_maint", job_id="104")
    monkeypatch.setenv("QRMI_JOB_QPU_RESOURCES", "qpu_maint")
    monkeypatch.setenv("QRMI_JOB_QPU_TYPES", "pasqal-local")
    assert qpu.status().status == ResourceStatusCode.Online
    assert admin.post("/accessible", json={"is_accessible": False}).status_code == 200
    try:
        assert qpu.status().status == ResourceStatusCode.Offline
        assert QRMIService().resources() == []
    finally:
        admin.post("/accessible", json={"is_accessible": True}).raise_for_status()
    assert [r.resource_id() for r in QRMIService().resources()] == ["qpu_maint"]


def test_pulser_job_params_through_qrmi_are_one_job_each(
    monkeypatch: pytest.MonkeyPatch, warden: Daemon, admin: httpx.Client
) -> None:
    """QRMI's Pulser connection builds the sequence with each entry's variables itself and
    starts one task (one POST /jobs of a built sequence and its runs) per ``job_params`` entry:
    its Payload carries no variables, so a sweep through QRMI is that many plain jobs."""
    import pulser
    import qrmi.pulser.connection as connection
    from pulser import Pulse, Sequence

    qpu = resource(monkeypatch, warden, "qpu_sweep", job_id="105")
    session_id = acquire(monkeypatch, qpu, "qpu_sweep")
    monkeypatch.setenv("QRMI_JOB_QPU_RESOURCES", "qpu_sweep")
    monkeypatch.setenv("QRMI_JOB_QPU_TYPES", "pasqal-local")
    monkeypatch.setattr(connection, "JOB_EXECUTION_POLLING_INTERVAL_S", 0.05)
    conn = connection.PulserQRMIConnection()

    device = conn.fetch_available_devices()["QHPC-Test"]
    register = device.pre_calibrated_layouts[0].define_register(21, 30, qubit_ids=["q0", "q1"])
    sequence = Sequence(register, device)
    sequence.declare_channel("g", "rydberg_global")
    omega = sequence.declare_variable("omega")
    sequence.add(Pulse.ConstantPulse(400, omega, 0.0, 0.0), "g")
    sequence.measure("ground-rydberg")

    params = [{"runs": runs, "variables": {"omega": w}} for runs, w in ((10, 2.0), (20, 6.0))]
    results = pulser.QPUBackend(sequence, connection=conn).run(job_params=params, wait=True)
    assert [sum(r.final_bitstrings.values()) for r in results.results] == [10, 20]
    jobs = [admin.get(f"/jobs/{task_id}").json() for task_id in results.job_ids]
    assert [(j["shots"], j["sets"], j["session_id"]) for j in jobs] == [
        (10, None, session_id),
        (20, None, session_id),
    ]
    qpu.release(session_id)
