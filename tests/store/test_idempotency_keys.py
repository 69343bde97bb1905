"""Idempotency-Key records behind every API POST, on both backends."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import Engine, func, select

from hookstream.store import Store
from hookstream.store.idempotency import Claimed, KeyedRequest, StoredAnswer, Taken
from hookstream.store.schema import idempotency_keys

T0 = 1_700_000_000_000
WINDOW = 60_000
LEASE = 5_000
ANSWER = StoredAnswer(201, {"Content-Type": "application/json"}, "sealed-body")


def keyed(key: str = "k1", scope: str = "t1", fingerprint: str = "f1", **kw: str) -> KeyedRequest:
    values = {"principal": "p1", "method": "POST", "path": "/v1/webhooks", **kw}
    return KeyedRequest(scope=scope, key=key, fingerprint=fingerprint, **values)


def rows(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(idempotency_keys)).scalar_one())


def test_first_claim_wins_and_repeats_see_it_in_flight_then_answered(store: Store) -> None:
    keys = store.idempotency_keys
    claim = keys.claim(keyed(), T0, WINDOW, LEASE)
    assert isinstance(claim, Claimed)
    in_flight = keys.claim(keyed(), T0 + 1, WINDOW, LEASE)
    assert in_flight == Taken("p1", "f1", "POST", "/v1/webhooks", None)
    assert keys.complete(keyed(), claim, ANSWER)
    answered = keys.claim(keyed(fingerprint="other"), T0 + 2, WINDOW, LEASE)
    assert answered == Taken("p1", "f1", "POST", "/v1/webhooks", ANSWER)


def test_keys_are_scoped(store: Store) -> None:
    keys = store.idempotency_keys
    assert isinstance(keys.claim(keyed(scope="t1"), T0, WINDOW, LEASE), Claimed)
    assert isinstance(keys.claim(keyed(scope="t2"), T0, WINDOW, LEASE), Claimed)
    assert isinstance(keys.claim(keyed(key="k2"), T0, WINDOW, LEASE), Claimed)


def test_a_released_claim_can_be_claimed_again(store: Store, engine: Engine) -> None:
    keys = store.idempotency_keys
    claim = keys.claim(keyed(), T0, WINDOW, LEASE)
    assert isinstance(claim, Claimed)
    keys.release(keyed(), claim)
    assert rows(engine) == 0
    assert isinstance(keys.claim(keyed(), T0 + 1, WINDOW, LEASE), Claimed)


def test_a_key_older_than_the_window_counts_as_new(store: Store) -> None:
    keys = store.idempotency_keys
    claim = keys.claim(keyed(), T0, WINDOW, LEASE)
    assert isinstance(claim, Claimed) and keys.complete(keyed(), claim, ANSWER)
    assert isinstance(keys.claim(keyed(), T0 + WINDOW - 1, WINDOW, LEASE), Taken)
    fresh = keys.claim(keyed(fingerprint="f2"), T0 + WINDOW, WINDOW, LEASE)
    assert isinstance(fresh, Claimed)
    # The old claim's holder can no longer write over the new one.
    assert not keys.complete(keyed(), claim, ANSWER)
    assert keys.claim(keyed(), T0 + WINDOW + 1, WINDOW, LEASE) == Taken(
        "p1", "f2", "POST", "/v1/webhooks", None
    )


def test_an_abandoned_claim_is_taken_over_only_by_the_same_request(store: Store) -> None:
    keys = store.idempotency_keys
    first = keys.claim(keyed(), T0, WINDOW, LEASE)
    assert isinstance(first, Claimed)
    assert isinstance(keys.claim(keyed(), T0 + LEASE - 1, WINDOW, LEASE), Taken)
    assert isinstance(keys.claim(keyed(fingerprint="f2"), T0 + LEASE, WINDOW, LEASE), Taken)
    assert isinstance(keys.claim(keyed(principal="p2"), T0 + LEASE, WINDOW, LEASE), Taken)
    second = keys.claim(keyed(), T0 + LEASE, WINDOW, LEASE)
    assert isinstance(second, Claimed) and second != first
    assert not keys.complete(keyed(), first, ANSWER)
    assert keys.complete(keyed(), second, ANSWER)


def test_concurrent_claims_have_exactly_one_winner(store: Store) -> None:
    def claim(_: int) -> Claimed | Taken:
        return store.idempotency_keys.claim(keyed(key="race"), T0, WINDOW, LEASE)

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(claim, range(32)))
    assert sum(isinstance(result, Claimed) for result in results) == 1


def test_purge_drops_only_keys_first_used_before_the_cutoff(store: Store, engine: Engine) -> None:
    keys = store.idempotency_keys
    for i in range(7):
        claim = keys.claim(keyed(key=f"k{i}"), T0 + i, WINDOW, LEASE)
        assert isinstance(claim, Claimed)
    assert keys.purge(T0 + 5, batch_size=2) == 5
    assert rows(engine) == 2
    assert isinstance(keys.claim(keyed(key="k0"), T0 + 10, WINDOW, LEASE), Claimed)
