"""Alembic environment of the results store: always run on a connection the store hands over
(``config.attributes["connection"]``), never from an ini file's URL."""

from __future__ import annotations

from alembic import context

from launcher.campaign.schema import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
