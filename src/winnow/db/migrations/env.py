"""Alembic environment: runs on the connection that ``Database.migrate`` hands over,
or on ``WINNOW_DATABASE_URL`` when invoked from the alembic CLI."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from winnow.db.tables import Base

config = context.config
target_metadata = Base.metadata


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    from winnow.config import get_settings
    from winnow.db.session import _normalise_url

    engine = create_engine(_normalise_url(get_settings().effective_database_url))
    with engine.begin() as conn:
        context.configure(connection=conn, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()


run_migrations_online()
