"""Event-id claims behind idempotent POST /v1/events, on both backends."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, select

from hookstream.store import ClaimedEvent, EventTaken, Store
from hookstream.store.event_claims import EventKey
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
    [answer] = store.event_claims.claim([(tenant_id, event_id)], now_ms, WINDOW, LEASE)
    return answer


def published(store: Store, tenant_id: str, event_id: str, now_ms: int) -> None:
    claimed = claim(store, tenant_id, event_id, now_ms)
    assert isinstance(claimed, ClaimedEvent)
    assert store.event_claims.confirm(claimed, [(tenant_id, event_id)])


def test_first_claim_wins_and_repeats_see_it_in_flight_then_published(store: Store) -> None:
    first = claim(store, "t1", "evt_1", T0)
    assert isinstance(first, ClaimedEvent)
    assert claim(store, "t1", "evt_1", T0 + 1) is EventTaken.IN_FLIGHT
    assert store.event_claims.confirm(first, [("t1", "evt_1")])
    assert claim(store, "t1", "evt_1", T0 + WINDOW - 1) is EventTaken.PUBLISHED


def test_a_released_claim_lets_the_next_request_publish(store: Store) -> None:
    first = claim(store, "t1", "evt_1", T0)
    assert isinstance(first, ClaimedEvent)
    store.event_claims.release(first, [("t1", "evt_1")])
    second = claim(store, "t1", "evt_1", T0 + 1)
    assert isinstance(second, ClaimedEvent)
    # The first request's claim is gone: it can neither confirm nor release the second's.
    assert not store.event_claims.confirm(first, [("t1", "evt_1")])
    store.event_claims.release(first, [("t1", "evt_1")])
    assert store.event_claims.confirm(second, [("t1", "evt_1")])


def test_an_unconfirmed_claim_is_taken_over_after_its_lease(store: Store) -> None:
    first = claim(store, "t1", "evt_1", T0)
    assert claim(store, "t1", "evt_1", T0 + LEASE - 1) is EventTaken.IN_FLIGHT
    second = claim(store, "t1", "evt_1", T0 + LEASE)
    assert isinstance(first, ClaimedEvent) and isinstance(second, ClaimedEvent)
    assert not store.event_claims.confirm(first, [("t1", "evt_1")])
    assert store.event_claims.confirm(second, [("t1", "evt_1")])
    # A published id is not taken over after the lease, only after the window.
    assert claim(store, "t1", "evt_1", T0 + 2 * LEASE) is EventTaken.PUBLISHED


def test_a_renewed_claim_is_kept_past_its_first_lease(store: Store) -> None:
    # A publish waiting for Kafka renews its claim: repeats keep seeing it in flight.
    first = claim(store, "t1", "evt_1", T0)
    assert isinstance(first, ClaimedEvent)
    assert store.event_claims.renew_all([(first, [("t1", "evt_1")])], T0 + LEASE - 1)
    assert claim(store, "t1", "evt_1", T0 + 2 * LEASE - 2) is EventTaken.IN_FLIGHT
    # Renewals stop (its replica died): the lease lapses and a repeat takes over.
    second = claim(store, "t1", "evt_1", T0 + 2 * LEASE)
    assert isinstance(second, ClaimedEvent)
    assert not store.event_claims.renew_all([(first, [("t1", "evt_1")])], T0 + 2 * LEASE + 1)
    assert store.event_claims.confirm(second, [("t1", "evt_1")])


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

    assert store.event_claims.purge(T0 + 100, batch_size=5) == 23
    assert claims(engine) == [("t2", "evt_new", T0 + WINDOW)]
    assert store.event_claims.purge(T0 + 100, batch_size=5) == 0
    with pytest.raises(ValueError, match="batch_size"):
        store.event_claims.purge(T0, batch_size=0)


def test_a_batch_claim_answers_each_id_for_itself(store: Store) -> None:
    published(store, "t1", "evt_done", T0)
    in_flight = claim(store, "t1", "evt_busy", T0)
    assert isinstance(in_flight, ClaimedEvent)
    keys = [("t1", "evt_new"), ("t1", "evt_done"), ("t1", "evt_busy"), ("t2", "evt_done")]
    answers = store.event_claims.claim(keys, T0 + 1, WINDOW, LEASE)
    assert answers[1:3] == [EventTaken.PUBLISHED, EventTaken.IN_FLIGHT]
    won = [answers[0], answers[3]]
    assert all(isinstance(a, ClaimedEvent) for a in won) and won[0] == won[1], answers
    # One token for the batch: confirming it confirms exactly its own claims.
    batch = answers[0]
    assert isinstance(batch, ClaimedEvent)
    assert store.event_claims.confirm(batch, [keys[0], keys[3]]) == 2
    again = store.event_claims.claim(keys, T0 + 2, WINDOW, LEASE)
    published_, busy = EventTaken.PUBLISHED, EventTaken.IN_FLIGHT
    assert again == [published_, published_, busy, published_]
    with pytest.raises(ValueError, match="once"):
        store.event_claims.claim([keys[0], keys[0]], T0, WINDOW, LEASE)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    batches=st.lists(
        st.lists(st.integers(0, 30), min_size=1, max_size=20, unique=True),
        min_size=2,
        max_size=6,
    )
)
def test_racing_batches_win_every_id_exactly_once(store: Store, batches: list[list[int]]) -> None:
    # Fresh ids per example: the store is shared by the examples of one test.
    run = uuid.uuid4().hex[:8]

    def claim_batch(numbers: list[int]) -> list[tuple[EventKey, ClaimedEvent | EventTaken]]:
        keys = [("t1", f"evt_{run}_{n}") for n in numbers]
        return list(zip(keys, store.event_claims.claim(keys, T0, WINDOW, LEASE), strict=True))

    with ThreadPoolExecutor(max_workers=len(batches)) as pool:
        answered = [pair for result in pool.map(claim_batch, batches) for pair in result]
    winners: dict[EventKey, int] = {}
    for key, answer in answered:
        if isinstance(answer, ClaimedEvent):
            winners[key] = winners.get(key, 0) + 1
        else:
            assert answer is EventTaken.IN_FLIGHT  # nobody confirmed: in flight, not published
    asked = {key for key, _ in answered}
    assert winners == dict.fromkeys(asked, 1)


def test_confirm_all_confirms_each_claim_only_where_it_still_holds(store: Store) -> None:
    first = store.event_claims.claim([("t1", "a"), ("t1", "b")], T0, WINDOW, LEASE)
    second = store.event_claims.claim([("t2", "a")], T0, WINDOW, LEASE)
    mine, theirs = first[0], second[0]
    assert isinstance(mine, ClaimedEvent) and isinstance(theirs, ClaimedEvent)
    # A token that does not hold ("t2", "a") confirms nothing there.
    confirmed = store.event_claims.confirm_all(
        [(mine, [("t1", "a"), ("t1", "b"), ("t2", "a")]), (theirs, [])]
    )
    assert confirmed == 2
    assert claim(store, "t1", "b", T0 + 1) is EventTaken.PUBLISHED
    assert claim(store, "t2", "a", T0 + 1) is EventTaken.IN_FLIGHT
    assert store.event_claims.confirm_all([(theirs, [("t2", "a")])]) == 1
    assert store.event_claims.confirm_all([]) == 0
