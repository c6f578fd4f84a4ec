"""A real PostgreSQL server for the test session, started from Debian's binaries.

The store must behave the same on PostgreSQL as on SQLite, so the tests run a real server:
a throw-away cluster in a temporary directory, on 127.0.0.1 with a free port and its unix
socket inside that directory. The server is our child, stopped when the session ends, and it
also stops when the session is killed outright (a CI timeout): no server outlives its tests.
"""

from __future__ import annotations

import contextlib
import ctypes
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa

from tests.support.daemons import free_port

BINARIES = "/usr/lib/postgresql/*/bin"
PR_SET_PDEATHSIG = 1
INITDB_OPTIONS = ["--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync"]
# fsync off: the tests kill the scheduler, never the database server.
SERVER_OPTIONS = ["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"]
LIBC = ctypes.CDLL("libc.so.6", use_errno=True)  # loaded here, not in a forked child


def _bin_dir() -> Path:
    """The newest installed PostgreSQL's bin directory, or a test failure saying what to do."""
    found = sorted(
        (Path(d) for d in glob.glob(BINARIES) if Path(d, "initdb").exists()),
        key=lambda d: int(d.parent.name) if d.parent.name.isdigit() else 0,
    )
    if not found:
        pytest.fail(
            f"PostgreSQL is not installed (no initdb under {BINARIES}): "
            "run scripts/system-deps.sh (Debian package postgresql)"
        )
    return found[-1]


def _as_owner() -> dict[str, Any]:
    """Popen arguments that run a command as ``postgres``: PostgreSQL refuses to run as root."""
    if os.geteuid() != 0:
        return {}
    try:
        owner = pwd.getpwnam("postgres")
    except KeyError:
        pytest.fail("the postgres user does not exist: reinstall Debian's postgresql package")
    return {"user": owner.pw_uid, "group": owner.pw_gid, "extra_groups": []}


def _stop_with_parent() -> None:
    """Server pre-exec (after the switch to ``postgres``, which would clear it): SIGINT, the
    fast shutdown, when the test session dies."""
    LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGINT)


def _connect(port: int, server: subprocess.Popen[bytes], log: Path) -> psycopg.Connection:
    """The first connection the starting server accepts (it refuses them while it recovers)."""
    deadline = time.monotonic() + 60
    while True:
        if server.poll() is not None:
            pytest.fail(f"PostgreSQL exited with {server.returncode}:\n{log.read_text()}")
        try:
            return psycopg.connect(
                host="127.0.0.1", port=port, user="postgres", dbname="postgres", autocommit=True
            )
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                pytest.fail(f"PostgreSQL did not accept connections in 60 s:\n{log.read_text()}")
            time.sleep(0.05)


@contextlib.contextmanager
def running_server() -> Iterator[str]:
    """A throw-away PostgreSQL server with database ``qhpc``: its SQLAlchemy URL; stopped and
    removed afterwards, and restartable by :func:`restart_postgres` meanwhile."""
    bin_dir, owner = _bin_dir(), _as_owner()
    root = Path(tempfile.mkdtemp(prefix="qhpc-pg-"))
    data, sockets, log = root / "data", root / "sockets", root / "server.log"
    sockets.mkdir()
    if owner:
        for path in (root, sockets):
            os.chown(path, owner["user"], owner["group"])
    server = None
    try:
        initdb = subprocess.run(
            [f"{bin_dir}/initdb", "-D", str(data), "-U", "postgres", *INITDB_OPTIONS],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=120,
            **owner,
        )
        if initdb.returncode:
            pytest.fail(f"initdb failed ({initdb.returncode}):\n{initdb.stdout}{initdb.stderr}")
        port = free_port()
        command = [f"{bin_dir}/postgres", "-D", str(data), "-p", str(port), "-k", str(sockets)]

        def start() -> subprocess.Popen[bytes]:
            with log.open("ab") as output:
                return subprocess.Popen(
                    command + SERVER_OPTIONS,
                    cwd=root,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    preexec_fn=_stop_with_parent,
                    **owner,
                )

        server = start()
        with _connect(port, server, log) as conn:
            conn.execute("CREATE DATABASE qhpc")

        def restart(down_s: float) -> None:
            nonlocal server
            _stop(server)
            time.sleep(down_s)
            server = start()
            _connect(port, server, log).close()

        _RESTART[0] = restart
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/qhpc"
    finally:
        _RESTART.clear()
        _RESTART.append(None)
        if server is not None:
            _stop(server)
        shutil.rmtree(root, ignore_errors=True)


_RESTART: list[Any] = [None]


def restart_postgres(down_s: float = 1.0) -> None:
    """Stop the session's server as ``pg_ctl restart -m fast`` does (SIGINT: fast shutdown,
    every connection cut), keep it down ``down_s`` seconds, start it again on the same port."""
    if _RESTART[0] is None:
        raise RuntimeError("no PostgreSQL server is running (use the postgres_url fixture)")
    _RESTART[0](down_s)


def _stop(server: subprocess.Popen[bytes]) -> None:
    server.send_signal(signal.SIGINT)
    try:
        server.wait(30)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait(10)


@contextlib.contextmanager
def fresh_database(server_url: str) -> Iterator[str]:
    """A new, empty database on the server at ``server_url``: its URL; dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    # pre-ping: a test may restart the server (restart_postgres), cutting pooled connections
    admin = sa.create_engine(server_url, isolation_level="AUTOCOMMIT", pool_pre_ping=True)
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
    try:
        yield server_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()
