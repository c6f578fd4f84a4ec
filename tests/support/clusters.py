"""The dev clusters of the Slurm, Grid Engine and JupyterHub tests, and what tests do on them.

A cluster (``qhpc dev-cluster``) is started as root in a fresh directory; the tests add real
unprivileged users, run their jobs and ask the cluster's scheduler, as an administrator over
MUNGE, what became of their sessions and QPU jobs.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import pwd
import re
import secrets
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from qhpc_lab.hpc.devcluster import DevCluster, DevClusterError, GridEngineCluster
from qhpc_lab.hpc.devcluster.processes import running
from tests.support.daemons import free_port
from tests.support.polling import poll_until
from tests.support.reporting import say

RUNUSER = shutil.which("runuser") or "/usr/sbin/runuser"

ClusterT = TypeVar("ClusterT", DevCluster, GridEngineCluster)

SEQUENCE_CODE = """\
from pulser import Pulse, Register, Sequence
from pulser.devices import AnalogDevice

register = Register.from_coordinates([(-3.0, 0.0), (3.0, 0.0)], prefix="q")
sequence = Sequence(register, AnalogDevice)
sequence.declare_channel("g", "rydberg_global")
sequence.add(Pulse.ConstantPulse(200, 2.0, 0.0, 0.0), "g")
sequence.measure("ground-rydberg")
"""
"""The users' two-atom Pulser sequence, as a batch script and a notebook cell build it."""

JOB_SCRIPT = f'''\
"""A batch user's script: a Pulser sequence through qhpc_lab.submit."""
import json
import sys

import qhpc_lab
{SEQUENCE_CODE}
if sys.argv[1] == "run":
    job = qhpc_lab.submit(sequence, shots=100)
    print("target", job.target, flush=True)
    print("counts", json.dumps(job.result().counts), flush=True)
else:  # queue N: leave N jobs in the QPU's queue and return
    ids = [qhpc_lab.submit(sequence, shots=100).id for _ in range(int(sys.argv[2]))]
    print("queued", json.dumps(ids), flush=True)
'''

EMULATOR_ANNOUNCED = "programs run on the local emulator"


@dataclass(frozen=True)
class User:
    name: str
    uid: int
    home: Path


class SchedulerView:
    """What a test asks the cluster's scheduler, as root (an administrator) over MUNGE, about
    a first-level job's session and QPU jobs."""

    admin: httpx.Client

    def sessions(self, job_id: str) -> list[dict[str, Any]]:
        response = self.admin.get("/sessions")
        response.raise_for_status()
        return [s for s in response.json() if s["scheduler_job_id"] == job_id]

    def revoked_session(self, job_id: str) -> dict[str, Any]:
        """The job's one session once the job-end hook has revoked it."""

        def revoked() -> dict[str, Any] | None:
            sessions = self.sessions(job_id)
            assert len(sessions) == 1, sessions
            return sessions[0] if sessions[0]["revoked_at"] else None

        return poll_until(revoked, f"the job-end hook revokes job {job_id}'s session", 60)

    def qpu_jobs(self, job_id: str) -> list[dict[str, Any]]:
        response = self.admin.get("/jobs", params={"limit": 1000})
        response.raise_for_status()
        return [j for j in response.json() if j["slurm_job_id"] == job_id]


@dataclass
class Site(SchedulerView):
    cluster: DevCluster
    alice: User
    bob: User
    job_script: Path
    admin: httpx.Client
    """Root's MUNGE identity: an administrator of the scheduler."""

    def run_as(
        self, user: User, *command: str, env: dict[str, str] | None = None, timeout: float = 240
    ) -> subprocess.CompletedProcess[str]:
        """``command`` as ``user`` with a clean environment that reaches this cluster."""
        return run_as(self.cluster, user, *command, env=env, timeout=timeout)

    def python_job(self, mode: str = "run", *extra: str) -> str:
        return f"{self.cluster.python} {self.job_script} {mode} {' '.join(extra)}".strip()

    def sbatch(self, user: User, *options: str, command: str) -> tuple[str, Path]:
        """Submit; return the Slurm job id and its output file (stdout and stderr)."""
        output = user.home / f"slurm-{secrets.token_hex(4)}.out"
        done = self.run_as(
            user, "sbatch", "--parsable", "-o", str(output), *options, "--wrap", command
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.strip().split(";")[0], output

    def wait_job(self, job_id: str, timeout: float = 240) -> str:
        """Block until the Slurm job ends; its final state (COMPLETED, CANCELLED, ...)."""
        return poll_until(lambda: final_state(self, job_id), f"Slurm job {job_id} ends", timeout)

    def session_file(self, job_id: str) -> Path:
        return self.cluster.run_dir / f"job-{job_id}.json"


def run_as(
    cluster: DevCluster | GridEngineCluster,
    user: User,
    *command: str,
    env: dict[str, str] | None = None,
    timeout: float = 240,
) -> subprocess.CompletedProcess[str]:
    """``command`` as ``user`` with a clean environment that reaches ``cluster``."""
    environ = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "HOME": str(user.home),
        **cluster.environ,
        **(env or {}),
    }
    return subprocess.run(
        [RUNUSER, "-u", user.name, "--", *command],
        env=environ,
        cwd=user.home,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def final_state(site: Site, job_id: str) -> str | None:
    """A Slurm job's final state (COMPLETED, CANCELLED, ...), or None while it is not over."""
    done = subprocess.run(
        ["scontrol", "show", "job", "-o", job_id],
        capture_output=True,
        text=True,
        timeout=10,
        env={**os.environ, **site.cluster.environ},
    )
    match = re.search(r"JobState=(\S+)", done.stdout)
    state = match.group(1) if match else None
    return None if state in (None, "PENDING", "RUNNING", "CONFIGURING", "COMPLETING") else state


@contextlib.contextmanager
def dev_cluster(
    kind: type[ClusterT],
    what: str,
    config: pytest.Config,
    ports: tuple[str, ...],
    **settings: Any,
) -> Iterator[ClusterT]:
    """A ``kind`` of dev cluster with each of ``ports`` free and ``settings``, started in a
    fresh directory the daemons and the job users can read; stopped afterwards, every daemon
    it started gone."""
    if os.geteuid() != 0:
        pytest.fail(f"the {what} tests need root (its daemons, useradd): run them as root")
    directory = Path(tempfile.mkdtemp(prefix=f"qhpc-{what.lower().replace(' ', '')}-"))
    directory.chmod(0o755)
    cluster = kind(directory, **{port: free_port() for port in ports}, **settings)
    started = time.monotonic()
    try:
        cluster.start()
    except DevClusterError as err:
        shutil.rmtree(directory, ignore_errors=True)
        pytest.fail(f"the {what} dev cluster did not start: {err}")
    say(
        config,
        f"\n  {what} dev cluster started in {time.monotonic() - started:.1f} s ({directory})",
    )
    try:
        yield cluster
    finally:
        started_pids = cluster.services.pids()
        cluster.stop()
        shutil.rmtree(directory, ignore_errors=True)
        for service, pid in started_pids.items():
            marker = cluster.SERVICES[service]
            assert not pid or not running(pid, marker), f"{service} outlived stop"


@contextlib.contextmanager
def slurm_dev_cluster(config: pytest.Config) -> Iterator[DevCluster]:
    """The single-QPU Slurm dev cluster, on free ports (a module's ``cluster`` fixture)."""
    ports = ("scheduler_port", "qpu_port", "slurmctld_port", "slurmd_port")
    with dev_cluster(DevCluster, "Slurm", config, ports) as started:
        yield started


@contextlib.contextmanager
def scheduler_unreachable(hooks_config: Path) -> Iterator[None]:
    """The hooks' settings name a port nobody listens on, for the duration."""
    saved = hooks_config.read_text()
    dead = f"http://127.0.0.1:{free_port()}"
    hooks_config.write_text(re.sub(r'scheduler_url = ".*"', f'scheduler_url = "{dead}"', saved))
    try:
        yield
    finally:
        hooks_config.write_text(saved)


@dataclass
class HostileListener:
    """An HTTP server standing for one a hostile user runs: it records every request that
    reaches it (a root hook tricked into calling it would send root's MUNGE credential)."""

    url: str
    requests: list[tuple[str, str, dict[str, str]]]


@contextlib.contextmanager
def hostile_listener() -> Iterator[HostileListener]:
    seen: list[tuple[str, str, dict[str, str]]] = []

    class Record(http.server.BaseHTTPRequestHandler):
        def _answer(self) -> None:
            seen.append((self.command, self.path, dict(self.headers)))
            body = b'{"id": "stolen", "rows": []}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_DELETE = do_PUT = do_CONNECT = _answer

        def log_message(self, *_: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Record)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield HostileListener(f"http://127.0.0.1:{server.server_address[1]}", seen)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def hostile_bin(home: Path, owner: User, commands: tuple[str, ...]) -> tuple[Path, Path]:
    """A directory of ``commands`` in a user's home, each of which leaves a marker file (with
    the uid that ran it) when run: what a user puts first on a PATH a root hook might use."""
    folder = home / f"evil-{secrets.token_hex(3)}"
    folder.mkdir()
    marker = folder / "ran"
    for name in commands:
        script = folder / name
        script.write_text(f"#!/bin/sh\nid -u >> {marker}\nexit 1\n")
        script.chmod(0o755)
    for item in (folder, *folder.iterdir()):
        os.chown(item, owner.uid, owner.uid)
    return folder, marker


def write_job_script(cluster: DevCluster | GridEngineCluster) -> Path:
    """JOB_SCRIPT where every job user can read it."""
    job_script = cluster.directory / "jobs" / "qpu_job.py"
    job_script.parent.mkdir(mode=0o755)
    job_script.write_text(JOB_SCRIPT)
    job_script.chmod(0o644)
    return job_script


def add_user(cluster: DevCluster | GridEngineCluster) -> User:
    """A new unprivileged Unix user who can run the cluster's Python."""
    name = f"qhpc{secrets.token_hex(3)}"
    subprocess.run(["useradd", "-m", "-s", "/bin/bash", name], check=True, capture_output=True)
    entry = pwd.getpwnam(name)
    user = User(name, entry.pw_uid, Path(entry.pw_dir))
    check = subprocess.run(
        [RUNUSER, "-u", name, "--", cluster.python, "-c", "import qhpc_lab.client"],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert check.returncode == 0, f"{name} cannot run {cluster.python}: {check.stderr}"
    return user


def remove_user(cluster: DevCluster, user: User) -> None:
    """Cancel the user's Slurm jobs, wait until they are gone, delete the user."""
    env = {**os.environ, **cluster.environ}
    subprocess.run(["scancel", "-u", user.name], capture_output=True, timeout=10, env=env)
    with_jobs = ["squeue", "-h", "-u", user.name, "-o", "%i"]

    def no_jobs() -> bool:
        done = subprocess.run(with_jobs, capture_output=True, text=True, timeout=10, env=env)
        return not done.stdout.strip()

    poll_until(no_jobs, f"{user.name}'s jobs are gone", 30)
    subprocess.run(["userdel", "-r", "-f", user.name], capture_output=True, timeout=30)


def printed_counts(output: str) -> dict[str, int]:
    """The counts a job script printed (its ``counts {...}`` line)."""
    match = re.search(r"^counts (.*)$", output, re.MULTILINE)
    assert match, output
    return json.loads(match.group(1))
