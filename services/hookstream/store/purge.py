"""Expiry of claim tables (accepted event ids, idempotency keys): old rows, batch by batch."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Column, Engine, Table, delete, select, tuple_

from hookstream.store.engine import write_transaction

# Bind parameters per IN list: well inside SQLite's and PostgreSQL's limits.
IN_CHUNK = 500


def purge_before(
    engine: Engine,
    table: Table,
    key: Sequence[Column[str]],
    stamp: Column[int],
    before_ms: int,
    batch_size: int,
) -> int:
    """Delete the rows of `table` whose `stamp` is before `before_ms`; the count deleted.

    One short transaction per `batch_size` rows, oldest first, so that a large backlog never
    holds a long lock. A row claimed anew between the select and the delete (its stamp moved
    on) is live again and stays.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    purged = 0
    while True:
        with write_transaction(engine) as conn:
            doomed = [
                tuple(row)
                for row in conn.execute(
                    select(*key).where(stamp < before_ms).order_by(stamp).limit(batch_size)
                )
            ]
            for start in range(0, len(doomed), IN_CHUNK):
                chunk = doomed[start : start + IN_CHUNK]
                result = conn.execute(
                    delete(table).where(tuple_(*key).in_(chunk), stamp < before_ms)
                )
                purged += result.rowcount
        if len(doomed) < batch_size:
            return purged
