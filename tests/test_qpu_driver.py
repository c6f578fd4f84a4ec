"""The scheduler driving a device through Pasqal's QPU API (``qhpc_lab.qpu.api``), against
``qhpc qpu serve`` with injected faults: every chunk is one QPU job, and whatever the device or
the network does, no chunk's shots are lost or run twice (docs/scheduler.md, "The QPU API
driver"). Each test counts the device's own jobs (``/stand-in/jobs``) against the scheduler's."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from qhpc_lab.qpu.api import QPUApiDriver, QPUApiError, QPUApiSettings, parse_result
from tests.support.in_process import in_process, scheduler_config
from tests.support.polling import apoll_until
from tests.support.polling import wait_for_status as waited
from tests.support.programs import pulser_sequence_json
from tests.support.qpu_api import connecting, device_jobs, inject, served, stand_in

pytestmark = [pytest.mark.slow, pytest.mark.anyio]


@pytest.fixture(scope="module")
def qpu(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """One device for the module (its jobs pile up; each test reads its own by batch id)."""
    with served(tmp_path_factory.mktemp("qpu")) as client:
        yield client


_FIRST_UID = [0]
"""The first device job of the test running (job ids start again with each scheduler)."""


@pytest.fixture(autouse=True)
def healthy(request: pytest.FixtureRequest) -> None:
    """Each test starts with the device UP and no fault injected."""
    _FIRST_UID[0] = 0
    if "qpu" in request.fixturenames:
        qpu = request.getfixturevalue("qpu")
        inject(qpu)
        with stand_in(qpu) as admin:
            admin.post("/up").raise_for_status()
        _FIRST_UID[0] = len(device_jobs(qpu))


async def submit(client: httpx.AsyncClient, shots: int, **extra: Any) -> dict[str, Any]:
    body = {"sequence": pulser_sequence_json(), "shots": shots, **extra}
    response = await client.post("/jobs", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def qpu_jobs_of(qpu: httpx.Client, job_id: int) -> list[dict[str, Any]]:
    jobs = device_jobs(qpu)[_FIRST_UID[0] :]
    return [job for job in jobs if job["batch_id"] == f"qhpc-job-{job_id}"]


def assert_exactly_once(qpu: httpx.Client, job: dict[str, Any]) -> list[dict[str, Any]]:
    """The job's counts are its shots, and the device ran exactly those shots for it: its DONE
    QPU jobs add up to the job's shots (none lost, none run twice)."""
    assert job["status"] == "DONE", job
    counts = json.loads(job["results"])["counter"]
    assert sum(counts.values()) == job["shots"], job
    ran = [q for q in qpu_jobs_of(qpu, job["id"]) if q["status"] == "DONE"]
    assert sum(q["nb_run"] for q in ran) == job["shots"], ran
    return ran


async def test_each_chunk_is_one_qpu_job(tmp_path: Path, qpu: httpx.Client) -> None:
    """The device's specs, name and notice reach /device; a 300-shot job runs as QPU jobs of a
    chunk each (100 shots at first; then sized by the measured timing), traced to the job by
    batch id and shot range; device time is the device's own."""
    config = scheduler_config(tmp_path)
    async with in_process(config, connecting(qpu)) as api:
        device = (await api.user.get("/device")).json()
        assert device["name"] == "QHPC-Test" and device["profile"] == "qpu-api"
        assert "QPU API" in device["message"] and "emulated" in device["message"]
        assert device["next_calibration_in_s"] is None  # the device calibrates itself
        marked = await api.admin.post("/admin/calibrate")  # an operator's mark
        assert marked.status_code == 200, marked.text
        await apoll_until(_calibration(api.user, 2), "calibration #2 is recorded", timeout=10)
        job = await waited(api.user, (await submit(api.user, 300))["id"])
        assert [c["id"] for c in job["calibrations"]] == [2]
        ran = assert_exactly_once(qpu, job)
        assert ran[0]["nb_run"] == 100
        assert ran[0]["context"]["pasqman_job_id"].startswith("qhpc-job-1-shots-1-100-")
        spent = sum(_seconds(q["end_datetime"]) - _seconds(q["start_datetime"]) for q in ran)
        assert job["qpu_seconds"] == pytest.approx(spent, abs=1e-3)


def _seconds(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso).timestamp()


async def test_down_mid_job_holds_it_and_up_resumes(tmp_path: Path, qpu: httpx.Client) -> None:
    """DOWN while a job runs: its QPU job in flight finishes or waits, no new chunk is sent,
    /device says OFFLINE with the reason, the job shows held by ``down``; UP: it resumes and
    ends with exactly its shots."""
    async with in_process(scheduler_config(tmp_path), connecting(qpu)) as api:
        job = await submit(api.user, 3000)
        await apoll_until(
            lambda: _started(api.user, job["id"]), "the job's first chunk ran", timeout=60
        )
        with stand_in(qpu) as admin:
            admin.post("/down", json={"reason": "laser swap"}).raise_for_status()
        await apoll_until(_offline(api.user), "the scheduler sees DOWN", timeout=10)
        device = (await api.user.get("/device")).json()
        assert "DOWN" in device["message"], device
        health = await api.anonymous.get("/health")  # the daemon is fine; the device is not
        assert health.status_code == 200, health.text
        assert health.json()["device"]["state"] == "OFFLINE", health.text
        sent = len(qpu_jobs_of(qpu, job["id"]))
        await asyncio.sleep(0.5)
        held = (await api.user.get(f"/jobs/{job['id']}")).json()
        assert held["status"] != "DONE" and held["held_by"] == "down", held
        assert len(qpu_jobs_of(qpu, job["id"])) <= sent + 1  # at most the one in flight
        with stand_in(qpu) as admin:
            admin.post("/up").raise_for_status()
        done = await waited(api.user, job["id"], timeout=60)
        assert_exactly_once(qpu, done)
        after = (await api.user.get("/device")).json()
        assert after["state"] == "ONLINE"
        # qhpc qpu serve says it calibrates when DOWN: UP again is calibration #2
        assert after["calibration_id"] == device["calibration_id"] + 1
        assert [c["id"] for c in done["calibrations"]] == [1, 2], done["calibrations"]


def _calibration(client: httpx.AsyncClient, number: int) -> Any:
    async def check() -> bool:
        return (await client.get("/device")).json()["calibration_id"] == number

    return check


async def _started(client: httpx.AsyncClient, job_id: int) -> bool:
    return (await client.get(f"/jobs/{job_id}")).json()["shots_done"] > 0


def _offline(client: httpx.AsyncClient) -> Any:
    async def check() -> bool:
        return (await client.get("/device")).json()["state"] == "OFFLINE"

    return check


async def test_5xx_bursts_and_slow_answers(tmp_path: Path, qpu: httpx.Client) -> None:
    """503 bursts are retried with back-off; answers slower than the time-out are retried
    (reads) or looked for (a POST whose answer timed out): the job ends with its shots once."""
    slow = connecting(qpu, create_timeout_s=1.0, lost_answer_wait_s=5.0)
    async with in_process(scheduler_config(tmp_path), slow) as api:
        inject(qpu, unavailable=6)
        first = await waited(api.user, (await submit(api.user, 300))["id"], timeout=60)
        assert_exactly_once(qpu, first)
        job = await submit(api.user, 300)
        inject(qpu, delay_s=1.5)  # every request times out (1 s) for a while
        await asyncio.sleep(1.0)
        inject(qpu)
        assert_exactly_once(qpu, await waited(api.user, job["id"], timeout=60))


async def test_a_lost_post_answer_is_found_not_resent(tmp_path: Path, qpu: httpx.Client) -> None:
    """A POST /jobs that created its job but whose answer never came: the driver finds the job
    by its pasqman_job_id among the uids after the last one it knows, and waits on it; the
    chunk is not sent again."""
    lost = connecting(qpu, create_timeout_s=2.0)
    async with in_process(scheduler_config(tmp_path), lost) as api:
        first = await waited(api.user, (await submit(api.user, 100))["id"])
        assert_exactly_once(qpu, first)
        inject(qpu, lost_post_answers=1)
        job = await waited(api.user, (await submit(api.user, 200))["id"], timeout=60)
        ran = assert_exactly_once(qpu, job)
        assert len(qpu_jobs_of(qpu, job["id"])) == len(ran)  # none sent twice, none left


async def test_cancel_while_the_qpu_job_runs(tmp_path: Path, qpu: httpx.Client) -> None:
    """Canceling a job whose QPU job is RUNNING: the device answers 3003, the QPU job runs to
    its end and the canceled job is charged its device time and its shots (issue 27's attack:
    cancel late to run for free); the next job runs after it."""
    config = scheduler_config(tmp_path)
    async with in_process(config, connecting(qpu, chunk_seconds=2.0)) as api:
        job = await submit(api.user, 4000)  # one QPU job of 2 s
        await apoll_until(
            lambda: _qpu_status(qpu, job["id"], "RUNNING"), "its QPU job runs", timeout=30
        )
        canceled = await api.user.post(f"/jobs/{job['id']}/cancel")
        assert canceled.status_code == 200, canceled.text
        nxt = await submit(api.user, 100)
        done = await waited(api.user, nxt["id"], timeout=60)
        assert_exactly_once(qpu, done)
        (ran,) = qpu_jobs_of(qpu, job["id"])
        assert ran["status"] == "DONE"  # it could no longer be stopped
        assert ran["end_datetime"] <= qpu_jobs_of(qpu, nxt["id"])[0]["start_datetime"]
        charged = (await api.user.get(f"/jobs/{job['id']}")).json()
        assert charged["status"] == "CANCELED"
        assert charged["qpu_seconds"] == pytest.approx(2.0, abs=0.2), charged
        assert charged["shots_done"] == 4000  # the whole chunk ran: its shots are charged too


async def _qpu_status(qpu: httpx.Client, job_id: int, status: str) -> bool:
    return any(q["status"] == status for q in qpu_jobs_of(qpu, job_id))


@pytest.mark.parametrize("fault", ["malformed", "short"])
async def test_bad_results_end_the_job_naming_the_answer(
    tmp_path: Path, qpu: httpx.Client, fault: str
) -> None:
    """A result that is no counter, or has fewer shots than asked: the job ends in ERROR with
    the device's answer in its error; the device goes on with the next job."""
    async with in_process(scheduler_config(tmp_path), connecting(qpu)) as api:
        inject(qpu, result=fault)
        failed = await waited(api.user, (await submit(api.user, 50))["id"], ("ERROR",), 60)
        expected = "not readable" if fault == "malformed" else "returned"
        assert expected in failed["error"], failed
        assert "counter" in failed["error"], failed
        inject(qpu)
        assert_exactly_once(qpu, await waited(api.user, (await submit(api.user, 50))["id"]))


async def test_specs_changing_between_chunks(tmp_path: Path, qpu: httpx.Client) -> None:
    """The device lowers its max_runs between two chunks: the refused chunk is not an error;
    the driver reads the new specs, chunks shrink to fit, and /device shows the new limit."""
    async with in_process(scheduler_config(tmp_path), connecting(qpu)) as api:
        job = await submit(api.user, 3000)
        await apoll_until(lambda: _started(api.user, job["id"]), "a chunk ran", timeout=60)
        inject(qpu, specs={"max_runs": 40})
        done = await waited(api.user, job["id"], timeout=90)
        ran = assert_exactly_once(qpu, done)
        assert ran[-1]["nb_run"] <= 40
        device = (await api.user.get("/device")).json()
        assert device["chunk_shots"] == 40, device
    inject(qpu, specs={"max_runs": 10000})


async def test_setup_time_sizes_chunks_and_enters_etas(tmp_path: Path) -> None:
    """A device spending 0.2 s loading each QPU job: after the first chunk the scheduler has
    measured it, and chunks grow until it is at most 10 % of one; a shot's time in ETAs
    includes the setup spread over a chunk."""
    with served(tmp_path, "--setup", "0.2") as qpu:
        async with in_process(scheduler_config(tmp_path), connecting(qpu)) as api:
            first = await waited(api.user, (await submit(api.user, 100))["id"], timeout=60)
            assert_exactly_once(qpu, first)
            device = (await api.user.get("/device")).json()
            # 0.2 s × 0.9 / (0.1 × 0.5 ms a shot): 3 600 shots (more if the stand-in's
            # loading, its emulation, took longer than 0.2 s)
            assert 3300 <= device["chunk_shots"] <= 20000, device
            per_shot, chunk = device["time_per_shot_s"], device["chunk_shots"]
            driver = api.scheduler.driver
            # (0.19: the stand-in sleeps on its monotonic clock, stamps with the wall clock)
            assert driver.setup_s >= 0.19 and 0.0004 <= driver.shot_s <= 0.0006, vars(driver)
            # the setup is counted (the device's shot time alone varies by a few %: the
            # setup spread over a chunk is 10 % of it, so only the driver's own figures say it)
            assert per_shot == pytest.approx(driver.shot_s + driver.setup_s / chunk), device


async def test_a_parametrised_program_is_built_before_it_is_sent(
    tmp_path: Path, qpu: httpx.Client
) -> None:
    """The QPU API takes a built sequence: the job's variables are bound first (the device
    refuses a sequence with free variables, so DONE shows it was built)."""
    from pulser import Pulse, Register, Sequence
    from pulser.devices import MockDevice

    sequence = Sequence(Register.from_coordinates([(0, 0), (6, 0)], prefix="q"), MockDevice)
    duration = sequence.declare_variable("duration", dtype=int)
    amplitude = sequence.declare_variable("amplitude")
    sequence.declare_channel("g", "rydberg_global")
    sequence.add(Pulse.ConstantPulse(duration, amplitude, 0.0, 0.0), "g")
    sequence.measure("ground-rydberg")
    body = {
        "sequence": sequence.to_abstract_repr(),
        "shots": 50,
        "variables": {"duration": 200, "amplitude": 2.0},
    }
    async with in_process(scheduler_config(tmp_path), connecting(qpu)) as api:
        response = await api.user.post("/jobs", json=body)
        assert response.status_code == 200, response.text
        assert_exactly_once(qpu, await waited(api.user, response.json()["id"], timeout=60))


def test_results_as_json_or_python_literal_only() -> None:
    assert parse_result('{"counter": {"01": 3, "10": 1}}', 4) == {"01": 3, "10": 1}
    assert parse_result("{'counter': {'01': 4}}", 4) == {"01": 4}
    assert parse_result({"counter": {"1": 2}}, 2) == {"1": 2}
    for bad, nb_run in [
        ("<counter/>", 1),
        ("{'counter': {'0x': 1}}", 1),
        ('{"counter": {"01": true}}', 1),
        ("__import__('os')", 1),
        ('{"counter": {"01": 3}}', 4),
        ("[1, 2]", 1),
    ]:
        with pytest.raises(QPUApiError):
            parse_result(bad, nb_run)


def test_a_scheduler_starting_before_its_qpu_api_waits_for_it(tmp_path: Path) -> None:
    """The QPU API is started beside the scheduler and is still loading (``make lab``, a dev
    cluster): the start waits ``start_wait_s`` (``qpu_start_wait_s``) for it, not one call's
    retries; one that never answers fails naming where it looked."""
    import subprocess
    import sys

    from tests.support.daemons import free_port

    port = free_port()
    command = [sys.executable, "-m", "qhpc_lab.cli", "qpu", "serve", "--profile", "test"]
    log = (tmp_path / "qpu.log").open("ab")
    process = subprocess.Popen([*command, "--port", str(port)], stdout=log, stderr=log)
    try:
        url = f"http://127.0.0.1:{port}"
        settings = QPUApiSettings(url, retry_for_s=0.0, start_wait_s=120.0)
        driver = QPUApiDriver.connect(settings, None)  # refused at first: it is still importing
        assert driver.state is not None
    finally:
        process.terminate()
        process.wait(30)
    never = QPUApiSettings(f"http://127.0.0.1:{free_port()}", retry_for_s=0.0, start_wait_s=0.3)
    with pytest.raises(RuntimeError, match=r"cannot read the device's specs .* at http://"):
        QPUApiDriver.connect(never, None)
