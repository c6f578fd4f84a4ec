"""``qhpc qpu serve``: the emulated QPU behind Pasqal's QPU API, as a driver (ours, or Warden's
worker) meets it over HTTP: the shapes of Warden's QPU client, a device that runs only what it
could run, one job at a time, goes DOWN and back, and cancels only what has not started."""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from qhpc_lab.qpu import DeviceProfile
from tests.support.polling import poll_until
from tests.support.programs import pulser_sequence_json
from tests.support.qpu_api import served

pytestmark = pytest.mark.slow


def _local_pulse() -> str:
    """A sequence on a local channel, which the test device (global only) does not have."""
    from pulser import Pulse, Register, Sequence
    from pulser.devices import MockDevice

    sequence = Sequence(Register.from_coordinates([(0, 0), (6, 0)], prefix="q"), MockDevice)
    sequence.declare_channel("l", "rydberg_local", initial_target="q0")
    sequence.add(Pulse.ConstantPulse(200, 2.0, 0.0, 0.0), "l")
    sequence.measure("ground-rydberg")
    return sequence.to_abstract_repr()


def _data(response: httpx.Response) -> Any:
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["code"] == 200, body
    return body["data"]


def _post(
    client: httpx.Client, nb_run: int, sequence: str, batch: str = "b-1", timeout: float = 30
) -> dict[str, Any]:
    context = {"batch_id": batch, "pasqman_job_id": f"{batch}-chunk-0"}
    payload = {"nb_run": nb_run, "pulser_sequence": sequence, "context": context}
    return _data(client.post("/jobs", json=payload, timeout=timeout))


def _finished(client: httpx.Client, uid: int) -> dict[str, Any]:
    def ended() -> dict[str, Any] | None:
        job = _data(client.get(f"/jobs/{uid}"))
        return job if job["status"] in ("DONE", "ERROR", "CANCELED") else None

    return poll_until(ended, f"QPU job {uid} ends", 120)


def test_a_job_runs_as_warden_reads_it(tmp_path: Path) -> None:
    """The device's specs are the profile's Pulser device; a job created with Warden's body
    (nb_run, pulser_sequence, context) runs once, ``nb_run`` shots in its counter, with its
    times and its batch id; the device's runs limit and rules refuse what it cannot run."""
    sequence = pulser_sequence_json()
    with served(tmp_path) as qpu:
        system = _data(qpu.get("/system"))
        profile = DeviceProfile.load("test")
        assert system["specs"] == json.loads(profile.spec.json)
        assert "emulated" in system["stands_in"]
        assert _data(qpu.get("/system/operational")) == {"operational_status": "UP"}
        job = _post(qpu, 50, sequence)
        assert (job["status"], job["batch_id"], job["nb_run"]) == ("PENDING", "b-1", 50)
        done = _finished(qpu, job["uid"])
        assert done["status"] == "DONE", done
        assert sum(json.loads(done["result"])["counter"].values()) == 50
        assert done["created_datetime"] <= done["start_datetime"] <= done["end_datetime"]
        program = _data(qpu.get(f"/programs/{done['program_id']}"))
        assert program == {"uid": done["program_id"], "status": "DONE"}
        too_many = qpu.post(
            "/jobs", json={"nb_run": profile.spec.max_runs + 1, "pulser_sequence": sequence}
        )
        assert too_many.status_code == 400 and "max_runs" in too_many.json()["message"]
        refused = qpu.post("/jobs", json={"nb_run": 10, "pulser_sequence": _local_pulse()})
        assert refused.status_code == 400, refused.text
        assert "rydberg_local" in refused.json()["message"], refused.text
        missing = qpu.get("/jobs/999")
        assert missing.status_code == 404 and missing.json()["code"] == "404"


def test_down_holds_jobs_and_only_a_pending_job_cancels(tmp_path: Path) -> None:
    """DOWN: new jobs wait PENDING and one can be cancelled; UP: they run in arrival order,
    one at a time (each takes its setup time), and a running or ended job answers 3003."""
    sequence = pulser_sequence_json()
    with served(tmp_path, "--setup", "0.5") as qpu:
        base = str(qpu.base_url).removesuffix("/api/v1/")
        down = httpx.post(f"{base}/stand-in/down", json={"reason": "laser swap"}, timeout=10)
        assert down.json()["data"]["operational_status"] == "DOWN"
        assert _data(qpu.get("/system/operational"))["operational_status"] == "DOWN"
        # the first runs 1 s (2 000 shots), long enough to be seen RUNNING
        first, second, third = (_post(qpu, n, sequence, f"b-{n}") for n in (2000, 20, 21))
        cancelled = _data(qpu.put(f"/jobs/{second['uid']}/cancel"))
        assert cancelled["status"] == "CANCELED"
        assert _data(qpu.get(f"/jobs/{first['uid']}"))["status"] == "PENDING"
        httpx.post(f"{base}/stand-in/up", timeout=10).raise_for_status()
        running = poll_until(
            lambda: _data(qpu.get(f"/jobs/{first['uid']}"))["status"] == "RUNNING",
            "the first job runs",
            30,
            0.02,
        )
        assert running
        assert _data(qpu.get(f"/jobs/{third['uid']}"))["status"] == "PENDING"  # one at a time
        late = qpu.put(f"/jobs/{first['uid']}/cancel")
        assert late.status_code == 400 and late.json()["code"] == "3003", late.text
        ends = [_finished(qpu, job["uid"]) for job in (first, third)]
        assert [job["status"] for job in ends] == ["DONE", "DONE"]
        assert ends[0]["end_datetime"] <= ends[1]["start_datetime"]
        after = qpu.put(f"/jobs/{third['uid']}/cancel")
        assert after.status_code == 400 and after.json()["code"] == "3003"
        assert _data(qpu.get(f"/jobs/{second['uid']}"))["status"] == "CANCELED"


def test_results_as_a_python_literal(tmp_path: Path) -> None:
    """``--result-format python`` writes results as Warden's QPU mock does: the text of a
    Python dict literal, which ``json.loads`` refuses."""
    with served(tmp_path, "--result-format", "python") as qpu:
        done = _finished(qpu, _post(qpu, 10, pulser_sequence_json())["uid"])
        with pytest.raises(json.JSONDecodeError):
            json.loads(done["result"])
        assert sum(ast.literal_eval(done["result"])["counter"].values()) == 10


def test_injected_faults(tmp_path: Path) -> None:
    """What a driver's fault tests need from the stand-in: 503s, slow answers, a POST /jobs
    whose job exists but whose answer never comes (found again by its batch id's job), short
    and malformed results, and specs that change between two jobs."""
    sequence = pulser_sequence_json()
    with served(tmp_path) as qpu:
        base = str(qpu.base_url).removesuffix("/api/v1/")

        def inject(**faults: Any) -> None:
            httpx.post(f"{base}/stand-in/faults", json=faults, timeout=10).raise_for_status()

        inject(unavailable=2)
        assert [qpu.get("/system/operational").status_code for _ in range(3)] == [503, 503, 200]
        inject(delay_s=1.0)
        with pytest.raises(httpx.ReadTimeout):
            qpu.get("/system/operational", timeout=0.3)
        inject(lost_post_answers=1)
        with pytest.raises(httpx.ReadTimeout):  # the answer never comes: 1 s shows it
            _post(qpu, 10, sequence, "lost", timeout=1.0)
        inject()
        lost = poll_until(lambda: _data(qpu.get("/jobs/0")), "the lost job is there", 10)
        assert (lost["batch_id"], lost["nb_run"]) == ("lost", 10)
        assert _finished(qpu, 0)["status"] == "DONE"
        inject(result="short")
        short = _finished(qpu, _post(qpu, 40, sequence)["uid"])
        assert 0 <= sum(json.loads(short["result"])["counter"].values()) < 40
        inject(result="malformed")
        malformed = _finished(qpu, _post(qpu, 10, sequence)["uid"])
        assert malformed["status"] == "DONE"
        with pytest.raises(json.JSONDecodeError):
            json.loads(malformed["result"])
        with pytest.raises((ValueError, SyntaxError)):
            ast.literal_eval(malformed["result"])
        inject(specs={"max_runs": 20})
        assert _data(qpu.get("/system"))["specs"]["max_runs"] == 20
        refused = qpu.post("/jobs", json={"nb_run": 21, "pulser_sequence": sequence})
        assert refused.status_code == 400 and "max_runs" in refused.json()["message"]
