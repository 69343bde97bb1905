"""Event-id records behind idempotent POST /v1/events, on both backends."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import Engine, select

from hookstream.store import Store
from hookstream.store.schema import accepted_events

T0 = 1_700_000_000_000
WINDOW = 60_000


def claims(engine: Engine) -> list[tuple[str, str, int]]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(accepted_events).order_by(
                accepted_events.c.tenant_id, accepted_events.c.event_id
            )
        )
        return [(row.tenant_id, row.event_id, row.accepted_at_ms) for row in rows]


def test_first_claim_wins_and_repeats_within_the_window_do_not(store: Store) -> None:
    assert store.accept_event("t1", "evt_1", T0, WINDOW)
    assert not store.accept_event("t1", "evt_1", T0 + 1, WINDOW)
    assert not store.accept_event("t1", "evt_1", T0 + WINDOW - 1, WINDOW)


def test_ids_are_scoped_per_tenant(store: Store) -> None:
    assert store.accept_event("t1", "evt_1", T0, WINDOW)
    assert store.accept_event("t2", "evt_1", T0, WINDOW)
    assert store.accept_event("t1", "evt_2", T0, WINDOW)


def test_a_claim_outside_the_window_counts_as_new_and_is_refreshed(
    store: Store, engine: Engine
) -> None:
    assert store.accept_event("t1", "evt_1", T0, WINDOW)
    assert store.accept_event("t1", "evt_1", T0 + WINDOW, WINDOW)
    assert claims(engine) == [("t1", "evt_1", T0 + WINDOW)]
    # The refreshed claim starts a new window.
    assert not store.accept_event("t1", "evt_1", T0 + WINDOW + 1, WINDOW)


def test_concurrent_claims_have_exactly_one_winner(store: Store) -> None:
    def claim(_: int) -> bool:
        return store.accept_event("t1", "evt_race", T0, WINDOW)

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(claim, range(32)))
    assert results.count(True) == 1


def test_was_accepted_sees_only_records_inside_the_window(store: Store) -> None:
    assert not store.was_accepted("t1", "evt_1", T0, WINDOW)
    assert store.accept_event("t1", "evt_1", T0, WINDOW)
    assert store.was_accepted("t1", "evt_1", T0 + WINDOW - 1, WINDOW)
    assert not store.was_accepted("t1", "evt_1", T0 + WINDOW, WINDOW)
    assert not store.was_accepted("t2", "evt_1", T0 + 1, WINDOW)


def test_purge_deletes_old_claims_in_batches(store: Store, engine: Engine) -> None:
    for i in range(23):
        store.accept_event("t1", f"evt_old{i:02d}", T0 + i, WINDOW)
    store.accept_event("t2", "evt_new", T0 + WINDOW, WINDOW)

    assert store.purge_accepted_events(T0 + 100, batch_size=5) == 23
    assert claims(engine) == [("t2", "evt_new", T0 + WINDOW)]
    assert store.purge_accepted_events(T0 + 100, batch_size=5) == 0
    with pytest.raises(ValueError, match="batch_size"):
        store.purge_accepted_events(T0, batch_size=0)
