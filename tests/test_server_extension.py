"""The Jupyter server extension against a real scheduler daemon (the ``server`` fixture).

Discovery is the kernel's: targets come from a targets file or from the QRMI variables a
Slurm job sets. Tests are plain functions driving pytest-jupyter's loop: its plugin is not
registered for the whole suite (its hooks would take over every async test), so its fixtures
are imported into this module only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pytest_jupyter.jupyter_server import *  # noqa: F403 (fixtures for this module only)
from tornado.httpclient import HTTPClientError

from qhpc_lab.wire.documents import QueueEventOut, relayed_fields
from tests.support.daemons import Daemon
from tests.support.identities import ADMIN, USER, auth_header
from tests.support.identities import SECRET as SCHEDULER_SECRET
from tests.support.programs import pulser_sequence_json

Run = Callable[[Coroutine[Any, Any, Any]], Any]
SESSION_HOLDER = "qpu"
API_KEY = "pasqal-cloud-api-key-0123456789"
URL_PASSWORD = "url-password-9876"


@pytest.fixture
def run(jp_asyncio_loop: asyncio.AbstractEventLoop) -> Run:
    """Run a coroutine on the loop the Jupyter server lives on."""
    return jp_asyncio_loop.run_until_complete


@pytest.fixture
def session_id(server: Daemon) -> str:
    """A scheduler session for USER, opened as the Slurm prolog would (admin)."""
    answer = httpx.post(
        f"{server.url}/sessions",
        json={"user_id": USER, "slurm_job_id": "4242"},
        headers=auth_header(ADMIN, admin=True),
    )
    answer.raise_for_status()
    return answer.json()["id"]


@pytest.fixture
def secrets(session_id: str) -> list[str]:
    """Every credential in the server's environment: none may appear in any answer."""
    token = auth_header(USER)["Authorization"].removeprefix("Bearer ")
    return [token, session_id, API_KEY, URL_PASSWORD, SCHEDULER_SECRET]


@pytest.fixture
def qrmi_env(
    server: Daemon, session_id: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[None]:
    """The variables a Slurm job with our QPU (and a cloud resource) would see."""
    token = auth_header(USER)["Authorization"].removeprefix("Bearer ")
    env = {
        "QRMI_JOB_QPU_RESOURCES": f"{SESSION_HOLDER},cloud",
        "QRMI_JOB_QPU_TYPES": "pasqal-local,pasqal-cloud",
        f"{SESSION_HOLDER}_QRMI_WARDEN_URL": server.url,
        f"{SESSION_HOLDER}_QRMI_JOB_ACQUISITION_TOKEN": session_id,
        "QRMI_JOB_ID": "4242",
        "QHPC_TOKEN": token,
        "cloud_QRMI_PASQAL_CLOUD_AUTH_TOKEN": API_KEY,
        "QHPC_TARGETS_FILE": str(tmp_path / "targets.toml"),
    }
    (tmp_path / "targets.toml").write_text(
        f'[targets.lost]\ntype = "scheduler"\nurl = "http://me:{URL_PASSWORD}@127.0.0.1:9/"\n'
        f'token = "{token}"\n'
    )
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    yield


@pytest.fixture
def jp_server_config(qrmi_env: None) -> dict[str, Any]:
    return {
        "ServerApp": {"jpserver_extensions": {"qhpc_lab.jupyter.server": True}},
    }


def get_json(run: Run, jp_fetch: Any, *path: str, **kwargs: Any) -> Any:
    return json.loads(run(jp_fetch("qhpc", "api", *path, **kwargs)).body)


def submit(server: Daemon, session_id: str, shots: int, job_class: str = "production") -> dict:
    answer = httpx.post(
        f"{server.url}/jobs",
        json={"sequence": pulser_sequence_json(), "shots": shots, "job_class": job_class},
        headers={**auth_header(USER), "X-Warden-Session": session_id},
        timeout=120,  # a cold daemon's validation workers import Pulser first
    )
    answer.raise_for_status()
    return answer.json()


def test_every_route_needs_the_server_login(run: Run, jp_fetch: Any) -> None:
    routes = [("GET", "targets"), ("GET", "jobs"), ("GET", "events"), ("POST", "jobs/1/cancel")]
    for method, path in routes:
        body = b"" if method == "POST" else None
        for headers in ({"Authorization": ""}, {"Authorization": "token not-the-token"}):
            with pytest.raises(HTTPClientError) as refused:
                run(jp_fetch("qhpc", "api", path, method=method, body=body, headers=headers))
            assert refused.value.code in (401, 403), (method, path, headers)


def test_targets_show_state_calibration_and_queue(
    run: Run, jp_fetch: Any, server: Daemon, session_id: str
) -> None:
    answer = get_json(run, jp_fetch, "targets")
    targets = {t["name"]: t for t in answer["targets"]}
    assert list(targets) == [SESSION_HOLDER, "cloud", "lost", "emulator"]
    assert answer["default"] == SESSION_HOLDER
    qpu = targets[SESSION_HOLDER]
    assert qpu["reachable"] and qpu["default"] and qpu["kind"] == "scheduler"
    assert qpu["state"] == "ONLINE"
    assert qpu["device"] == "QHPC-Test"
    assert 0 <= qpu["calibration_age_s"] < 3600
    assert 0 < qpu["next_calibration_in_s"] <= 3600
    assert set(qpu["queue_depth"]) == {"production", "test", "development"}
    assert "QRMI_JOB_QPU_RESOURCES" in qpu["origin"]
    assert targets["lost"]["reachable"] is False
    assert targets["lost"]["state"] == "OFFLINE"
    assert targets["lost"]["url"] == "http://127.0.0.1:9"
    assert targets["emulator"]["kind"] == "emulator"

    submit(server, session_id, 10_000)
    submit(server, session_id, 100, job_class="test")
    depth = get_json(run, jp_fetch, "targets")["targets"][0]["queue_depth"]
    assert depth["production"] + depth["test"] >= 1
    assert qpu["quotas"] == []  # the user's use against their quotas: none set yet
    quota = {"kind": "user", "subject": USER, "unit": "shots", "budget": 100_000}
    headers = auth_header(ADMIN, admin=True)
    httpx.put(f"{server.url}/admin/quotas", json=quota, headers=headers).raise_for_status()
    (shown,) = get_json(run, jp_fetch, "targets")["targets"][0]["quotas"]
    assert shown["used"] == 10_100 and shown["budget"] == 100_000 and shown["period"] == "month"


def test_jobs_have_position_eta_and_can_be_canceled(
    run: Run, jp_fetch: Any, server: Daemon, session_id: str
) -> None:
    empty = get_json(run, jp_fetch, "jobs")
    assert empty["jobs"] == []
    assert list(empty["errors"]) == ["lost"]  # an unreachable target is named, not fatal
    assert "unreachable at http://127.0.0.1:9" in empty["errors"]["lost"]
    long = submit(server, session_id, 10_000)
    queued = submit(server, session_id, 10_000)
    jobs = {j["id"]: j for j in get_json(run, jp_fetch, "jobs")["jobs"]}
    assert set(jobs) == {long["id"], queued["id"]}
    waiting = jobs[queued["id"]]
    assert waiting["target"] == SESSION_HOLDER
    assert waiting["status"] == "PENDING" and waiting["position"] >= 1
    assert waiting["eta_s"] > 0 and waiting["shots"] == 10_000
    assert "results" not in waiting and "session_id" not in waiting

    canceled = get_json(run, jp_fetch, "jobs", str(queued["id"]), "cancel", method="POST", body=b"")
    assert canceled["status"] == "CANCELED" and canceled["target"] == SESSION_HOLDER
    get_json(run, jp_fetch, "jobs", str(long["id"]), "cancel", method="POST", body=b"")

    with pytest.raises(HTTPClientError) as missing:
        run(jp_fetch("qhpc", "api", "jobs", "999999", "cancel", method="POST", body=b""))
    assert missing.value.code == 404
    with pytest.raises(HTTPClientError) as huge:  # the attack: an id Python refuses to read
        run(jp_fetch("qhpc", "api", "jobs", "9" * 5000, "cancel", method="POST", body=b""))
    assert huge.value.code == 404 and b"at most 19 digits" in huge.value.response.body
    with pytest.raises(HTTPClientError) as wrong_target:
        run(
            jp_fetch(
                "qhpc", "api", "jobs", "1", "cancel", method="POST", body=b"",
                params={"target": "emulator"},
            )
        )  # fmt: skip
    assert wrong_target.value.code == 404


async def read_events(
    url: str, headers: dict[str, str], until: Callable[[list[tuple[str, dict]]], bool]
) -> list[tuple[str, dict]]:
    """The stream's events until ``until`` holds (or 30 s pass)."""
    events: list[tuple[str, dict]] = []
    async with (
        httpx.AsyncClient(timeout=30) as client,
        client.stream("GET", url, headers=headers) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        kind = ""
        deadline = time.monotonic() + 30
        async for line in response.aiter_lines():
            if line.startswith("event:"):
                kind = line[6:].strip()
            elif line.startswith("data:"):
                events.append((kind, json.loads(line[5:])))
                if until(events):
                    return events
            assert time.monotonic() < deadline, f"events so far: {events}"
    return events


def test_event_stream_relays_jobs_and_calibration(
    run: Run,
    jp_fetch: Any,
    jp_auth_header: dict[str, str],
    http_server_client: Any,
    server: Daemon,
    session_id: str,
) -> None:
    url = http_server_client.get_url("/a%40b/qhpc/api/events")
    done: dict[str, Any] = {}

    def finished(events: list[tuple[str, dict]]) -> bool:
        if not done and any(kind == "reset" for kind, _ in events):
            done["job"] = submit(server, session_id, 200)
            httpx.post(f"{server.url}/admin/calibrate", headers=auth_header(ADMIN, admin=True))
        states = [
            d.get("state") for kind, d in events if kind == "target" and d["name"] == SESSION_HOLDER
        ]
        job_done = any(
            kind == "job" and d["status"] == "DONE" and d["id"] == done.get("job", {}).get("id")
            for kind, d in events
        )
        return job_done and "CALIBRATING" in states and states[-1] == "ONLINE"

    events = run(read_events(url, jp_auth_header, finished))
    job_events = [d for kind, d in events if kind == "job"]
    assert {d["status"] for d in job_events} >= {"PENDING", "RUNNING", "DONE"}
    assert all(d["target"] == SESSION_HOLDER for d in job_events)
    assert all("results" not in d and "session_id" not in d for d in job_events)
    queues = [d for kind, d in events if kind == "queue"]  # relayed, not re-read
    assert queues and all(d["target"] == SESSION_HOLDER for d in queues)
    assert any(str(done["job"]["id"]) in d["jobs"] for d in queues)
    assert all(set(d) <= {"target", *relayed_fields(QueueEventOut)} for d in queues)


def test_no_credential_reaches_the_browser(
    run: Run,
    jp_fetch: Any,
    jp_auth_header: dict[str, str],
    http_server_client: Any,
    server: Daemon,
    session_id: str,
    secrets: list[str],
) -> None:
    """Every answer, the event stream and the errors, read whole, hold no secret value."""
    job = submit(server, session_id, 200)
    bodies = [
        run(jp_fetch("qhpc", "api", "targets")).body.decode(),
        run(jp_fetch("qhpc", "api", "jobs")).body.decode(),
        run(
            jp_fetch("qhpc", "api", "jobs", str(job["id"]), "cancel", method="POST", body=b"")
        ).body.decode(),
    ]
    for params in ({"target": "lost"}, {"target": "nowhere"}):
        with pytest.raises(HTTPClientError) as refused:
            run(
                jp_fetch(
                    "qhpc", "api", "jobs", "1", "cancel", method="POST", body=b"", params=params
                )
            )
        bodies.append(refused.value.response.body.decode())
    assert "127.0.0.1:9" in bodies[-2]  # the unreachable target's error did come back

    url = http_server_client.get_url("/a%40b/qhpc/api/events")
    events = run(read_events(url, jp_auth_header, lambda seen: any(k == "reset" for k, _ in seen)))
    bodies.append(json.dumps(events))
    for body in bodies:
        for secret in secrets:
            assert secret not in body


async def holder_events(response: httpx.Response) -> AsyncIterator[tuple[str, dict]]:
    """The events about the session holder's scheduler, as the sidebar reads them."""
    kind = ""
    async for line in response.aiter_lines():
        if line.startswith("event:"):
            kind = line[6:].strip()
        elif line.startswith("data:"):
            data = json.loads(line[5:])
            if SESSION_HOLDER in (data.get("name"), data.get("target")):
                yield kind, data


def test_a_scheduler_that_dies_is_offline_with_a_countdown_and_one_log_line_each_way(
    run: Run,
    jp_fetch: Any,
    jp_serverapp: Any,
    jp_auth_header: dict[str, str],
    http_server_client: Any,
    server: Daemon,
) -> None:
    """Killed, the scheduler turns offline in the sidebar with the next try's delay (which
    the sidebar counts down); the server log says so once however many retries follow, and
    once more when it is back."""
    service = jp_serverapp.web_app.settings["qhpc_service"]
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    service.log.addHandler(handler)
    get_json(run, jp_fetch, "targets")  # what the sidebar reads first
    url = http_server_client.get_url("/a%40b/qhpc/api/events")

    async def scenario() -> list[dict]:
        offline: list[dict] = []
        async with (
            httpx.AsyncClient(timeout=60) as client,
            client.stream("GET", url, headers=jp_auth_header) as response,
        ):
            events = holder_events(response)
            async with contextlib.aclosing(events), asyncio.timeout(240):
                async for kind, _ in events:  # the first connection re-reads, then says reset
                    if kind == "reset":
                        break
                server.kill()
                async for kind, view in events:  # several retries: each a view, no log line
                    if kind == "target" and not view["reachable"]:
                        offline.append(view)
                        if len(offline) == 3:
                            break
                await asyncio.to_thread(server.restart)
                async for kind, view in events:
                    if kind == "target" and view["reachable"] and view["state"] == "ONLINE":
                        break
        return offline

    try:
        offline = run(scenario())
    finally:
        service.log.removeHandler(handler)
    for view in offline:
        assert view["state"] == "OFFLINE" and view["default"]
        assert view["retry_in_s"] > 0
        assert view["message"].startswith("the scheduler's event stream: ")
    said = [r.getMessage() for r in records if f"scheduler '{SESSION_HOLDER}'" in r.getMessage()]
    assert len(said) == 2, said
    assert said[0].endswith("; retrying; the QPU sidebar shows it offline"), said
    assert f"at {server.url} is unreachable (" in said[0]
    assert said[1] == f"qhpc: scheduler '{SESSION_HOLDER}' at {server.url} is back"
    assert all(r.levelno == logging.WARNING for r in records)
    lost = [r for r in records if "scheduler 'lost'" in r.getMessage()]
    assert len(lost) == 1  # never reachable: said once, not at each retry
