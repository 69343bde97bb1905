"""Store URLs to SQLAlchemy engines, with the per-backend settings hookstream relies on."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import URL, Connection, Engine, create_engine, event, make_url
from sqlalchemy.exc import ArgumentError

from hookstream.store.errors import UnsupportedStoreUrlError

# Long enough to ride out the log sink's batch commit or a retention batch in another process.
SQLITE_BUSY_TIMEOUT_MS = 10_000

# Execution option that marks a transaction as a writer (see _sqlite_begin).
_WRITE_OPTION = "hookstream_write"


def normalize_url(url: str) -> URL:
    """`sqlite:///path` as is; `postgresql://` and `postgres://` onto the psycopg 3 driver."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise UnsupportedStoreUrlError(f"store URL is not a database URL: {exc}") from None
    driver = parsed.drivername
    if driver in ("postgresql", "postgres", "postgresql+psycopg"):
        return parsed.set(drivername="postgresql+psycopg")
    if driver in ("sqlite", "sqlite+pysqlite"):
        if parsed.database in (None, "", ":memory:"):
            # Each pooled connection would get its own empty database.
            raise UnsupportedStoreUrlError(
                "in-memory SQLite is not supported as a store: use a file, e.g. sqlite:///x.db"
            )
        return parsed.set(drivername="sqlite+pysqlite")
    raise UnsupportedStoreUrlError(
        f"unsupported store URL scheme {driver!r}: use sqlite:///path or postgresql://…"
    )


def make_engine(url: str) -> Engine:
    parsed = normalize_url(url)
    if parsed.get_backend_name() == "sqlite":
        Path(parsed.database or "").parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(parsed)
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    # Connections idle in the pool across a database restart would otherwise fail once each.
    return create_engine(parsed, pool_pre_ping=True)


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """A transaction that will write: on SQLite it takes the write lock up front."""
    with engine.connect() as conn:
        conn.execution_options(**{_WRITE_OPTION: True})
        with conn.begin():
            yield conn


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # The driver's own implicit BEGIN is switched off so that _sqlite_begin decides how each
    # transaction starts (and so DDL in migrations is transactional too).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        # WAL lets API readers run while the log sink writes. synchronous stays FULL: the
        # log sink commits Kafka offsets after our commit, so a commit must survive power loss.
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    finally:
        cursor.close()


def _sqlite_begin(conn: Connection) -> None:
    # A deferred transaction that reads and then writes can fail at once with SQLITE_BUSY
    # (busy_timeout does not apply to lock upgrades); writers therefore lock at BEGIN.
    if conn.get_execution_options().get(_WRITE_OPTION):
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        conn.exec_driver_sql("BEGIN")
