"""Alembic environment: runs on the connection that `persona_agents_pipeline.store.upgrade` hands over."""

from alembic import context

from persona_agents_pipeline.migrations.change_log import VERSION_TABLE

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=None, render_as_batch=True, version_table=VERSION_TABLE)
with context.begin_transaction():
    context.run_migrations()
