"""Shared fixtures: a scheduler in-process (httpx ASGI transport) and one over a real socket."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TypeVar

import httpx
import pytest

from qhpc_lab.qpu.emulated import EmulatedQPU
from qhpc_lab.scheduler import DriverFactory, SchedulerConfig, build_scheduler, create_app
from qhpc_lab.scheduler.auth import make_token

T = TypeVar("T")


def poll_until(
    check: Callable[[], T],
    what: str | Callable[[], str],
    timeout: float = 60,
    interval: float = 0.1,
) -> T:
    """``check()`` until it returns something truthy, which is returned; bounded in time,
    failing with ``what`` (a text, or a callable saying what was seen last)."""
    deadline = time.monotonic() + timeout
    while not (result := check()):
        if time.monotonic() > deadline:
            said = what() if callable(what) else what
            raise AssertionError(f"timed out after {timeout:g} s waiting for {said}")
        time.sleep(interval)
    return result


async def apoll_until(
    check: Callable[[], Awaitable[T]], what: str, timeout: float = 60, interval: float = 0.02
) -> T:
    """The asynchronous :func:`poll_until`: awaits ``check()`` between async sleeps."""
    import anyio

    deadline = time.monotonic() + timeout
    while not (result := await check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        await anyio.sleep(interval)
    return result


pytest_plugins = ["tests.fixtures_postgres", "tests.fixtures_munge"]

SECRET = "test-secret"
USER, OTHER, ADMIN = "1000", "1001", "0"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def pulser_sequence_json(atoms: int = 2, spacing: float = 6.0, duration: int = 200) -> str:
    """A small valid Pulser sequence (abstract repr) on a line of ``atoms`` atoms."""
    from pulser import Pulse, Register, Sequence
    from pulser.devices import AnalogDevice

    register = Register.from_coordinates(
        [(i * spacing - (atoms - 1) * spacing / 2, 0.0) for i in range(atoms)], prefix="q"
    )
    sequence = Sequence(register, AnalogDevice)
    sequence.declare_channel("g", "rydberg_global")
    sequence.add(Pulse.ConstantPulse(duration, 2.0, 0.0, 0.0), "g")
    sequence.measure("ground-rydberg")
    return sequence.to_abstract_repr()


@pytest.fixture(scope="session")
def sequence_json() -> str:
    return pulser_sequence_json()


def auth_header(uid: str, admin: bool = False) -> dict[str, str]:
    return {"Authorization": f"Bearer {make_token(SECRET, uid, admin)}"}


@dataclass
class Clients:
    """Per-identity httpx clients against one scheduler."""

    user: httpx.AsyncClient
    other: httpx.AsyncClient
    admin: httpx.AsyncClient
    anonymous: httpx.AsyncClient
    scheduler: object


def test_config(tmp_path: Path, **overrides: object) -> SchedulerConfig:
    values: dict[str, object] = dict(
        db=f"sqlite:///{tmp_path / 'scheduler.db'}",
        device="test",
        auth=("token",),
        token_secret=SECRET,
    )
    values.update(overrides)
    return SchedulerConfig(**values)  # type: ignore[arg-type]


test_config.__test__ = False  # a helper that tests import, not a test


def gate_profile(tmp_path: Path) -> Path:
    """``test-gate``: the fast ``test`` timing for a gate-based device that runs qasm3 only,
    for the scheduler's OpenQASM bounds; every shipped profile is the analog QPU (pulser)."""
    data = json.loads((resources.files("qhpc_lab.qpu") / "profiles" / "test.json").read_text())
    data.update(
        name="test-gate",
        description="Emulates a gate-based device (OpenQASM 3 only), not the analog QPU.",
        formats=["qasm3"],
    )
    path = tmp_path / "test-gate.json"
    path.write_text(json.dumps(data))
    return path


@contextlib.asynccontextmanager
async def in_process(
    config: SchedulerConfig, driver: DriverFactory = EmulatedQPU
) -> AsyncIterator[Clients]:
    """A started Scheduler behind its ASGI app, reached through httpx's ASGI transport."""
    scheduler = build_scheduler(config, driver)
    app = create_app(config, scheduler=scheduler)
    await scheduler.start()
    transport = httpx.ASGITransport(app=app)
    base = "http://scheduler"
    try:
        async with (
            httpx.AsyncClient(transport=transport, base_url=base, headers=auth_header(USER)) as u,
            httpx.AsyncClient(transport=transport, base_url=base, headers=auth_header(OTHER)) as o,
            httpx.AsyncClient(
                transport=transport, base_url=base, headers=auth_header(ADMIN, admin=True)
            ) as a,
            httpx.AsyncClient(transport=transport, base_url=base) as anon,
        ):
            yield Clients(u, o, a, anon, scheduler)
    finally:
        await scheduler.stop()
        scheduler.store.close()


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Clients]:
    """In-process scheduler on the fast ``test`` profile, token auth, sessions optional."""
    async with in_process(test_config(tmp_path)) as clients:
        yield clients


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Daemon:
    """A ``qhpc scheduler serve`` process on a real socket."""

    url: str
    process: subprocess.Popen[bytes]
    state_dir: Path
    args: list[str]
    env: dict[str, str]
    log: Path

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(10)

    def restart(self) -> None:
        self.process = _spawn(self.args, self.env, self.log)
        wait_healthy(self.url, self.process, self.log)


def _spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    handle = log.open("ab")
    return subprocess.Popen(args, env=env, stdout=handle, stderr=subprocess.STDOUT)


def wait_healthy(
    url: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 120
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"scheduler exited with {process.returncode}:\n{log.read_text()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"scheduler did not answer within {timeout} s:\n{log.read_text()}")


@contextlib.contextmanager
def daemon(tmp_path: Path, *extra: str, env: dict[str, str] | None = None) -> Iterator[Daemon]:
    """Start the daemon as users do (the CLI), on a free port, and stop it afterwards."""
    port = free_port()
    state = tmp_path / "state"
    environment = {
        **os.environ,
        "QHPC_STATE_DIR": str(state),
        "QHPC_TOKEN_SECRET": SECRET,
        **(env or {}),
    }
    args = [
        sys.executable,
        "-m",
        "qhpc_lab.cli",
        "scheduler",
        "serve",
        "--port",
        str(port),
        "--device",
        "test",
        *extra,
    ]
    log = tmp_path / "scheduler.log"
    process = _spawn(args, environment, log)
    handle = Daemon(f"http://127.0.0.1:{port}", process, state, args, environment, log)
    try:
        wait_healthy(handle.url, process, log)
        yield handle
    finally:
        if handle.process.poll() is None:
            handle.process.terminate()
            try:
                handle.process.wait(10)
            except subprocess.TimeoutExpired:
                handle.process.kill()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Daemon]:
    with daemon(tmp_path) as handle:
        yield handle


async def wait_for_status(
    client: httpx.AsyncClient,
    job_id: int,
    statuses: tuple[str, ...] = ("DONE",),
    timeout: float = 60,
) -> dict:
    """Poll a job until it reaches one of ``statuses`` (tests only; clients use /events)."""
    import anyio

    deadline = time.monotonic() + timeout
    while True:
        job = (await client.get(f"/jobs/{job_id}")).json()
        if job["status"] in statuses:
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} stuck in {job['status']}: {job}")
        await anyio.sleep(0.02)


async def wait_until_started(client: httpx.AsyncClient, job_id: int, timeout: float = 180) -> dict:
    """Until at least one chunk of the job has run (its shots_done moved)."""
    import anyio

    with anyio.fail_after(timeout):
        while True:
            job = (await client.get(f"/jobs/{job_id}")).json()
            if job["shots_done"] > 0:
                return job
            await anyio.sleep(0.01)


async def development_overtakes_production(
    api: Clients, sequence: str, production_chunks: int
) -> tuple[dict, dict]:
    """Another user's production job is mid-run when a development job arrives and goes
    ahead at the next chunk boundary; both are waited to DONE. Returns (production,
    development) as submitted."""
    chunk = api.scheduler.driver.profile.chunk_shots  # type: ignore[attr-defined]
    production = (
        await api.other.post(
            "/jobs",
            json={
                "sequence": sequence,
                "shots": production_chunks * chunk,
                "job_class": "production",
            },
        )
    ).json()
    await wait_until_started(api.other, production["id"])
    development = (
        await api.user.post(
            "/jobs", json={"sequence": sequence, "shots": chunk, "job_class": "development"}
        )
    ).json()
    await wait_for_status(api.user, development["id"], timeout=120)
    await wait_for_status(api.other, production["id"], timeout=120)
    return production, development
