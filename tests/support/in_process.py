"""A scheduler in the test's own process, reached through httpx's ASGI transport."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import httpx

from qhpc_lab.qpu.emulated import EmulatedQPU
from qhpc_lab.scheduler import DriverFactory, SchedulerConfig, build_scheduler, create_app
from tests.support.identities import ADMIN, OTHER, SECRET, USER, auth_header
from tests.support.polling import wait_for_status, wait_until_started


@dataclass
class Clients:
    """Per-identity httpx clients against one scheduler."""

    user: httpx.AsyncClient
    other: httpx.AsyncClient
    admin: httpx.AsyncClient
    anonymous: httpx.AsyncClient
    scheduler: object


def scheduler_config(tmp_path: Path, **overrides: object) -> SchedulerConfig:
    """The tests' scheduler settings: SQLite in ``tmp_path``, the fast ``test`` profile,
    token auth with :data:`~tests.support.identities.SECRET`; ``overrides`` on top."""
    values: dict[str, object] = dict(
        db=f"sqlite:///{tmp_path / 'scheduler.db'}",
        device="test",
        auth=("token",),
        token_secret=SECRET,
    )
    values.update(overrides)
    return SchedulerConfig(**values)  # type: ignore[arg-type]


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


def long_chunk_profile(tmp_path: Path, chunk_seconds: float) -> Path:
    """``test-long``: the ``test`` profile with chunks of ``chunk_seconds``, long enough for a
    job to be cancelled while its chunk is on the device."""
    data = json.loads((resources.files("qhpc_lab.qpu") / "profiles" / "test.json").read_text())
    data.update(name="test-long", chunk_seconds=chunk_seconds)
    path = tmp_path / "test-long.json"
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
