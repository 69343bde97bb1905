"""Store fixtures on `store_url` (tests/conftest.py): every test runs against SQLite and against
a fresh PostgreSQL database."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from hookstream.store import Store
from hookstream.store.engine import make_engine


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
