"""Schema versions: Alembic, configured in code, with its scripts inside this package."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import Connection, Engine, func, select

from hookstream.store.engine import make_engine, write_transaction

MIGRATIONS_DIR = Path(__file__).with_name("migrations")

# Any fixed number: serialises services that start at once against one PostgreSQL database.
_PG_MIGRATION_LOCK = 0x686F6F6B  # "hook"


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    # ConfigParser interpolation would read a "%" in the install path as a reference.
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    config.set_main_option("path_separator", "os")
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def migrate(url: str) -> None:
    """Bring the database at `url` to the newest schema; a no-op when it is already there."""
    engine = make_engine(url)
    try:
        migrate_engine(engine)
    finally:
        engine.dispose()


def migrate_engine(engine: Engine) -> None:
    with write_transaction(engine) as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(select(func.pg_advisory_xact_lock(_PG_MIGRATION_LOCK)))
        command.upgrade(alembic_config(conn), "head")


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()
