"""A real PostgreSQL server for the test session, started from Debian's binaries.

The store must behave the same on PostgreSQL as on SQLite, so the tests run a real server:
a throw-away cluster in a temporary directory, on 127.0.0.1 with a free port and its unix
socket inside that directory, stopped (and only that one) when the session ends.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

BINARIES = "/usr/lib/postgresql/*/bin"


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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(command: list[str], owner: pwd.struct_passwd | None) -> None:
    """Run a server command as the cluster's owner (PostgreSQL refuses to run as root)."""
    prefix = ["runuser", "-u", owner.pw_name, "--"] if owner else []
    done = subprocess.run(prefix + command, capture_output=True, text=True, timeout=60)
    if done.returncode:
        pytest.fail(f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout}{done.stderr}")


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """SQLAlchemy URL of database ``qhpc`` on a PostgreSQL server private to this session."""
    bin_dir = _bin_dir()
    owner = None
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            pytest.fail("the postgres user does not exist: reinstall Debian's postgresql package")
    root = Path(tempfile.mkdtemp(prefix="qhpc-pg-"))
    data, sockets, log = root / "data", root / "sockets", root / "server.log"
    sockets.mkdir()
    if owner:
        for path in (root, sockets):
            os.chown(path, owner.pw_uid, owner.pw_gid)
    port = _free_port()
    started = False
    try:
        _run(
            [
                f"{bin_dir}/initdb",
                "-D",
                str(data),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ],
            owner,
        )
        # fsync off: the tests kill the scheduler, never the database server.
        options = f"-c listen_addresses=127.0.0.1 -p {port} -k {sockets} -c fsync=off"
        _run([f"{bin_dir}/pg_ctl", "-D", str(data), "-l", str(log), "-w", "-o", options, "start"], owner)
        started = True
        engine = sa.create_engine(
            f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres",
            isolation_level="AUTOCOMMIT",
        )
        with engine.connect() as conn:
            conn.execute(sa.text("CREATE DATABASE qhpc"))
        engine.dispose()
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/qhpc"
    finally:
        if started:
            _run([f"{bin_dir}/pg_ctl", "-D", str(data), "-m", "fast", "-w", "stop"], owner)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def fresh_postgres_url(postgres_url: str) -> Iterator[str]:
    """A new, empty database on the session's server for one test; dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
    try:
        yield postgres_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()
