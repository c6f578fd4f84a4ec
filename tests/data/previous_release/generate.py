"""Writes the databases of releases before schema migrations, as SQL dumps (SQLite and
PostgreSQL), each made and filled by that release's own store code: the fixtures of
tests/test_migrations.py.

    python tests/data/previous_release/generate.py postgresql+psycopg://postgres@127.0.0.1:5432/postgres

The URL is a PostgreSQL server's maintenance database (a database is made there and dropped).
It needs the git history (each release's code comes from ``git archive``) and ``pg_dump``.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

import sqlalchemy as sa

HERE = Path(__file__).parent
ROOT = HERE.parents[2]

FIRST_RELEASE = "9731c07"
"""The first release: ``jobs`` and ``sessions`` without the columns added since."""
PREVIOUS_RELEASE = "bff3bd7"
"""The last release before migrations."""

FILL_FIRST = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("old_store", "qhpc_lab/scheduler/store.py")
old = sys.modules["old_store"] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(old)
store = old.Store(sys.argv[1])
job = dict(job_class="production", format="pulser", body="{}", max_calibration_age_s=None)
s1 = store.create_session("1000", "42", 1)
s2 = store.create_session("1001", None, 1)
a = store.add_job(session_id=s1.id, user_id="1000", slurm_job_id="42", name="bell",
                  variables={"t": 1}, shots=100, num_qubits=2, **job)
store.mark_running(a.id, 1.0)
store.record_chunk(a.id, {"00": 60, "11": 40}, 100, 0.5, 3.0)
b = store.add_job(session_id=s1.id, user_id="1000", slurm_job_id="42", name=None,
                  variables={}, shots=200, num_qubits=2, **job)
store.mark_running(b.id, 2.0)
store.record_chunk(b.id, {"01": 50}, 50, 0.25, 1.0)
store.add_job(session_id=s2.id, user_id="1001", slurm_job_id=None, name=None,
              variables={}, shots=10, num_qubits=1, **job)
store.revoke_session(s2.id, "epilog")
store.set_fact("calibrated_at", 1700000000.0)
store.close()
"""

FILL_PREVIOUS = """
import sys
from qhpc_lab.qpu import Calibration, Drift
from qhpc_lab.scheduler.quotas import Quota
from qhpc_lab.scheduler.store import Store
url = sys.argv[1]
store = Store(url, clock=lambda: 1000.0)
if url.startswith("postgresql"):  # as an HA replica: the journal and the lease too
    from qhpc_lab.scheduler.journal import Journal
    from qhpc_lab.scheduler.leadership import Lease
    Journal(store)
    lease = Lease(store.engine, "old-host:1", 5.0)
    lease.acquire()
    store.fence = lease.check
job = dict(job_class="production", format="pulser", body="{}", max_calibration_age_s=None)
s1 = store.create_session("1000", "42", 2, idle_expires_at=5000.0, slurm_account="chem")
s2 = store.create_session("1001", "43", 1)
a = store.add_job(session_id=s1.id, user_id="1000", slurm_job_id="42", name="bell",
                  variables={"t": 1}, shots=100, idempotency_key="key-a",
                  single_calibration=True, loop="loop-1", think_time_s=2.0, **job)
store.mark_running(a.id, 1001.0)
calibration = Calibration(3, 900.0, Drift(0.01, 0.001, 0.05))
store.record_chunk(a.id, {"00": 60, "11": 40}, 100, 0.5, 3.0, emulator_seconds=0.125,
                   calibration=calibration)
b = store.add_job(session_id=s1.id, user_id="1000", slurm_job_id="42", name=None,
                  variables={}, shots=200, **job)
store.mark_running(b.id, 1002.0)
store.record_chunk(b.id, {"01": 50}, 50, 0.25, 1.0, calibration=calibration)
store.add_job(session_id=s2.id, user_id="1001", slurm_job_id="43", name=None,
              variables={}, shots=10, **job)
store.revoke_session(s2.id, "epilog")
store.set_facts({"calibrated_at": 900.0, "calibration_id": 3})
store.set_quota(Quota("user", "1000", "shots", 1000000.0))
store.add_reservation("account", "chem", 2000.0, 3000.0, "0")
store.first_use("d" * 64, 9000000000.0)
store.close()
"""


def release_code(release: str, into: Path) -> None:
    """The package as it was at ``release``."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", release, "qhpc_lab"], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)


def fill(code: Path, script: str, url: str) -> None:
    """Run ``script`` with the release's code first on the path, on database ``url``."""
    env = {**os.environ, "PYTHONPATH": str(code)}
    subprocess.run([sys.executable, "-c", script, url], cwd=code, env=env, check=True)


def sqlite_dump(code: Path, script: str) -> str:
    path = code / "scheduler.db"
    fill(code, script, f"sqlite:///{path}")
    with sqlite3.connect(path) as conn:
        return "\n".join(conn.iterdump()) + "\n"


def postgres_dump(code: Path, script: str, server: str, name: str) -> str:
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
    url = sa.make_url(server).set(database=name)
    try:
        fill(code, script, url.render_as_string(hide_password=False))
        libpq = url.set(drivername="postgresql").render_as_string(hide_password=False)
        dump = subprocess.run(
            ["pg_dump", "--inserts", "--no-owner", "--no-privileges", libpq],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        # plain SQL: without psql's meta-commands (\restrict), which only psql reads
        return "".join(line for line in dump.splitlines(True) if not line.startswith("\\"))
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()


def main(server: str) -> None:
    for release, script in ((FIRST_RELEASE, FILL_FIRST), (PREVIOUS_RELEASE, FILL_PREVIOUS)):
        with tempfile.TemporaryDirectory() as tmp:
            code = Path(tmp)
            release_code(release, code)
            (HERE / f"{release}.sqlite.sql").write_text(sqlite_dump(code, script))
            dump = postgres_dump(code, script, server, f"release_{release}")
            (HERE / f"{release}.postgresql.sql").write_text(dump)


if __name__ == "__main__":
    main(sys.argv[1])
