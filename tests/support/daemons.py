"""``qhpc scheduler serve`` as users start it: a process on a free port of 127.0.0.1."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.support.identities import SECRET


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
        self.process = spawn(self.args, self.env, self.log)
        wait_healthy(self.url, self.process, self.log)


def spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """``args`` as a process with ``env``, its output appended to ``log``."""
    handle = log.open("ab")
    return subprocess.Popen(args, env=env, stdout=handle, stderr=subprocess.STDOUT)


def wait_healthy(
    url: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 120
) -> None:
    deadline = time.monotonic() + timeout
    # One client for every try: httpx.get builds a client (and its TLS context) per call,
    # about 25 ms of CPU taken from the daemon's own start ten times a second.
    with httpx.Client(timeout=1) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(
                    f"scheduler exited with {process.returncode}:\n{log.read_text()}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if client.get(f"{url}/health").status_code == 200:
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
    process = spawn(args, environment, log)
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
