"""Schema migrations (Alembic): the database brought to this release's tables, or back.

The revisions ship inside the package (``migrations/versions``) and Alembic is configured
here, in code: no ``alembic.ini`` is read. The daemon upgrades to head at every start
(:class:`~qhpc_lab.scheduler.store.Store`); ``qhpc scheduler migrate`` runs the same upgrade
on its own, a downgrade, or prints their SQL (docs/operations.md, "Upgrading").

A database made by a release before migrations has tables but no ``alembic_version``: the
first revision adopts it (creates the tables it lacks, adds the columns those releases added
since the first), so it is upgraded like any other.

A schema change is a new revision beside the others: change ``schema.py``, then
``alembic.command.revision(config(connection), message, autogenerate=True, rev_id="0002")``
with a connection to a database at head writes its first draft.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

import sqlalchemy as sa
from alembic import command as alembic
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy.engine import make_url

from qhpc_lab.scheduler.store.engine import create_engine, schema_lock

MIGRATIONS = Path(__file__).with_name("migrations")
"""The Alembic script directory: ``env.py`` and ``versions/``."""
HEAD = "head"
BASE = "base"
VERSION_TABLE = "alembic_version"


class SchemaError(RuntimeError):
    """The database's schema cannot be brought where asked; the message says what to do."""


def config(
    connection: sa.Connection | None = None, url: str = "", output: TextIO | None = None
) -> Config:
    """Alembic's configuration for ``connection`` (online) or ``url`` (``--sql``, offline)."""
    settings = Config(output_buffer=output) if output is not None else Config()
    settings.set_main_option("script_location", str(MIGRATIONS))
    settings.attributes["connection"] = connection
    settings.attributes["url"] = url
    return settings


@functools.cache
def scripts() -> ScriptDirectory:
    """The revisions this release knows (read once per process)."""
    return ScriptDirectory.from_config(config())


def head() -> str:
    """This release's revision."""
    found = scripts().get_current_head()
    assert found is not None, f"no revision under {MIGRATIONS}"
    return found


def current(engine: sa.Engine) -> str | None:
    """The database's revision; None when it has none (new, or made before migrations)."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def predates_migrations(engine: sa.Engine) -> bool:
    """Tables but no revision: a database made by a release before migrations."""
    with engine.connect() as conn:
        tables = set(sa.inspect(conn).get_table_names())
    return VERSION_TABLE not in tables and "jobs" in tables


def upgrade(engine: sa.Engine, to: str = HEAD) -> None:
    """Bring the database to revision ``to``, under the schema lock (replicas starting
    together migrate once); nothing to do when it is there already."""
    with schema_lock(engine), engine.begin() as conn:
        now = MigrationContext.configure(conn).get_current_revision()
        _check_known(now)
        if now is not None and now == _resolve(to):
            return
        _run(lambda: alembic.upgrade(config(conn), to))


def downgrade(engine: sa.Engine, to: str) -> None:
    """Take the database back to revision ``to`` (``base``: no tables at all)."""
    with schema_lock(engine), engine.begin() as conn:
        _check_known(MigrationContext.configure(conn).get_current_revision())
        _run(lambda: alembic.downgrade(config(conn), to))


def sql(url: str, start: str | None, to: str, output: TextIO, down: bool = False) -> None:
    """Print the SQL that takes a database at ``start`` (None: new) to ``to``."""
    settings = config(url=url, output=output)
    span = f"{start or BASE}:{to}"
    _run(lambda: (alembic.downgrade if down else alembic.upgrade)(settings, span, sql=True))


def command(
    url: str,
    to: str = HEAD,
    downgrade_to: str | None = None,
    show: bool = False,
    as_sql: bool = False,
    out: TextIO | None = None,
) -> None:
    """``qhpc scheduler migrate``: upgrade to ``to``, downgrade to ``downgrade_to``, print
    where the database is (``show``), or print the SQL instead of running it (``as_sql``);
    what it says goes to ``out`` (stdout)."""
    out = out or sys.stdout
    shown = make_url(url).render_as_string(hide_password=True)
    engine, _ = create_engine(url)
    try:
        try:
            before = current(engine)
            old = predates_migrations(engine)
        except sa.exc.SQLAlchemyError as err:
            raise SchemaError(f"cannot read the database {shown}: {err.args[0]}") from None
        where = _describe(before, old)
        if show:
            print(f"database {shown}: {where}; this release: {head()} (head)", file=out)
            return
        if as_sql:
            if old:
                raise SchemaError(
                    f"{shown} was made by a release before schema migrations: its SQL depends "
                    "on what it holds; back it up and run `qhpc scheduler migrate` without --sql"
                )
            _check_known(before)
            sql(url, before, downgrade_to or to, out, down=downgrade_to is not None)
            return
        try:
            if downgrade_to is not None:
                downgrade(engine, downgrade_to)
            else:
                upgrade(engine, to)
            after = current(engine)
        except sa.exc.SQLAlchemyError as err:
            raise SchemaError(
                f"migrating {shown} failed: {err}. PostgreSQL rolled it back whole; SQLite may "
                "be left part-way: restore the backup"
            ) from None
        if after == before and not old:
            print(f"database {shown}: already at {where}", file=out)
        else:
            print(f"database {shown}: was {where}, now {_describe(after, False)}", file=out)
    finally:
        engine.dispose()


def _describe(revision: str | None, old: bool) -> str:
    if old:
        return "made by a release before schema migrations (no revision)"
    if revision is None:
        return "no tables (base)"
    return f"revision {revision}" + (" (head)" if revision == head() else "")


def _resolve(revision: str) -> str | None:
    """``revision`` as an id (``head`` named), or None when it is not one this release has."""
    try:
        found = scripts().get_revision(revision)
    except CommandError:
        return None
    return found.revision if found is not None else None


def _check_known(revision: str | None) -> None:
    """Refuse a database at a revision this release does not have (a newer one migrated it)."""
    if revision is not None and _resolve(revision) is None:
        raise SchemaError(
            f"the database is at schema revision {revision}, which this release does not know "
            f"(its newest is {head()}): a newer release migrated it. Install that release "
            f"again, or with it run `qhpc scheduler migrate --downgrade {head()}` first"
        )


def _run(step: Callable[[], object]) -> None:
    """Run an Alembic command, its refusals (an unknown revision) worded for an operator."""
    try:
        step()
    except CommandError as err:
        known = ", ".join(reversed([s.revision for s in scripts().walk_revisions()]))
        raise SchemaError(
            f"{err} (this release's revisions: base, {known}; head is {head()})"
        ) from None
