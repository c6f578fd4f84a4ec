"""JupyterHub on the login node, for real: a hub with the shipped example config
(qhpc_lab/hpc/jupyterhub_config.py), configurable-http-proxy from npm and the dev cluster.

A throwaway Unix user in the shipped config's allowed group logs in through the hub's login
form (PAM, as shipped); the hub's batchspawner ``SlurmSpawner`` starts their Lab in a Slurm
job holding ``qpu:1``; the Lab's server extension reports the allocation's QPU, a ``%%qpu``
cell runs through the Lab's kernel (REST API + kernel websocket, through the hub's proxy) and
returns counts; stopping the server ends the job and revokes its scheduler session. Each
scenario prints its duration; none asserts on time. Whatever cannot be installed or started
fails the test, never skips it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import websocket

from qhpc_lab.hpc.devcluster import DevCluster
from qhpc_lab.hpc.slurm import REVOKE_REASON
from tests.support.clusters import (
    SEQUENCE_CODE,
    SchedulerView,
    User,
    add_user,
    remove_user,
)
from tests.support.daemons import free_port
from tests.support.jupyter_hub import (
    allow_login,
    hub_config,
    log_tail,
    login,
    running_hub,
    singleuser_venv,
    spawner_environment,
)
from tests.support.munge import FreshCredential
from tests.support.polling import poll_until
from tests.support.reporting import say

pytestmark = [pytest.mark.munge, pytest.mark.slow, pytest.mark.timeout(900)]


SETUP_CELL = SEQUENCE_CODE
QPU_CELL = "%%qpu --shots 100 -o result\nsequence"
REPORT_CELL = (
    'import json\nprint("target", result.target)\nprint("counts", json.dumps(result.counts))'
)


@pytest.fixture(scope="module")
def cluster(batch_slurm_cluster: DevCluster) -> DevCluster:
    """The session's Slurm dev cluster (conftest), shared with the other modules on it."""
    return batch_slurm_cluster


@dataclass
class Hub(SchedulerView):
    url: str
    cluster: DevCluster
    user: User
    token: str
    """The user's own API token, made through their login session."""
    admin: httpx.Client
    """The scheduler, as root (an administrator) over MUNGE."""
    log: Path

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"token {self.token}"}

    def api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.request(
            method, f"{self.url}{path}", headers=self.headers, timeout=30, **kwargs
        )

    def server(self) -> dict[str, Any] | None:
        """The user's default server as the hub sees it (None when there is none)."""
        response = self.api("GET", f"/hub/api/users/{self.user.name}")
        response.raise_for_status()
        return response.json()["servers"].get("")

    def slurm_jobs(self) -> list[str]:
        done = subprocess.run(
            ["squeue", "-h", "-u", self.user.name, "-o", "%i"],
            capture_output=True,
            text=True,
            timeout=10,
            env={**os.environ, **self.cluster.environ},
        )
        return done.stdout.split()

    def job_details(self, job_id: str) -> str:
        return subprocess.run(
            ["scontrol", "show", "job", "-o", job_id],
            capture_output=True,
            text=True,
            timeout=10,
            env={**os.environ, **self.cluster.environ},
        ).stdout

    def stop_server(self) -> None:
        """Stop the user's server through the hub API and wait until the hub says it is gone."""
        if self.server() is None:
            return
        response = self.api("DELETE", f"/hub/api/users/{self.user.name}/server")
        assert response.status_code in (202, 204), response.text
        poll_until(lambda: self.server() is None, "the hub stops the server", 120)


@pytest.fixture(scope="module")
def hub(cluster: DevCluster, pytestconfig: pytest.Config) -> Iterator[Hub]:
    """A running hub (shipped config) with one logged-in user; all stopped afterwards."""
    started = time.monotonic()
    directory = Path(tempfile.mkdtemp(prefix="qhpc-hub-"))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    extra = 'c.SlurmSpawner.req_runtime = "0:30:00"\n' + spawner_environment(cluster.environ)
    config = hub_config(directory, port, extra)
    # batchspawner submits with the spawner's environment (SLURM_CONF in the config) but polls
    # and cancels with the hub's own
    env = {**cluster.environ, "QHPC_VENV": str(singleuser_venv(cluster))}
    user: User | None = None
    try:
        with running_hub(config, url, env) as log_path:
            user = add_user(cluster)
            allow_login(user)
            token = login(url, user.name)
            say(
                pytestconfig,
                f"\n  scenario [hub + proxy up, {user.name} logged in]: "
                f"{time.monotonic() - started:.1f} s",
            )
            with httpx.Client(
                base_url=cluster.scheduler_url, auth=FreshCredential(), timeout=10
            ) as admin:
                hub = Hub(url, cluster, user, token, admin, log_path)
                try:
                    yield hub
                finally:
                    with contextlib.suppress(Exception):
                        hub.stop_server()
    finally:
        if user is not None:
            remove_user(cluster, user)
        shutil.rmtree(directory, ignore_errors=True)


def _logs(hub: Hub) -> str:
    """The hub's log and the spawner jobs' output, for a failed spawn."""
    jobs = sorted(hub.user.home.glob("jupyterhub_slurmspawner_*.log"))
    return "\n".join(
        [f"hub log:\n{log_tail(hub.log)}", *(f"{job.name}:\n{log_tail(job)}" for job in jobs)]
    )


@dataclass
class Lab:
    job_id: str
    url: str
    """The user's server through the hub's proxy."""


@pytest.fixture(scope="module")
def lab(hub: Hub, pytestconfig: pytest.Config) -> Lab:
    """The user's Lab, spawned by the hub into a Slurm job holding the licence."""
    started = time.monotonic()
    response = hub.api("POST", f"/hub/api/users/{hub.user.name}/server")
    if response.status_code not in (201, 202):
        pytest.fail(f"spawn refused ({response.status_code}):\n{_logs(hub)}")

    def ready() -> bool:
        server = hub.server()
        assert server is not None, "the spawn failed: see the hub log"
        return server["ready"]

    try:
        poll_until(ready, "the hub reports the Lab ready", 300)
    except AssertionError as err:
        pytest.fail(f"{err}\n{_logs(hub)}")
    [job_id] = hub.slurm_jobs()
    say(
        pytestconfig,
        f"\n  scenario [Lab spawned into Slurm job {job_id} with -L qpu:1]: "
        f"{time.monotonic() - started:.1f} s",
    )
    return Lab(job_id, f"{hub.url}/user/{hub.user.name}")


def test_spawned_job_holds_the_licence_and_a_session(hub: Hub, lab: Lab) -> None:
    details = hub.job_details(lab.job_id)
    assert "JobState=RUNNING" in details and "Licenses=qpu:1" in details, details
    [session] = hub.sessions(lab.job_id)
    assert (session["user_id"], session["qpu_slots"]) == (str(hub.user.uid), 1)
    assert session["revoked_at"] is None


def test_server_extension_reports_the_allocation_qpu(
    hub: Hub, lab: Lab, report: Callable[[str], None]
) -> None:
    response = httpx.get(f"{lab.url}/qhpc/api/targets", headers=hub.headers, timeout=30)
    assert response.status_code == 200, response.text
    answer = response.json()
    targets = {t["name"]: t for t in answer["targets"]}
    qpu = targets.get(hub.cluster.licence)
    assert qpu is not None, answer
    assert (qpu["kind"], qpu["type"]) == ("scheduler", "pasqal-local"), qpu
    assert qpu["reachable"] and qpu["default"] and qpu["state"] == "ONLINE", qpu
    assert "QRMI_JOB_QPU_RESOURCES" in qpu["origin"], qpu
    assert answer["default"] == hub.cluster.licence
    assert hub.sessions(lab.job_id)[0]["id"] not in response.text  # never sent to a browser
    report("server extension in the spawned Lab: GET /qhpc/api/targets reports the QPU")


def _execute(channel: websocket.WebSocket, code: str, timeout: float = 240) -> str:
    """Run ``code`` in the kernel; its stream output. Fails on an error reply."""
    msg_id = uuid.uuid4().hex
    channel.send(
        json.dumps(
            {
                "header": {
                    "msg_id": msg_id,
                    "msg_type": "execute_request",
                    "username": "test",
                    "session": uuid.uuid4().hex,
                    "version": "5.3",
                    "date": "",
                },
                "parent_header": {},
                "metadata": {},
                "content": {
                    "code": code,
                    "silent": False,
                    "store_history": True,
                    "user_expressions": {},
                    "allow_stdin": False,
                    "stop_on_error": True,
                },
                "channel": "shell",
                "buffers": [],
            }
        )
    )
    output: list[str] = []
    reply: dict[str, Any] | None = None
    idle = False
    deadline = time.monotonic() + timeout
    while reply is None or not idle:
        channel.settimeout(max(deadline - time.monotonic(), 0.1))
        message = json.loads(channel.recv())
        if message.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        kind, content = message["msg_type"], message["content"]
        if kind == "stream":
            output.append(content["text"])
        elif kind == "error":
            output.append("\n".join(content["traceback"]))
        elif kind == "execute_reply":
            reply = content
        elif kind == "status" and content["execution_state"] == "idle":
            idle = True
    assert reply["status"] == "ok", "".join(output) or reply
    return "".join(output)


def test_qpu_cell_runs_through_the_labs_kernel(
    hub: Hub, lab: Lab, report: Callable[[str], None]
) -> None:
    started = hub.api("POST", f"/user/{hub.user.name}/api/kernels", json={"name": "python3-qpu"})
    assert started.status_code == 201, started.text
    kernel = started.json()["id"]
    try:
        socket_url = re.sub(r"^http", "ws", f"{lab.url}/api/kernels/{kernel}/channels")
        channel = websocket.create_connection(
            socket_url, header=[f"Authorization: token {hub.token}"], timeout=60
        )
        try:
            _execute(channel, SETUP_CELL)
            _execute(channel, QPU_CELL)
            text = _execute(channel, REPORT_CELL)
        finally:
            channel.close()
    finally:
        hub.api("DELETE", f"/user/{hub.user.name}/api/kernels/{kernel}")
    assert f"target {hub.cluster.licence}\n" in text, text
    counts = json.loads(re.search(r"^counts (.*)$", text, re.MULTILINE).group(1))
    assert sum(counts.values()) == 100
    response = hub.admin.get("/jobs", params={"limit": 1000})
    response.raise_for_status()
    [qpu_job] = [j for j in response.json() if j["slurm_job_id"] == lab.job_id]
    assert (qpu_job["status"], qpu_job["user_id"]) == ("DONE", str(hub.user.uid))
    report("%%qpu --shots 100 through the Lab's kernel (websocket via the proxy): counts")


def test_stopping_the_server_ends_the_job_and_revokes_the_session(
    hub: Hub, lab: Lab, report: Callable[[str], None]
) -> None:
    hub.stop_server()
    poll_until(lambda: lab.job_id not in hub.slurm_jobs(), f"Slurm job {lab.job_id} ends", 60)

    def revoked() -> dict[str, Any] | None:
        [session] = hub.sessions(lab.job_id)
        return session if session["revoked_at"] else None

    session = poll_until(revoked, "the Epilog revokes the session", 60)
    assert session["revoke_reason"] == REVOKE_REASON
    report("server stopped through the hub API: Slurm job ended, session revoked")
