"""HAProxy in front of scheduler replicas, run from Debian's binary with the shipped config.

The test starts it on 127.0.0.1 with ``deploy/haproxy/qhpc.cfg`` as an operator would (the
addresses in the environment; one ``server`` line per replica the test runs, as an operator
adds or removes them), in the foreground as our child, and stops it by pid; it also dies with
the test session.
"""

from __future__ import annotations

import contextlib
import ctypes
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.polling import poll_until

CONFIG = Path(__file__).resolve().parents[2] / "deploy/haproxy/qhpc.cfg"
PR_SET_PDEATHSIG = 1
LIBC = ctypes.CDLL("libc.so.6", use_errno=True)


def _die_with_parent() -> None:
    LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@contextlib.contextmanager
def haproxy(port: int, replicas: list[str], log: Path) -> Iterator[str]:
    """HAProxy on 127.0.0.1:``port`` over ``replicas`` (``host:port``); yields its URL once
    it answers."""
    binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
    if not Path(binary).exists():
        pytest.fail("HAProxy is not installed: run scripts/system-deps.sh (Debian package haproxy)")
    env = {"QHPC_FRONT": f"127.0.0.1:{port}"}
    env.update({f"QHPC_REPLICA_{i}": address for i, address in enumerate(replicas, 1)})
    lines = [line for line in CONFIG.read_text().splitlines() if "server replica" not in line]
    lines += [
        f'    server replica{i} "${{QHPC_REPLICA_{i}}}" check' for i in range(1, len(replicas) + 1)
    ]
    config = log.with_suffix(".cfg")
    config.write_text("\n".join(lines) + "\n")
    with log.open("ab") as output:
        process = subprocess.Popen(
            [binary, "-db", "-f", str(config)],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        poll_until(lambda: _answers(url, process, log), "HAProxy to answer", timeout=30)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def _answers(url: str, process: subprocess.Popen[bytes], log: Path) -> bool:
    if process.poll() is not None:
        pytest.fail(f"HAProxy exited with {process.returncode}:\n{log.read_text()}")
    try:
        return httpx.get(f"{url}/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
