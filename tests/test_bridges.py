"""SDK front-ends and SDK objects submitted as they are: Pulser's QPUBackend over a
QHPCConnection, Qiskit's SamplerV2, Qadence circuits — each through the real scheduler (the test
device) or the in-kernel emulator. The conversions themselves: tests/test_programs.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from qhpc_lab.client import Client, TargetError
from qhpc_lab.scheduler.auth import make_token
from tests.support.daemons import Daemon, daemon
from tests.support.identities import SECRET, USER
from tests.support.programs import analog_qiskit_circuit

# Qadence and Pulser warn about their own deprecations on every conversion.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")


@pytest.fixture(scope="module")
def scheduler(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    with daemon(tmp_path_factory.mktemp("scheduler")) as handle:
        yield handle


@pytest.fixture(scope="module")
def lab(scheduler: Daemon, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    """A client whose default target is the scheduler, as in a Slurm job with a QPU share."""
    env = {
        "HOME": str(tmp_path_factory.mktemp("home")),
        "QRMI_JOB_QPU_RESOURCES": "lab",
        "QRMI_JOB_QPU_TYPES": "pasqal-local",
        "lab_QRMI_WARDEN_URL": scheduler.url,
        "QHPC_TOKEN": make_token(SECRET, USER),
    }
    client = Client(environ=env)
    yield client
    client.close()


# -- Pulser ---------------------------------------------------------------------------------


def test_pulser_qpu_backend_runs_through_the_scheduler(lab):
    from pulser import Pulse, QPUBackend, Register, Sequence
    from pulser.backend.remote import BatchStatus

    from qhpc_lab.bridges.pulser import QHPCConnection

    connection = QHPCConnection(job_class="development", client=lab)
    device = connection.fetch_available_devices()["QHPC-Test"]
    register = Register.from_coordinates([(0, 0), (8, 0)], prefix="q")
    sequence = Sequence(register.with_automatic_layout(device), device)
    sequence.declare_channel("g", "rydberg_global")
    amplitude = sequence.declare_variable("amplitude")
    sequence.add(Pulse.ConstantPulse(200, amplitude, 0.0, 0.0), "g")

    params = [
        {"runs": 40, "variables": {"amplitude": 2.0}},
        {"runs": 25, "variables": {"amplitude": 0.0}},
    ]
    results = QPUBackend(sequence, connection=connection).run(job_params=params, wait=True)
    assert results.get_batch_status() == BatchStatus.DONE
    first, second = results.results
    assert sum(first.final_bitstrings.values()) == 40
    assert sum(second.final_bitstrings.values()) == 25
    assert set(second.final_bitstrings) <= {"00", "01", "10"}  # no drive: ground, but readout
    jobs = connection.jobs(results.batch_id)
    assert [job.target for job in jobs] == ["lab", "lab"] and results.job_ids == [
        j.id for j in jobs
    ]


def test_pulser_connection_without_waiting_and_device_mismatch(lab):
    from pulser import Pulse, QPUBackend, Register, Sequence
    from pulser.devices import AnalogDevice

    from qhpc_lab.bridges.pulser import QHPCConnection

    connection = QHPCConnection(client=lab)
    device = connection.fetch_available_devices()["QHPC-Test"]
    sequence = Sequence(
        Register.from_coordinates([(0, 0), (8, 0)], prefix="q").with_automatic_layout(device),
        device,
    )
    sequence.declare_channel("g", "rydberg_global")
    sequence.add(Pulse.ConstantPulse(100, 1.0, 0.0, 0.0), "g")
    results = QPUBackend(sequence, connection=connection).run(job_params=[{"runs": 30}])
    (job,) = connection.jobs(results.batch_id)
    assert job.result(60).shots == 30
    assert sum(results.results[0].final_bitstrings.values()) == 30

    register = Register.from_coordinates([(0, 0), (8, 0)], prefix="q")
    elsewhere = Sequence(register.with_automatic_layout(AnalogDevice), AnalogDevice)
    elsewhere.declare_channel("g", "rydberg_global")
    elsewhere.add(Pulse.ConstantPulse(100, 1.0, 0.0, 0.0), "g")
    with pytest.raises(ValueError, match="does not match any of the devices"):
        QPUBackend(elsewhere, connection=connection).run(job_params=[{"runs": 10}])


# -- Qiskit ---------------------------------------------------------------------------------


def test_sampler_runs_gate_circuits_on_the_emulator(lab):
    from qiskit import ClassicalRegister, QuantumCircuit, QuantumRegister
    from qiskit.circuit import Parameter
    from qiskit.providers import JobStatus

    from qhpc_lab.bridges.qiskit import Sampler

    sampler = Sampler(target="emulator", client=lab)
    qubits, low, high = (
        QuantumRegister(2),
        ClassicalRegister(1, "low"),
        ClassicalRegister(1, "high"),
    )
    bell = QuantumCircuit(qubits, low, high)
    bell.h(0)
    bell.cx(0, 1)
    bell.x(1)  # low and high always differ
    bell.measure(0, low[0])
    bell.measure(1, high[0])
    theta = Parameter("theta")
    rotation = QuantumCircuit(1)
    rotation.ry(theta, 0)  # no measurement: measured into "meas" on the way

    job = sampler.run([bell, (rotation, [[0.0], [3.141592653589793]])], shots=64)
    first, second = job.result()
    assert job.status() == JobStatus.DONE and job.done() and job.in_final_state()
    low_counts, high_counts = first.data.low.get_counts(), first.data.high.get_counts()
    assert sum(low_counts.values()) == sum(high_counts.values()) == 64
    pairs = zip(first.data.low.get_bitstrings(), first.data.high.get_bitstrings(), strict=True)
    assert all(lo != hi for lo, hi in pairs)
    assert second.data.meas.shape == (2,)
    assert second.data.meas[0].get_counts() == {"0": 64}
    assert second.data.meas[1].get_counts() == {"1": 64}
    assert second.metadata["shots"] == 64 and len(second.metadata["jobs"]) == 2


def test_analog_qiskit_circuits_run_as_pulser_on_the_qpu(lab):
    from qhpc_lab.bridges.qiskit import Sampler

    circuit = analog_qiskit_circuit()
    result = Sampler(client=lab).run([circuit], shots=50).result()[0]
    assert result.data.meas.num_bits == 2 and sum(result.data.meas.get_counts().values()) == 50
    assert result.metadata["jobs"][0].startswith("lab:")
    job = lab.submit(circuit, shots=20, job_class="test")  # plain submit takes them too
    assert job.result(60).device == "QHPC-Test" and job.result().shots == 20


def test_sampler_job_cancels_its_jobs(lab):
    from qiskit.providers import JobStatus

    from qhpc_lab.bridges.qiskit import Sampler

    job = Sampler(client=lab).run([analog_qiskit_circuit()], shots=9000)
    job.cancel()
    assert job.status() == JobStatus.CANCELLED and job.cancelled() and job.in_final_state()


# -- Qadence --------------------------------------------------------------------------------


def test_qadence_analog_circuits_run_as_pulser_on_the_qpu(lab):
    from qadence import AnalogInteraction, AnalogRX, QuantumCircuit, Register, chain

    circuit = QuantumCircuit(
        Register.line(2, spacing=8.0), chain(AnalogRX(3.14159), AnalogInteraction(500))
    )
    job = lab.submit(circuit, shots=60)
    result = job.result(60)
    assert job.target == "lab" and result.device == "QHPC-Test" and result.shots == 60


def test_qadence_digital_circuits_run_natively_on_the_emulator_only(lab):
    from qadence import CNOT, RX, FeatureParameter, H, QuantumCircuit, chain

    circuit = QuantumCircuit(2, chain(H(0), CNOT(0, 1), RX(1, FeatureParameter("x"))))
    result = lab.submit(circuit, shots=80, target="emulator", x=0.0).result(60)
    assert result.device == "qadence (pyqtorch)" and result.shots == 80
    assert set(result.counts) <= {"00", "11"}  # a Bell pair; RX(0) does nothing
    flipped = lab.submit(circuit, shots=40, target="emulator", x=3.141592653589793).result(60)
    assert set(flipped.counts) <= {"01", "10"}
    with pytest.raises(TargetError, match=r"in-kernel emulator only.*target='emulator'"):
        lab.submit(circuit, shots=10, x=0.0)


def test_objects_no_bridge_knows_are_refused(lab, tmp_path: Path):
    from qhpc_lab.programs import ProgramError

    with pytest.raises(ProgramError, match="cannot turn a dict into a program"):
        lab.submit({"not": "a program"}, target="emulator")
