"""Alembic's environment for the results store: always online, on the connection that
edgebench.store.migrations.ensure_schema passes in ``config.attributes`` (that connection already
holds the store's write lock and its transaction; Alembic runs inside it)."""

from alembic import context

config = context.config
connection = config.attributes["connection"]
context.configure(connection=connection, target_metadata=config.attributes.get("target_metadata"),
                  render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
