"""The client: discovery, fallback, and jobs through the real scheduler, QRMI and the emulator."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import qhpc_lab
from qhpc_lab import munge
from qhpc_lab.client import (
    Client,
    JobError,
    RefusedError,
    Result,
    SchedulerTarget,
    TargetError,
    call,
    discover,
)
from qhpc_lab.programs import DeviceRuleViolation, Program
from qhpc_lab.qpu import DeviceProfile
from tests.support.client_env import lab_env, make_default
from tests.support.daemons import Daemon, daemon, free_port
from tests.support.identities import OTHER, USER, auth_header
from tests.support.polling import poll_until
from tests.support.programs import pulser_sequence_json
from tests.support.transport import RecordingTransport, unanswered


@pytest.fixture(scope="module")
def scheduler(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """One daemon for the module: starting one costs seconds, and jobs are per-test anyway."""
    with daemon(tmp_path_factory.mktemp("scheduler")) as handle:
        yield handle


@pytest.fixture(scope="module")
def program() -> Program:
    return Program("pulser", pulser_sequence_json(), 40)


@pytest.fixture(scope="module")
def crowded() -> Program:
    """17 atoms on a grid: valid Pulser, one atom more than the test device holds."""
    from pulser import Pulse, Register, Sequence
    from pulser.devices import AnalogDevice

    grid = [(6.0 * (i % 5) - 12, 6.0 * (i // 5) - 9) for i in range(17)]
    sequence = Sequence(Register.from_coordinates(grid, prefix="q"), AnalogDevice)
    sequence.declare_channel("g", "rydberg_global")
    sequence.add(Pulse.ConstantPulse(100, 1.0, 0.0, 0.0), "g")
    return Program("pulser", sequence.to_abstract_repr(), 10)


@pytest.fixture
def clients() -> Iterator[list[Client]]:
    """Clients made by a test, closed after it."""
    made: list[Client] = []
    yield made
    for client in made:
        client.close()


@pytest.fixture
def make_client(tmp_path: Path, clients: list[Client]):
    def make(
        env: dict[str, str] | None = None,
        file: str | None = None,
        transport: RecordingTransport | None = None,
    ) -> Client:
        environ = {"HOME": str(tmp_path), **(env or {})}
        if file is not None:
            path = tmp_path / "targets.toml"
            path.write_text(file)
            environ["QHPC_TARGETS_FILE"] = str(path)
        client = Client(environ=environ, transport=transport)
        clients.append(client)
        return client

    return make


# -- discovery ------------------------------------------------------------------------------


def test_qrmi_variables_with_delimiter_and_per_resource_settings():
    recorded = unanswered()
    found = discover(
        {
            "HOME": "/nowhere",
            "QRMI_LIST_DELIMITER": ";",
            "QRMI_JOB_QPU_RESOURCES": "lab; fresnel",
            "QRMI_JOB_QPU_TYPES": "pasqal-local;pasqal-cloud",
            "lab_QRMI_WARDEN_URL": "http://qpu.example:8006/",
            "lab_QRMI_JOB_ACQUISITION_TOKEN": "session-1",
            "lab_QRMI_JOB_TIMEOUT_SECONDS": "90",
            "QRMI_JOB_ID": "4242",
            "QRMI_JOB_UID": "1000",
        },
        transport=recorded,
    )
    assert list(found.targets) == ["lab", "fresnel", "emulator"]
    lab, fresnel = found.targets["lab"], found.targets["fresnel"]
    assert isinstance(lab, SchedulerTarget) and lab.url == "http://qpu.example:8006"
    call(lab.info())
    assert recorded.requests[0].headers["X-Warden-Session"] == "session-1"
    assert lab.job_timeout_s == 90 and "Slurm job 4242" in lab.origin
    assert fresnel.kind == "qrmi" and fresnel.type == "pasqal-cloud"
    assert found.default == "lab" and not found.problems


def test_slurm_variables_are_the_fallback_and_qrmi_ones_win():
    slurm = {"SLURM_JOB_QPU_RESOURCES": "old", "SLURM_JOB_QPU_TYPES": "pasqal-cloud"}
    assert list(discover({"HOME": "/nowhere", **slurm}).targets) == ["old", "emulator"]
    both = {**slurm, "QRMI_JOB_QPU_RESOURCES": "new", "QRMI_JOB_QPU_TYPES": "pasqal-cloud"}
    found = discover({"HOME": "/nowhere", **both})
    assert list(found.targets) == ["new", "emulator"]
    assert found.targets["new"].origin == "QRMI_JOB_QPU_RESOURCES"


def test_mismatched_resource_lists_are_reported_not_guessed():
    found = discover(
        {"HOME": "/nowhere", "QRMI_JOB_QPU_RESOURCES": "a,b", "QRMI_JOB_QPU_TYPES": "pasqal-cloud"}
    )
    assert list(found.targets) == ["emulator"] and found.default is None
    assert "2 resources" in found.problems[0]


def test_pasqal_local_without_url_is_left_to_qrmi_to_explain():
    found = discover(
        {"HOME": "/nowhere", "QRMI_JOB_QPU_RESOURCES": "x", "QRMI_JOB_QPU_TYPES": "pasqal-local"}
    )
    assert found.targets["x"].kind == "qrmi"


def test_targets_file(tmp_path: Path):
    (tmp_path / "lab.token").write_text("qhpc.token-from-file\n")
    (tmp_path / ".config/qhpc").mkdir(parents=True)
    (tmp_path / ".config/qhpc/targets.toml").write_text(
        f"""
default = "lab"

[targets.other]
type = "scheduler"
url = "http://other:8006"

[targets.lab]
type = "scheduler"
url = "http://lab:8006"
token_file = "{tmp_path}/lab.token"
auth = "token"
job_timeout_s = 60

[targets.fresnel-emu]
type = "emulator"
device = "fresnel-like"

[targets.cloud]
type = "pasqal-cloud"
config = {{ QRMI_PASQAL_CLOUD_PROJECT_ID = "p" }}

[targets.typo]
type = "scheduler"
ulr = "http://typo"
"""
    )
    recorded = unanswered()
    found = discover({"HOME": str(tmp_path), "QHPC_TOKEN": "qhpc.env-token"}, transport=recorded)
    assert list(found.targets) == ["other", "lab", "fresnel-emu", "cloud", "emulator"]
    assert found.default == "lab"
    lab, other = found.targets["lab"], found.targets["other"]
    assert lab.job_timeout_s == 60
    call(lab.info())
    call(other.info())
    tokens = [request.headers["Authorization"] for request in recorded.requests]
    assert tokens[0] == "Bearer qhpc.token-from-file"
    assert tokens[-1] == "Bearer qhpc.env-token"
    assert found.targets["cloud"]._config == {"QRMI_PASQAL_CLOUD_PROJECT_ID": "p"}
    assert found.problems == [
        f"{tmp_path}/.config/qhpc/targets.toml: target 'typo' ignored: "
        "unknown keys ulr for type 'scheduler'"
    ]


def test_targets_file_override_and_slurm_default_first(tmp_path: Path):
    path = tmp_path / "elsewhere.toml"
    path.write_text('[targets.lab]\ntype = "scheduler"\nurl = "http://lab"\n')
    env = {"HOME": "/nowhere", "QHPC_TARGETS_FILE": str(path)}
    assert discover(env).default == "lab"
    env |= {"QRMI_JOB_QPU_RESOURCES": "qpu", "QRMI_JOB_QPU_TYPES": "pasqal-cloud"}
    assert discover(env).default == "qpu"
    missing = discover({"HOME": "/nowhere", "QHPC_TARGETS_FILE": str(tmp_path / "none.toml")})
    assert missing.problems == [f"targets file {tmp_path / 'none.toml'} does not exist"]


# -- choosing a target ------------------------------------------------------------------------


def test_nothing_found_runs_on_the_emulator_announced_once(make_client, program, capsys):
    client = make_client()
    job = client.submit(program, shots=10)
    client.submit(program, shots=5).wait(60)
    announced = capsys.readouterr().err.strip().splitlines()
    assert announced == [
        f"qhpc: no QPU target found (looked at QRMI_JOB_QPU_RESOURCES and "
        f"{client._sources[1]}); programs run on the local emulator"
    ]
    assert job.target == "emulator"
    result = job.result(60)
    assert sum(result.counts.values()) == 10
    assert (result.engine, result.approximation) == ("qutip", None)  # an exact engine, said
    assert "engine qutip (exact)" in str(result)


def test_unreachable_default_falls_back_but_named_target_is_an_error(make_client, program, capsys):
    url = f"http://127.0.0.1:{free_port()}"
    client = make_client(lab_env(url))
    assert client.submit(program).target == "emulator"
    line = capsys.readouterr().err.strip()
    assert line.startswith(f"qhpc: target 'lab' is unreachable at {url}")
    assert line.endswith("programs run on the local emulator instead")
    with pytest.raises(TargetError, match="'lab' is unreachable"):
        client.submit(program, target="lab")
    with pytest.raises(TargetError, match="'lab' is unreachable"):
        client.use("lab")
    with pytest.raises(TargetError, match="no target named 'nope'; known: lab, emulator"):
        client.submit(program, target="nope")
    assert capsys.readouterr().err == ""


def test_broken_qrmi_resources_do_not_hide_the_others(make_client, scheduler, capsys):
    client = make_client(
        {
            **lab_env(scheduler.url),
            "QRMI_JOB_QPU_RESOURCES": "lab,ibm,fresnel",
            "QRMI_JOB_QPU_TYPES": "pasqal-local,ibm-quantum-compute-service,pasqal-cloud",
        }
    )
    infos = {info.name: info for info in client.targets()}
    assert infos["lab"].reachable and infos["lab"].selected
    assert infos["lab"].device == "QHPC-Test" and infos["lab"].state == "ONLINE"
    assert infos["emulator"].reachable and not infos["emulator"].selected
    assert not infos["ibm"].reachable and "ibm_QRMI_IBM_QCS_ENDPOINT" in infos["ibm"].message
    assert not infos["fresnel"].reachable and "'fresnel' (pasqal-cloud)" in infos["fresnel"].message
    assert "unreachable" in str(infos["ibm"]) and str(infos["lab"]).startswith("* lab")
    with pytest.raises(TargetError, match="ibm_QRMI_IBM_QCS_ENDPOINT"):
        client.use("ibm")
    assert capsys.readouterr().err == ""


# -- jobs through the scheduler ---------------------------------------------------------------


@pytest.fixture
def recorded() -> RecordingTransport:
    """What the ``lab`` client sends its scheduler."""
    return RecordingTransport()


@pytest.fixture
def lab(make_client, scheduler, recorded, monkeypatch) -> Client:
    """The process's default client, discovered from a Slurm job's variables."""
    client = make_client(lab_env(scheduler.url), transport=recorded)
    make_default(monkeypatch, client)
    return client


def test_submit_wait_result_through_the_scheduler(lab, program, scheduler):
    job = qhpc_lab.submit(program, shots=30, job_class="development", name="bell")
    assert job.target == "lab" and job.id.isdigit()
    assert job.wait(60) == "DONE"
    assert job.status == "DONE" and job.position is None and job.end_in_s is None
    result = job.result()
    assert sum(result.counts.values()) == result.shots == 30
    assert result.device == "QHPC-Test" and result.target == "lab"
    assert result.calibration_age_s is not None and result.calibration_age_s >= 0
    assert result.queued_s is not None and result.run_s is not None
    assert qhpc_lab.jobs() == [job] and qhpc_lab.job() is job
    with httpx.Client(base_url=scheduler.url, headers=auth_header(USER)) as http:
        view = http.get(f"/jobs/{job.id}").json()
    assert view["name"] == "bell" and view["job_class"] == "development"


def test_pulser_sequence_submitted_directly_and_found_again_by_id(lab, make_client, scheduler):
    from pulser import Pulse, Register, Sequence
    from pulser.devices import AnalogDevice

    sequence = Sequence(Register.from_coordinates([(0, 0), (7, 0)], prefix="q"), AnalogDevice)
    sequence.declare_channel("g", "rydberg_global")
    sequence.add(Pulse.ConstantPulse(100, 1.0, 0.0, 0.0), "g")
    job = qhpc_lab.submit(sequence, shots=8)
    again = make_client(lab_env(scheduler.url)).job(int(job.id))
    assert again.id == job.id and again.result(60).shots == 8


def test_programs_are_checked_against_the_device_before_queueing(lab, crowded):
    with pytest.raises(DeviceRuleViolation) as refused:
        qhpc_lab.submit(crowded)
    assert refused.value.rule == "max_atom_num"
    assert qhpc_lab.jobs() == []


def test_a_gate_circuit_is_refused_for_the_analog_qpu_before_any_request(lab, recorded):
    """The QPU runs pulser (/qpu/specs says so): a qasm3 program never leaves the kernel,
    and the message says where it runs instead; the emulator target runs it."""
    assert lab.target_info("lab").formats == ("pulser",)
    recorded.clear()
    gates = 'OPENQASM 3.0; include "stdgates.inc"; qubit[2] q; bit[2] c; h q[0]; c = measure q;'
    bell = Program("qasm3", gates, 5)
    with pytest.raises(RefusedError) as refused:
        qhpc_lab.submit(bell)
    assert refused.value.rule == "format" and refused.value.status is None
    assert str(refused.value) == (
        "target 'lab' (QHPC-Test) cannot run 'qasm3' programs (a gate circuit): it runs pulser "
        "programs only. Send it to the in-kernel emulator, "
        'qhpc_lab.submit(program, target="emulator"), '
        "or to a gate-based QPU's QRMI resource"
    )
    assert recorded.sent == [] and lab.jobs() == []
    assert lab.target_info("emulator").formats == ("pulser", "qasm3")
    assert qhpc_lab.submit(bell, target="emulator").result(60).shots == 5


def test_the_scheduler_refusal_names_its_rule(lab, program):
    with pytest.raises(RefusedError, match="unknown job_class 'urgent'") as refused:
        qhpc_lab.submit(program, job_class="urgent")
    assert refused.value.status == 422 and refused.value.rule == "job_class"


def test_cancel_through_the_scheduler(lab, program):
    long = qhpc_lab.submit(program, shots=10_000, job_class="production")
    queued = qhpc_lab.submit(program, shots=10_000, job_class="production")
    assert queued.position in (1, 2) and queued.end_in_s is not None
    assert queued.cancel() == "CANCELED" and long.cancel() == "CANCELED"
    with pytest.raises(JobError, match=f"job {queued.id} on lab ended CANCELED"):
        queued.result()


def test_wait_times_out_without_cancelling(lab, program):
    job = qhpc_lab.submit(program, shots=10_000)
    with pytest.raises(TimeoutError, match=f"job {job.id} on lab is still"):
        job.wait(timeout=0.2)
    assert job.cancel() == "CANCELED"


@pytest.mark.anyio
async def test_await_and_watch_a_scheduler_job(lab, program):
    job = lab.submit(program, shots=20)
    seen = [state.status async for state in job.watch()]
    assert seen[-1] == "DONE" and set(seen) <= {"PENDING", "RUNNING", "DONE"}
    result = await job
    assert result.shots == 20


@pytest.mark.anyio
async def test_watch_follows_the_queue_event_without_re_reading(lab, program, scheduler, recorded):
    """Another user's submission moves my waiting job: the queue event carries it at once,
    and nothing is read again (a GET per change per watched job was the old way)."""
    blocker = lab.submit(program, shots=8000)
    mine = lab.submit(program, shots=10)
    positions: list[int | None] = []
    async with contextlib.aclosing(mine.watch()) as states:
        async for state in states:
            positions.append(state.position)
            if positions == [1]:
                recorded.clear()  # the watch's own first read
                async with httpx.AsyncClient(base_url=scheduler.url) as other:
                    sent = time.monotonic()
                    ahead = await other.post(
                        "/jobs",
                        # long enough that my place stays 2 until the test sees it (a
                        # 10-shot job could run and end between two coalesced queue events)
                        json={
                            "sequence": pulser_sequence_json(),
                            "shots": 8000,
                            "job_class": "test",
                        },
                        headers=auth_header(OTHER),
                    )
                    ahead.raise_for_status()
            elif state.position == 2:
                moved_s = time.monotonic() - sent
                break
    assert positions[-1] == 2 and mine.state.position == 2
    assert moved_s < 2.0, moved_s  # generous: the old path was a 10 s device refresh
    assert recorded.sent == [], recorded.sent  # neither /jobs nor /device
    async with httpx.AsyncClient(base_url=scheduler.url) as other:
        await other.post(f"/jobs/{ahead.json()['id']}/cancel", headers=auth_header(OTHER))
    mine.cancel()
    blocker.cancel()


def test_submit_sends_one_idempotency_key_per_submission_and_reuses_it_on_retries(program):
    """A first try whose answer never arrives is sent again with the same key."""
    keys: list[str | None] = []
    job = b'{"id": 7, "status": "PENDING", "shots": 40}'

    def serve(listener) -> None:
        for attempt in range(3):
            connection, _ = listener.accept()
            with connection:
                head = b""
                while b"\r\n\r\n" not in head:
                    head += connection.recv(65536)
                lines = head.decode().split("\r\n")[1:]
                headers = {k.lower(): v for k, _, v in (x.partition(": ") for x in lines if x)}
                length = int(headers.get("content-length", 0))
                body = head.split(b"\r\n\r\n", 1)[1]
                while len(body) < length:
                    body += connection.recv(65536)
                keys.append(headers.get("idempotency-key"))
                if attempt == 0:
                    continue  # closed with no answer: the client must try again
                connection.sendall(
                    b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(job), job)
                )

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.settimeout(30)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        server = threading.Thread(target=serve, args=(listener,), daemon=True)
        server.start()
        target = SchedulerTarget("lab", url, origin="test", token="t", auth="token")
        try:
            first = call(target.submit(program, None))
            second = call(target.submit(program, None))
        finally:
            call(target.aclose())
        server.join(30)
    assert first.id == second.id == "7"
    assert len(keys) == 3 and keys[0] == keys[1] and keys[2] != keys[0]
    assert all(key and len(key) == 36 for key in keys)  # UUIDs


@pytest.mark.munge
def test_slurm_job_with_munge_identity_and_session(munged, tmp_path, make_client, program):
    """What a Slurm job sees on HPC: a MUNGE-only scheduler and the session its prolog opened."""
    admin = {"QHPC_ADMIN_UIDS": str(os.getuid())}
    with daemon(tmp_path, "--auth", "munge", env=admin) as hpc:
        opened = httpx.post(
            f"{hpc.url}/sessions",
            json={"user_id": str(os.getuid()), "slurm_job_id": "77"},
            headers={"X-Munge-Cred": munge.encode()},
        )
        session = opened.json()["id"]
        env = {
            "QRMI_JOB_QPU_RESOURCES": "lab",
            "QRMI_JOB_QPU_TYPES": "pasqal-local",
            "lab_QRMI_WARDEN_URL": hpc.url,
            "lab_QRMI_JOB_ACQUISITION_TOKEN": session,
        }
        job = make_client(env).submit(program, shots=6)
        assert job.result(60).shots == 6
        view = httpx.get(f"{hpc.url}/jobs/{job.id}", headers={"X-Munge-Cred": munge.encode()})
        assert view.json()["session_id"] == session and view.json()["slurm_job_id"] == "77"
        del env["lab_QRMI_JOB_ACQUISITION_TOKEN"]
        with pytest.raises(RefusedError, match="X-Warden-Session header is required"):
            make_client(env).submit(program, shots=6)


# -- the emulator and QRMI targets --------------------------------------------------------------


@pytest.mark.anyio
async def test_await_an_emulator_job(make_client, program, crowded):
    client = make_client(file='[targets.fresnel]\ntype = "emulator"\ndevice = "test"\n')
    job = client.submit(program, shots=12)
    assert job.target == "fresnel"
    assert (await job).device == "QHPC-Test"
    with pytest.raises(DeviceRuleViolation, match="max_atom_num"):
        client.submit(crowded)


def test_emulator_cancel_and_failure(make_client, program):
    client = make_client()
    client.use("emulator")
    first = client.submit(program, shots=10)
    poll_until(lambda: first.refresh().status != "PENDING", "the first job to start", 60)
    second = client.submit(program, shots=10)
    assert second.state.position == 1  # as submitted: the next to run
    assert second.cancel() == "CANCELED"
    assert first.wait(60) == "DONE"
    broken = client.submit(Program("qasm3", "OPENQASM 3.0; not a program", 5))
    with pytest.raises(JobError, match="ended ERROR: emulation failed"):
        broken.result(60)


class FakePasqalResource:
    """Stands in for ``qrmi.QuantumResource`` (which needs a cloud account): a Pasqal device
    that, like the real one, refuses a call while another is in progress."""

    def __init__(self, name: str, kind: object) -> None:
        self.tasks: dict[str, tuple[int, int]] = {}
        self.busy = threading.Lock()

    @contextlib.contextmanager
    def borrowed(self) -> Iterator[None]:
        if not self.busy.acquire(blocking=False):
            raise RuntimeError("Already borrowed")
        try:
            time.sleep(0.005)
            yield
        finally:
            self.busy.release()

    def status(self):
        import qrmi

        with self.borrowed():
            return type(
                "Status", (), {"status": qrmi.ResourceStatusCode.Online, "status_reason": ""}
            )

    def target(self):
        specs = DeviceProfile.load("test").spec.json
        with self.borrowed():
            return type("Target", (), {"value": json.dumps([{"device_type": "T", "specs": specs}])})

    def task_start(self, payload) -> str:
        with self.borrowed():
            json.loads(payload.sequence)
            task = str(len(self.tasks) + 1)
            self.tasks[task] = (payload.job_runs, 0)
            return task

    def task_status(self, task: str):
        import qrmi

        with self.borrowed():
            runs, polls = self.tasks[task]
            self.tasks[task] = (runs, polls + 1)
            return qrmi.TaskStatus.Completed if polls >= 2 else qrmi.TaskStatus.Running

    def task_result(self, task: str):
        with self.borrowed():
            counts = {"00": self.tasks[task][0]}
            return type("Result", (), {"value": json.dumps({"counter": counts})})


def test_qrmi_target_serialises_calls_to_its_resource(make_client, program, monkeypatch):
    import qrmi

    monkeypatch.setattr(qrmi, "QuantumResource", FakePasqalResource)
    client = make_client({"QRMI_JOB_QPU_RESOURCES": "cloud", "QRMI_JOB_QPU_TYPES": "pasqal-cloud"})
    (info,) = [i for i in client.targets() if i.name == "cloud"]
    assert info.reachable and info.state == "ONLINE" and info.device == "QHPC-Test"
    jobs = [client.submit(program, shots=n) for n in (3, 4, 5)]
    waiters = [threading.Thread(target=job.wait, args=(30,)) for job in jobs]
    for waiter in waiters:
        waiter.start()
    for waiter in waiters:
        waiter.join()
    assert [job.result().counts for job in jobs] == [{"00": 3}, {"00": 4}, {"00": 5}]
    qasm = Program("qasm3", "OPENQASM 3.0; qubit q;", 5)
    with pytest.raises(RefusedError, match="cannot run 'qasm3' programs"):
        client.submit(qasm)


# -- results ------------------------------------------------------------------------------------


def test_result_views():
    import matplotlib

    matplotlib.use("Agg")
    result = Result({"01": 1, "11": 3, "00": 4}, "7", "lab", device="QHPC-Test")
    assert result.shots == 8
    assert result.probabilities == {"00": 0.5, "11": 0.375, "01": 0.125}
    assert list(result.probabilities) == ["00", "11", "01"]
    ax = result.plot()
    assert [t.get_text() for t in ax.get_xticklabels()] == ["00", "01", "11"]
    assert [p.get_height() for p in ax.patches] == [0.5, 0.125, 0.375]
    html = result._repr_html_()
    assert "Result of job 7 on lab (QHPC-Test)" in html and "<code>11</code>" in html
    assert "8 shots" in str(result) and repr(result).startswith("<Result job 7 on lab: 8 shots")


def test_a_sweep_is_one_job_whose_result_holds_each_point(lab):
    from tests.support.programs import parametrised_sequence_json

    program = Program("pulser", parametrised_sequence_json(omega=1.0), 10)
    points = [{"omega": 0.5}, {"omega": 1.0}, {"omega": 2.0}]
    job = qhpc_lab.submit(program, shots=15, variables=points)
    result = job.result(60)
    assert [s.variables for s in result.sets] == points
    assert [s.shots for s in result.sets] == [15, 15, 15] and result.shots == 45
    assert "sets 3 of 3 done, 45/45 shots" in str(job)
    with pytest.raises(RefusedError, match="sweep set 1: the sequence declares no variable"):
        qhpc_lab.submit(program, shots=5, variables=[{"omega": 1.0}, {"delta": 1.0}])
    with pytest.raises(RefusedError, match="cannot run a sweep as one job"):
        qhpc_lab.submit(program, shots=5, target="emulator", variables=points)
