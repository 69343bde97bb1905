"""Alembic environment; hookstream.store.versioning always supplies the connection."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from hookstream.store.schema import metadata


def run_migrations() -> None:
    connection = context.config.attributes.get("connection")
    if context.is_offline_mode() or not isinstance(connection, Connection):
        raise RuntimeError(
            "hookstream migrations run through hookstream.store.migrate(url), "
            "not the alembic command line"
        )
    context.configure(
        connection=connection,
        target_metadata=metadata,
        # SQLite cannot ALTER most things in place; batch mode rebuilds the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


run_migrations()
