"""Alembic's environment: run by :mod:`qhpc_lab.scheduler.store.migrate`, which passes the
connection (or, for ``--sql``, the URL) in the configuration's attributes."""

from alembic import context

from qhpc_lab.scheduler.store.schema import metadata

settings = context.config
if context.is_offline_mode():
    context.configure(url=settings.attributes["url"], target_metadata=metadata, literal_binds=True)
else:
    context.configure(connection=settings.attributes["connection"], target_metadata=metadata)
with context.begin_transaction():
    context.run_migrations()
