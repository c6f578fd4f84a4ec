"""Schema migrations, on SQLite and a real PostgreSQL server: a database made by a release
before migrations is upgraded with its rows, the migrations build exactly the tables of
``schema.py``, a downgrade goes back, and ``qhpc scheduler migrate`` says where a database is.

The old databases are SQL dumps that each release's own store code made and filled
(tests/data/previous_release/generate.py).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from qhpc_lab.cli import main
from qhpc_lab.scheduler.quotas import Quota
from qhpc_lab.scheduler.store import (
    DuplicateJob,
    JobRow,
    Store,
    job_events,
    leases,
    metadata,
    migrate,
)

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
DUMPS = Path(__file__).parent / "data" / "previous_release"
PREVIOUS_RELEASE = "bff3bd7"
"""The last release before migrations: every table and column of the first revision."""
FIRST_RELEASE = "9731c07"
"""The first release: ``jobs`` and ``sessions`` without the columns added since."""
OUR_TABLES = set(metadata.tables)


@pytest.fixture(params=BACKENDS)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A new, empty database: a SQLite file or a PostgreSQL database."""
    if request.param == "postgres":
        return request.getfixturevalue("fresh_postgres_url")
    return f"sqlite:///{tmp_path / 'scheduler.db'}"


@pytest.fixture
def engine(url: str) -> Iterator[sa.Engine]:
    opened = sa.create_engine(url)
    yield opened
    opened.dispose()


def add(store: Store, **values: object) -> JobRow:
    """A small job of user 1000, as the scheduler adds one."""
    fields: dict[str, object] = dict(
        session_id=None,
        user_id="1000",
        slurm_job_id=None,
        job_class="production",
        name=None,
        format="pulser",
        body="{}",
        variables={},
        shots=10,
        max_calibration_age_s=None,
    )
    return store.add_job(**{**fields, **values})


def load(url: str, release: str) -> None:
    """Restore ``release``'s dump into the empty database ``url``."""
    parsed = sa.make_url(url)
    if parsed.get_backend_name() == "sqlite":
        with sqlite3.connect(parsed.database or "") as conn:
            conn.executescript((DUMPS / f"{release}.sqlite.sql").read_text())
        return
    libpq = parsed.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(libpq, autocommit=True) as conn:
        conn.execute((DUMPS / f"{release}.postgresql.sql").read_text())  # type: ignore[arg-type]


def differences(engine: sa.Engine) -> list[tuple[object, ...]]:
    """What Alembic's autogenerate would change to make the database match ``schema.py``."""
    with engine.connect() as conn:
        return compare_metadata(MigrationContext.configure(conn), metadata)


def tables(engine: sa.Engine) -> set[str]:
    return set(sa.inspect(engine).get_table_names())


def test_the_migrations_build_exactly_the_tables_of_the_schema(engine: sa.Engine) -> None:
    migrate.upgrade(engine)
    assert migrate.current(engine) == migrate.head()
    assert differences(engine) == []


def test_a_database_of_the_previous_release_is_upgraded_with_its_rows(
    url: str, engine: sa.Engine
) -> None:
    load(url, PREVIOUS_RELEASE)
    assert migrate.predates_migrations(engine) and migrate.current(engine) is None
    store = Store(url)
    try:
        assert migrate.current(engine) == migrate.head()
        assert differences(engine) == []
        done, running, canceled = (store.get_job(i) for i in (1, 2, 3))
        assert done is not None and running is not None and canceled is not None
        assert (done.status, done.counts, done.emulator_seconds) == (
            "DONE",
            {"00": 60, "11": 40},
            0.125,
        )
        assert (done.idempotency_key, done.loop, done.single_calibration) == (
            "key-a",
            "loop-1",
            True,
        )
        assert [c["shots_to"] for c in done.calibrations] == [100]
        assert (running.status, running.shots_done, running.counts) == ("RUNNING", 50, {"01": 50})
        assert (canceled.status, canceled.error) == ("CANCELED", "canceled: epilog")
        opened, revoked = store.list_sessions()
        assert (opened.slurm_account, opened.idle_expires_at, opened.active) == ("chem", 5000, True)
        assert (revoked.revoke_reason, revoked.active) == ("epilog", False)
        assert (store.get_fact("calibration_id"), store.get_fact("calibrated_at")) == (3, 900.0)
        [(quota, used)] = store.quota_uses(1000.0, 0.001)
        assert quota == Quota("user", "1000", "shots", 1000000.0) and used == 300
        [reservation] = store.list_reservations()
        assert (reservation.owner_kind, reservation.owner) == ("account", "chem")
        assert store.first_use("d" * 64, 9e9) is False  # still remembered
        assert add(store).id == 4
        with pytest.raises(DuplicateJob):
            add(store, idempotency_key="key-a")
        if url.startswith("postgresql"):  # the replicas' lease and journal are kept
            with engine.connect() as conn:
                assert conn.execute(sa.select(leases.c.holder, leases.c.epoch)).one() == (
                    "old-host:1",
                    1,
                )
                assert (
                    conn.execute(sa.select(sa.func.count()).select_from(job_events)).scalar() == 8
                )
    finally:
        store.close()


def test_a_database_of_the_first_release_gains_the_columns_added_since(
    url: str, engine: sa.Engine
) -> None:
    load(url, FIRST_RELEASE)
    store = Store(url)
    try:
        assert migrate.current(engine) == migrate.head()
        # only the columns those releases stopped using remain, unread
        assert sorted((d[0], d[3].name) for d in differences(engine)) == [  # type: ignore[union-attr]
            ("remove_column", "num_qubits"),
            ("remove_column", "results"),
        ]
        done, running, canceled = (store.get_job(i) for i in (1, 2, 3))
        assert done is not None and running is not None and canceled is not None
        assert (done.status, done.counts, done.results) == (
            "DONE",
            {"00": 60, "11": 40},
            '{"counter": {"00": 60, "11": 40}}',
        )
        assert (done.emulator_seconds, done.calibrations, done.single_calibration) == (0, [], False)
        assert (running.status, running.shots_done) == ("RUNNING", 50)
        assert canceled.status == "CANCELED"
        assert [s.slurm_account for s in store.list_sessions()] == [None, None]
        assert store.get_fact("calibrated_at") == 1700000000.0
        first = add(store, idempotency_key="again")
        with pytest.raises(DuplicateJob):  # the unique index came with the column
            add(store, idempotency_key="again")
        assert first.id == 4 and store.count_by_status()["PENDING"] == 1
    finally:
        store.close()


@pytest.mark.parametrize("release", [None, PREVIOUS_RELEASE])
def test_a_downgrade_to_base_drops_the_tables_and_an_upgrade_brings_them_back(
    url: str, engine: sa.Engine, release: str | None
) -> None:
    if release is not None:
        load(url, release)
    migrate.upgrade(engine)
    migrate.downgrade(engine, "base")
    assert migrate.current(engine) is None
    assert tables(engine) & OUR_TABLES == set()
    migrate.upgrade(engine)
    assert tables(engine) >= OUR_TABLES and differences(engine) == []
    store = Store(url)
    try:
        assert store.list_jobs() == [] and add(store).id == 1
    finally:
        store.close()


@pytest.mark.postgres
def test_replicas_starting_together_on_a_new_database_migrate_it_once(
    fresh_postgres_url: str,
) -> None:
    with ThreadPoolExecutor(4) as pool:
        stores = list(pool.map(lambda _: Store(fresh_postgres_url), range(4)))
    for store in stores:
        store.close()
    engine = sa.create_engine(fresh_postgres_url)
    try:
        with engine.connect() as conn:
            versions = conn.execute(sa.text("SELECT version_num FROM alembic_version")).all()
        assert versions == [(migrate.head(),)]
    finally:
        engine.dispose()


def test_a_database_a_newer_release_migrated_is_refused_naming_what_to_do(
    url: str, engine: sa.Engine
) -> None:
    migrate.upgrade(engine)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '9999'"))
    with pytest.raises(migrate.SchemaError, match=r"revision 9999.*newer release.*--downgrade"):
        Store(url)


def test_the_migrate_command(
    url: str, engine: sa.Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    head = migrate.head()
    assert main(["scheduler", "migrate", "--db", url, "--sql"]) == 0
    assert "CREATE TABLE jobs" in capsys.readouterr().out
    assert tables(engine) & OUR_TABLES == set()  # --sql changes nothing

    load(url, PREVIOUS_RELEASE)
    assert main(["scheduler", "migrate", "--db", url, "--show"]) == 0
    assert "made by a release before schema migrations" in capsys.readouterr().out
    with pytest.raises(SystemExit, match=r"before schema migrations.*without --sql"):
        main(["scheduler", "migrate", "--db", url, "--sql"])

    assert main(["scheduler", "migrate", "--db", url]) == 0
    assert f"now revision {head} (head)" in capsys.readouterr().out
    assert main(["scheduler", "migrate", "--db", url, "--downgrade", "base", "--sql"]) == 0
    assert "DROP TABLE jobs" in capsys.readouterr().out
    assert migrate.current(engine) == head

    with pytest.raises(SystemExit, match=r"qhpc scheduler migrate: .*'nope'.*revisions: base"):
        main(["scheduler", "migrate", "--db", url, "--to", "nope"])
    assert main(["scheduler", "migrate", "--db", url, "--downgrade", "base"]) == 0
    assert "now no tables (base)" in capsys.readouterr().out
