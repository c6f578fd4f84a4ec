"""Warden's own QPU worker driving ``qhpc qpu serve``: is the stand-in a test bed for Warden sites?

Runs ``LocalQPUWorker.execute_job`` of a Warden checkout (pasqal-io/warden: its worker, its QPU
client and types, unchanged) against ``qhpc qpu serve --profile test`` in both result formats:
a job to its end, a job whose polling times out while it runs (the worker cancels, the device
answers 3003, the job runs to DONE), and a job while the device is DOWN (the worker waits, then
gives up). Warden's settings module needs pydantic-settings and YAML, which qhpc-lab does not
install: it is replaced by the attributes the worker reads. Not part of ``make test`` (it needs
Warden's source); the outcome of the last run is in docs/scheduler.md.

    git clone https://github.com/pasqal-io/warden /tmp/warden
    .venv/bin/python scripts/warden_worker_check.py --warden /tmp/warden
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import subprocess
import sys
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.support.daemons import free_port  # noqa: E402
from tests.support.programs import pulser_sequence_json  # noqa: E402


class QPUSettings:
    """What Warden's ``QPUConfig`` gives its QPU client: the address, retries, an httpx client."""

    def __init__(self, uri: str, retry_max: int = 3, retry_sleep_s: float = 0.1) -> None:
        self.uri, self.retry_max, self.retry_sleep_s = uri, retry_max, retry_sleep_s
        self._client = httpx.Client(timeout=30)

    @property
    def client(self) -> httpx.Client:
        self._client.base_url = self.uri + "/api/v1"
        return self._client


def import_warden(checkout: Path) -> tuple[Any, Any]:
    """Warden's ``LocalQPUWorker`` and ``AsyncQPUClient``, its settings module replaced."""
    sys.path.insert(0, str(checkout))
    settings = types.ModuleType("warden.lib.config")
    settings.QPUConfig = QPUSettings  # type: ignore[attr-defined]
    settings.Config = types.SimpleNamespace  # type: ignore[attr-defined]
    sys.modules["warden.lib.config"] = settings
    from warden.lib.qpu_client import AsyncQPUClient
    from warden.scheduler.worker import LocalQPUWorker

    return LocalQPUWorker, AsyncQPUClient


@contextlib.contextmanager
def served(result_format: str) -> Iterator[str]:
    port = free_port()
    command = [sys.executable, "-m", "qhpc_lab.cli", "qpu", "serve", "--profile", "test"]
    command += ["--port", str(port), "--setup", "0.3", "--result-format", result_format]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, cwd=REPO)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            with contextlib.suppress(httpx.HTTPError):
                httpx.get(f"{url}/api/v1/system/operational", timeout=1)
                break
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(10)


async def statuses(worker: Any, nb_run: int) -> list[Any]:
    """Every job state the worker would write to Warden's database, in order."""
    queue: asyncio.Queue[Any] = asyncio.Queue()
    await worker.execute_job(queue, nb_run=nb_run, sequence=pulser_sequence_json(), batch_id="42")
    return [queue.get_nowait() for _ in range(queue.qsize())]


async def check(url: str, worker_class: Any, client_class: Any) -> list[str]:
    config = types.SimpleNamespace(qpu=QPUSettings(url))
    config.scheduler = types.SimpleNamespace(
        qpu_polling_timeout_s=30,
        qpu_polling_interval_s=0.2,
        job_polling_timeout_s=60,
        job_polling_interval_s=0.1,
    )
    worker = worker_class(config)
    said = [f"specs: {json.loads(await client_class(config.qpu).get_specs())['name']}"]
    states = await statuses(worker, 200)
    last = states[-1]
    said.append(
        f"a job: {' → '.join(dict.fromkeys(s.status for s in states))}, result {last.result}"
    )
    config.scheduler.job_polling_timeout_s = 0.4
    states = await statuses(worker, 4000)
    said.append(f"timed out while running (cancel → 3003): ends {states[-1].status}")
    httpx.post(f"{url}/stand-in/down", json={"reason": "check"}, timeout=10)
    config.scheduler.qpu_polling_timeout_s = 1.0
    states = await statuses(worker, 10)
    said.append(f"device DOWN for longer than the worker waits: {states[-1].status}")
    return said


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warden", type=Path, required=True, help="a pasqal-io/warden checkout")
    args = parser.parse_args()
    worker_class, client_class = import_warden(args.warden)
    for result_format in ("json", "python"):
        with served(result_format) as url:
            for line in asyncio.run(check(url, worker_class, client_class)):
                print(f"{result_format}: {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
