"""Alembic's environment: always run programmatically (see the package's `upgrade_database`),
on the connection it hands over, inside the transaction it has already begun."""

from alembic import context

from xmodal.indexer.store.migrations import VERSION_TABLE

connection = context.config.attributes["connection"]
context.configure(connection=connection, version_table=VERSION_TABLE, transactional_ddl=True, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
