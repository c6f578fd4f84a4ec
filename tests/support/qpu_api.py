"""``qhpc qpu serve`` for tests: the emulated QPU behind Pasqal's QPU API, as a process."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from qhpc_lab.qpu import DeviceProfile
from qhpc_lab.qpu.api import QPUApiDriver, QPUApiSettings
from qhpc_lab.scheduler.app import DriverFactory
from tests.support.daemons import free_port
from tests.support.polling import poll_until


@contextlib.contextmanager
def served(tmp_path: Path, *extra: str) -> Iterator[httpx.Client]:
    """``qhpc qpu serve --profile test`` on a free port; a client at its QPU API base."""
    port = free_port()
    log = tmp_path / f"qpu-{port}.log"
    command = [sys.executable, "-m", "qhpc_lab.cli", "qpu", "serve", "--profile", "test"]
    process = subprocess.Popen(
        [*command, "--port", str(port), *extra],
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=f"{base}/api/v1", timeout=30) as client:

            def answers() -> bool:
                assert process.poll() is None, log.read_text()
                with contextlib.suppress(httpx.HTTPError):
                    return client.get("/system/operational").status_code == 200
                return False

            poll_until(answers, "qhpc qpu serve answers", 120)
            yield client
    finally:
        process.terminate()
        process.wait(30)


def stand_in(qpu: httpx.Client) -> httpx.Client:
    """A client at the stand-in's own routes (``/stand-in/...``, outside the QPU API)."""
    base = str(qpu.base_url).removesuffix("/").removesuffix("/api/v1")
    return httpx.Client(base_url=f"{base}/stand-in", timeout=30)


def inject(qpu: httpx.Client, **faults: Any) -> None:
    """Replace the stand-in's injected faults (none: clear them)."""
    with stand_in(qpu) as admin:
        admin.post("/faults", json=faults).raise_for_status()


def device_jobs(qpu: httpx.Client) -> list[dict[str, Any]]:
    """Every job the device was given, in creation order."""
    with stand_in(qpu) as admin:
        return admin.get("/jobs").json()["data"]


def base_url(qpu: httpx.Client) -> str:
    """The stand-in's address (what ``--qpu-url`` names), from a client at its QPU API."""
    return str(qpu.base_url).removesuffix("/").removesuffix("/api/v1")


def connecting(qpu: httpx.Client, **settings: Any) -> DriverFactory:
    """A driver factory for the device, with the ``test`` profile's timing as first guesses
    (100-shot chunks of 50 ms) and short time-outs."""
    values: dict[str, Any] = dict(
        time_per_shot_s=0.0005, chunk_seconds=0.05, timeout_s=1.0, retry_for_s=10.0
    )
    values.update(status_poll_s=0.1, **settings)
    config = QPUApiSettings(base_url(qpu), **values)

    def connect(profile: DeviceProfile, calibrated_at: float | None, *, calibration_id: int = 1):
        return QPUApiDriver.connect(config, calibrated_at, calibration_id=calibration_id)

    return connect
