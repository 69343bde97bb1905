"""Store fixtures: every test runs against SQLite and against a fresh PostgreSQL database."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, make_url, text
from sqlalchemy.exc import OperationalError

from hookstream.core.store import Store
from hookstream.core.store.engine import make_engine, normalize_url

DEFAULT_POSTGRES_URL = "postgresql://hookstream:hookstream@127.0.0.1:5432/hookstream"


def _admin_engine(admin_url: str) -> Engine:
    # CREATE/DROP DATABASE cannot run inside a transaction block.
    return create_engine(normalize_url(admin_url), isolation_level="AUTOCOMMIT")


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    admin_url = os.environ.get("HOOKSTREAM_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)
    admin = _admin_engine(admin_url)
    name = f"hs_{uuid.uuid4().hex}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except OperationalError as exc:
        admin.dispose()
        pytest.fail(
            f"PostgreSQL is not reachable at {make_url(admin_url).render_as_string()}: "
            f"run deploy/dev/postgres.sh (or set HOOKSTREAM_TEST_POSTGRES_URL). {exc}",
            pytrace=False,
        )
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    opened = Store.open(store_url)
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def engine(store_url: str, store: Store) -> Iterator[Engine]:
    """A second engine on the store's database, for looking at raw table contents."""
    raw = make_engine(store_url)
    try:
        yield raw
    finally:
        raw.dispose()
