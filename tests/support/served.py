"""The scheduler's app under its own uvicorn settings (:mod:`qhpc_lab.scheduler.serving`), in
a thread, on a real socket: for what only a real server shows (event streams, connections,
client addresses) without the seconds a daemon process takes to start."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any, NamedTuple

import uvicorn

from qhpc_lab.qpu.emulated import EmulatedQPU
from qhpc_lab.scheduler import create_app
from qhpc_lab.scheduler.config import SchedulerConfig
from qhpc_lab.scheduler.serving import uvicorn_config


class ServedApp(NamedTuple):
    url: str
    port: int
    scheduler: Any
    """The app's :class:`~qhpc_lab.scheduler.core.Scheduler`, for a test that plants a fault."""


@contextlib.contextmanager
def served(config: SchedulerConfig) -> Iterator[ServedApp]:
    """The app of ``config`` (its ``port``) served until the block ends."""
    app = create_app(config, driver=EmulatedQPU)
    server = uvicorn.Server(uvicorn_config(app, config))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        yield ServedApp(f"http://127.0.0.1:{config.port}", config.port, app.state.scheduler)
    finally:
        server.should_exit = True
        thread.join(30)
