"""Event-id claims behind idempotent POST /v1/events, on both backends."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import Engine, select

from hookstream.store import ClaimedEvent, EventTaken, Store
from hookstream.store.schema import accepted_events

T0 = 1_700_000_000_000
WINDOW = 60_000
LEASE = 10_000


def claims(engine: Engine) -> list[tuple[str, str, int]]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(accepted_events).order_by(
                accepted_events.c.tenant_id, accepted_events.c.event_id
            )
        )
        return [(row.tenant_id, row.event_id, row.accepted_at_ms) for row in rows]


def claim(store: Store, tenant_id: str, event_id: str, now_ms: int) -> ClaimedEvent | EventTaken:
    return store.claim_event(tenant_id, event_id, now_ms, WINDOW, LEASE)


def published(store: Store, tenant_id: str, event_id: str, now_ms: int) -> None:
    claimed = claim(store, tenant_id, event_id, now_ms)
    assert isinstance(claimed, ClaimedEvent)
    assert store.confirm_event(tenant_id, event_id, claimed)


def test_first_claim_wins_and_repeats_see_it_in_flight_then_published(store: Store) -> None:
    first = claim(store, "t1", "evt_1", T0)
    assert isinstance(first, ClaimedEvent)
    assert claim(store, "t1", "evt_1", T0 + 1) is EventTaken.IN_FLIGHT
    assert store.confirm_event("t1", "evt_1", first)
    assert claim(store, "t1", "evt_1", T0 + WINDOW - 1) is EventTaken.PUBLISHED


def test_a_released_claim_lets_the_next_request_publish(store: Store) -> None:
    first = claim(store, "t1", "evt_1", T0)
    assert isinstance(first, ClaimedEvent)
    store.release_event("t1", "evt_1", first)
    second = claim(store, "t1", "evt_1", T0 + 1)
    assert isinstance(second, ClaimedEvent)
    # The first request's claim is gone: it can neither confirm nor release the second's.
    assert not store.confirm_event("t1", "evt_1", first)
    store.release_event("t1", "evt_1", first)
    assert store.confirm_event("t1", "evt_1", second)


def test_an_unconfirmed_claim_is_taken_over_after_its_lease(store: Store) -> None:
    first = claim(store, "t1", "evt_1", T0)
    assert claim(store, "t1", "evt_1", T0 + LEASE - 1) is EventTaken.IN_FLIGHT
    second = claim(store, "t1", "evt_1", T0 + LEASE)
    assert isinstance(first, ClaimedEvent) and isinstance(second, ClaimedEvent)
    assert not store.confirm_event("t1", "evt_1", first)
    assert store.confirm_event("t1", "evt_1", second)
    # A published id is not taken over after the lease, only after the window.
    assert claim(store, "t1", "evt_1", T0 + 2 * LEASE) is EventTaken.PUBLISHED


def test_a_renewed_claim_is_kept_past_its_first_lease(store: Store) -> None:
    # A publish waiting for Kafka renews its claim: repeats keep seeing it in flight.
    first = claim(store, "t1", "evt_1", T0)
    assert isinstance(first, ClaimedEvent)
    assert store.renew_event("t1", "evt_1", first, T0 + LEASE - 1)
    assert claim(store, "t1", "evt_1", T0 + 2 * LEASE - 2) is EventTaken.IN_FLIGHT
    # Renewals stop (its replica died): the lease lapses and a repeat takes over.
    second = claim(store, "t1", "evt_1", T0 + 2 * LEASE)
    assert isinstance(second, ClaimedEvent)
    assert not store.renew_event("t1", "evt_1", first, T0 + 2 * LEASE + 1)
    assert store.confirm_event("t1", "evt_1", second)


def test_ids_are_scoped_per_tenant(store: Store) -> None:
    published(store, "t1", "evt_1", T0)
    assert isinstance(claim(store, "t2", "evt_1", T0), ClaimedEvent)
    assert isinstance(claim(store, "t1", "evt_2", T0), ClaimedEvent)


def test_a_claim_outside_the_window_counts_as_new_and_is_refreshed(
    store: Store, engine: Engine
) -> None:
    published(store, "t1", "evt_1", T0)
    published(store, "t1", "evt_1", T0 + WINDOW)
    assert claims(engine) == [("t1", "evt_1", T0 + WINDOW)]
    # The refreshed claim starts a new window.
    assert claim(store, "t1", "evt_1", T0 + WINDOW + 1) is EventTaken.PUBLISHED


def test_concurrent_claims_have_exactly_one_winner(store: Store) -> None:
    def race(_: int) -> ClaimedEvent | EventTaken:
        return claim(store, "t1", "evt_race", T0)

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(race, range(32)))
    assert sum(isinstance(result, ClaimedEvent) for result in results) == 1
    assert results.count(EventTaken.IN_FLIGHT) == 31


def test_purge_deletes_old_claims_in_batches(store: Store, engine: Engine) -> None:
    for i in range(23):
        published(store, "t1", f"evt_old{i:02d}", T0 + i)
    published(store, "t2", "evt_new", T0 + WINDOW)

    assert store.purge_accepted_events(T0 + 100, batch_size=5) == 23
    assert claims(engine) == [("t2", "evt_new", T0 + WINDOW)]
    assert store.purge_accepted_events(T0 + 100, batch_size=5) == 0
    with pytest.raises(ValueError, match="batch_size"):
        store.purge_accepted_events(T0, batch_size=0)
