"""The daemon stops cleanly on SIGTERM while clients follow /events: the streams end, the
dispatcher stops, the process exits 0 and its log holds no error and no traceback (systemd
stops it so at every restart; an operator reads that log)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx

from tests.support.daemons import daemon
from tests.support.identities import auth_header


def test_sigterm_with_open_event_streams_exits_quietly(tmp_path: Path) -> None:
    with daemon(tmp_path) as server, contextlib.ExitStack() as streams:
        for user in ("alice", "bob"):
            client = streams.enter_context(httpx.Client(base_url=server.url, timeout=30))
            stream = streams.enter_context(
                client.stream("GET", "/events", headers=auth_header(user))
            )
            assert stream.status_code == 200
            next(stream.iter_lines())  # open, and it has spoken
        server.process.send_signal(signal.SIGTERM)
        try:
            code = server.process.wait(30)
        except subprocess.TimeoutExpired:
            server.process.kill()
            raise AssertionError(f"no exit 30 s after SIGTERM:\n{server.log.read_text()}") from None
    log = server.log.read_text()
    assert code == 0, log
    assert "ERROR" not in log and "Traceback" not in log, log


def test_a_taken_port_is_named_before_the_scheduler_starts(tmp_path: Path) -> None:
    """No "listening" line for a port another program holds, and a message naming the port."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "qhpc_lab.cli", "scheduler", "serve", "--port", str(port)],
            env={**os.environ, "QHPC_STATE_DIR": str(tmp_path)},
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"port {port} is taken" in done.stderr and "listening" not in done.stdout
