"""The SQL store on both backends: idempotent recording, derivation, queries, upkeep."""

from __future__ import annotations

import random
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, delete, select

from hookstream.core.records import Attempt
from hookstream.store import (
    DeliveryRow,
    InvalidCursorError,
    Store,
    UnsupportedStoreUrlError,
    migrate,
)
from hookstream.store.cursor import decode_cursor, encode_cursor
from hookstream.store.engine import normalize_url
from hookstream.store.schema import attempts, deliveries, metadata, webhook_health
from hookstream.store.versioning import current_revision
from tests.helpers import attempt_record

HOUR_MS = 60 * 60 * 1000
T0 = 1_700_000_000_000
TABLES = (attempts, deliveries, webhook_health)


def attempt(
    delivery_id: str = "d1",
    number: int = 1,
    *,
    outcome: str = "success",
    webhook_id: str = "w1",
    **fields: Any,
) -> Attempt:
    """`attempt_record` with this module's defaults, as the typed record the store takes: short
    ids, at T0, 25 ms, "ok" from every success. `fields` are `attempt_record`'s."""
    return Attempt.from_record(
        attempt_record(
            delivery_id,
            number,
            outcome=outcome,
            webhook_id=webhook_id,
            url=f"https://example.com/{webhook_id}",
            duration_ms=25,
            response_body="ok" if outcome == "success" else None,
            **{"tenant_id": "t1", "started_at_ms": T0, **fields},
        )
    )


def dump(engine: Engine, *tables: Any) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, in primary-key order: the tables' full observable state."""
    contents: dict[str, list[tuple[Any, ...]]] = {}
    with engine.connect() as conn:
        for table in tables or TABLES:
            pk = list(table.primary_key.columns)
            contents[table.name] = [tuple(row) for row in conn.execute(select(table).order_by(*pk))]
    return contents


def wipe(engine: Engine) -> None:
    with engine.begin() as conn:
        for table in TABLES:
            conn.execute(delete(table))


def history(seed: int = 7) -> list[dict[str, Any]]:
    """A plausible log: 40 deliveries over 3 webhooks and 2 tenants, retries, replays, skips."""
    rng = random.Random(seed)
    webhooks = [("w1", "t1"), ("w2", "t1"), ("w3", "t2")]
    log: list[dict[str, Any]] = []
    for i in range(40):
        webhook_id, tenant_id = webhooks[i % 3]
        delivery_id = f"d{i:03d}"
        started = T0 + i * 60_000
        endings = ["success", "exhausted", "permanent_failure", "skipped", "temporary_failure"]
        ending = rng.choice(endings)
        failures = rng.randint(0, 3) if ending != "skipped" else 0
        for number in range(1, failures + 1):
            log.append(
                attempt(
                    delivery_id,
                    number,
                    outcome="temporary_failure",
                    status_code=503,
                    started_at_ms=started,
                    body=b'{"n": %d}' % i if number == 1 else None,
                    next_attempt_at_ms=started + 5_000,
                    error="HTTP 503",
                    webhook_id=webhook_id,
                    tenant_id=tenant_id,
                )
            )
            started += 5_000
        log.append(
            attempt(
                delivery_id,
                failures + 1,
                outcome=ending,
                status_code=None if ending == "skipped" else 200,
                started_at_ms=started,
                body=b'{"n": %d}' % i if failures == 0 else None,
                webhook_id=webhook_id,
                tenant_id=tenant_id,
            )
        )
        if ending == "exhausted" and rng.random() < 0.5:
            log.append(
                attempt(
                    delivery_id,
                    1,
                    trigger="manual",
                    outcome="success",
                    started_at_ms=started + HOUR_MS,
                    body=b'{"n": %d}' % i,
                    webhook_id=webhook_id,
                    tenant_id=tenant_id,
                )
            )
    log.sort(key=lambda a: a.started_at_ms)
    return log


def batches(items: Sequence[dict[str, Any]], size: int) -> list[list[dict[str, Any]]]:
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


# -- migrations -------------------------------------------------------------------------


def test_migrate_twice_is_a_noop_and_matches_schema(
    store: Store, store_url: str, engine: Engine
) -> None:
    store.record_attempts([attempt()])
    before = dump(engine)
    migrate(store_url)
    migrate(store_url)
    assert current_revision(engine) == "0005"
    assert dump(engine) == before
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == []


# -- recording --------------------------------------------------------------------------


def test_same_batch_twice_leaves_identical_tables(store: Store, engine: Engine) -> None:
    batch = history()[:25]
    store.record_attempts(batch)
    first = dump(engine)
    store.record_attempts(batch)
    assert dump(engine) == first
    assert len(first["attempts"]) == 25


def test_replaying_the_whole_log_twice_leaves_identical_tables(
    store: Store, engine: Engine
) -> None:
    log = history()
    for batch in batches(log, 9):
        store.record_attempts(batch)
    first = dump(engine)
    for batch in batches(log, 13):
        store.record_attempts(batch)
    assert dump(engine) == first
    assert len(first["attempts"]) == len(log)
    assert len(first["deliveries"]) == 40


def test_out_of_order_batches_give_the_same_deliveries(store: Store, engine: Engine) -> None:
    log = history()
    for batch in batches(log, 10):
        store.record_attempts(batch)
    in_order = dump(engine, deliveries)
    wipe(engine)
    shuffled = list(log)
    random.Random(3).shuffle(shuffled)
    for batch in reversed(batches(shuffled, 6)):
        store.record_attempts(batch)
    assert dump(engine, deliveries) == in_order


def test_an_empty_batch_is_fine(store: Store, engine: Engine) -> None:
    store.record_attempts([])
    assert dump(engine) == {"attempts": [], "deliveries": [], "webhook_health": []}


def test_a_large_batch_is_one_call(store: Store) -> None:
    batch = [
        attempt(f"d{i:04d}", webhook_id=f"w{i % 7}", started_at_ms=T0 + i) for i in range(1200)
    ]
    store.record_attempts(batch)
    page = store.list_deliveries(tenant_id="t1", limit=1000)
    assert len(page.items) == 1000 and page.next_cursor is not None


def test_concurrent_writers_lose_nothing(store: Store) -> None:
    def write(worker: int) -> None:
        for round_ in range(10):
            store.record_attempts(
                [attempt(f"d{worker}_{round_}_{i}", webhook_id=f"w{worker}") for i in range(20)]
            )

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(write, range(4)))
    assert len(store.list_deliveries(tenant_id=None, limit=1000).items) == 800


@pytest.mark.parametrize(
    ("outcome", "status"),
    [
        ("success", "succeeded"),
        ("temporary_failure", "retrying"),
        ("permanent_failure", "failed"),
        ("exhausted", "failed"),
        ("refused", "failed"),
        ("skipped", "skipped"),
    ],
)
def test_delivery_status_follows_the_latest_attempt(
    store: Store, outcome: str, status: str
) -> None:
    store.record_attempts(
        [
            attempt(outcome="temporary_failure", status_code=503, next_attempt_at_ms=T0 + 5000),
            attempt(number=2, outcome=outcome, started_at_ms=T0 + 5000, status_code=None),
        ]
    )
    detail = store.get_delivery("d1", "t1")
    assert detail is not None
    row = detail.delivery
    assert row.status == status
    assert (row.attempt_count, row.created_at_ms, row.last_attempt_at_ms) == (2, T0, T0 + 5000)
    assert row.next_attempt_at_ms is None
    assert row.updated_at_ms == T0 + 5000 + 25
    assert [a.attempt_number for a in detail.attempts] == [1, 2]


def test_latest_attempt_breaks_ties_by_attempt_number(store: Store) -> None:
    # The ids sort the other way round, so only the attempt number can pick the winner.
    store.record_attempts(
        [
            attempt(number=2, outcome="success", started_at_ms=T0, attempt_id="att_a"),
            attempt(number=1, outcome="temporary_failure", started_at_ms=T0, attempt_id="att_z"),
        ]
    )
    detail = store.get_delivery("d1", None)
    assert detail is not None and detail.delivery.status == "succeeded"
    assert store.webhook_health("w1", T0).failing_since_ms is None


def test_body_is_kept_from_the_first_attempt(store: Store) -> None:
    store.record_attempts(
        [attempt(outcome="temporary_failure", status_code=503, body=b'{"id": "evt_d1"}')]
    )
    store.record_attempts([attempt(number=2, started_at_ms=T0 + 5000)])
    detail = store.get_delivery("d1", "t1")
    assert detail is not None and detail.delivery.body == b'{"id": "evt_d1"}'
    assert detail.delivery.attempt_count == 2


def test_body_arriving_after_a_later_attempt_is_still_kept(store: Store) -> None:
    store.record_attempts([attempt(number=2, started_at_ms=T0 + 5000)])
    store.record_attempts([attempt(outcome="temporary_failure", body=b"payload")])
    detail = store.get_delivery("d1", "t1")
    assert detail is not None
    assert (detail.delivery.body, detail.delivery.status) == (b"payload", "succeeded")


# -- queries ----------------------------------------------------------------------------


def _many_deliveries(store: Store) -> None:
    """120 deliveries; pairs share created_at_ms so that the delivery_id tie-break matters."""
    outcomes = ["success", "temporary_failure", "exhausted", "skipped"]
    types = ["invoice.paid", "invoice.created", "offer.accepted"]
    store.record_attempts(
        [
            attempt(
                f"d{i:03d}",
                webhook_id=f"w{i % 2}",
                event_type=types[i % 3],
                outcome=outcomes[i % 4],
                started_at_ms=T0 + (i // 2) * 1000,
            )
            for i in range(120)
        ]
    )


def _all_pages(store: Store, limit: int, **filters: Any) -> list[DeliveryRow]:
    rows: list[DeliveryRow] = []
    cursor: str | None = None
    for _ in range(1000):
        page = store.list_deliveries(limit=limit, cursor=cursor, **filters)
        assert len(page.items) <= limit
        rows.extend(page.items)
        cursor = page.next_cursor
        if cursor is None:
            return rows
    raise AssertionError("pagination did not end")


def _expected(store: Store, **filters: Any) -> list[str]:
    everything = store.list_deliveries(tenant_id=None, limit=1000).items
    wanted = [
        row
        for row in everything
        if all(getattr(row, name) == value for name, value in filters.items())
    ]
    return [row.delivery_id for row in wanted]


@pytest.mark.parametrize("limit", [1, 7, 50, 120, 1000])
def test_cursor_pages_cover_everything_once_newest_first(store: Store, limit: int) -> None:
    _many_deliveries(store)
    rows = _all_pages(store, limit, tenant_id="t1")
    ids = [row.delivery_id for row in rows]
    assert len(ids) == 120 and len(set(ids)) == 120
    keys = [(row.created_at_ms, row.delivery_id) for row in rows]
    assert keys == sorted(keys, reverse=True)


@pytest.mark.parametrize(
    "filters",
    [
        {"webhook_id": "w1"},
        {"event_type": "invoice.created"},
        {"status": "failed"},
        {"status": "retrying", "webhook_id": "w1"},
        {"webhook_id": "w0", "event_type": "offer.accepted", "status": "succeeded"},
    ],
)
def test_filters_with_pagination(store: Store, filters: dict[str, str]) -> None:
    _many_deliveries(store)
    expected = _expected(store, **filters)
    assert expected
    got = [row.delivery_id for row in _all_pages(store, 4, tenant_id="t1", **filters)]
    assert got == expected


def test_time_range_is_half_open_on_created_at(store: Store) -> None:
    _many_deliveries(store)
    since, until = T0 + 10_000, T0 + 20_000
    rows = _all_pages(store, 3, tenant_id=None, since_ms=since, until_ms=until)
    assert len(rows) == 20
    assert all(since <= row.created_at_ms < until for row in rows)


@pytest.mark.parametrize(
    "cursor",
    ["", "!!!!", "not base64 at all", "eyJhIjoxfQ", encode_cursor(1, "x")[:-3], "W10", "x" * 600],
)
def test_malformed_cursor_is_a_clear_error(store: Store, cursor: str) -> None:
    with pytest.raises(InvalidCursorError, match="malformed cursor"):
        store.list_deliveries(tenant_id=None, cursor=cursor)


def test_cursor_round_trip_and_bad_input() -> None:
    assert decode_cursor(encode_cursor(T0, "d_1")) == (T0, "d_1")
    with pytest.raises(ValueError, match="malformed cursor"):
        decode_cursor(encode_cursor(2**64, "d"))


def test_bad_limit_and_status_are_rejected(store: Store) -> None:
    with pytest.raises(ValueError, match="limit"):
        store.list_deliveries(tenant_id=None, limit=0)
    with pytest.raises(ValueError, match="unknown delivery status"):
        store.list_deliveries(tenant_id=None, status="exploded")


def test_tenant_scoping(store: Store) -> None:
    store.record_attempts(
        [attempt("d_a", tenant_id="ta", webhook_id="wa"), attempt("d_b", tenant_id="tb")]
    )
    assert store.get_delivery("d_a", "ta") is not None
    assert store.get_delivery("d_a", "tb") is None
    assert store.get_delivery("d_a", None) is not None
    assert store.get_delivery("missing", None) is None
    assert [r.delivery_id for r in store.list_deliveries(tenant_id="ta").items] == ["d_a"]
    assert [r.delivery_id for r in store.list_deliveries(tenant_id="tb").items] == ["d_b"]
    assert len(store.list_deliveries(tenant_id=None).items) == 2
    assert store.list_deliveries(tenant_id="tc").items == []


def test_failed_deliveries_in_range(store: Store) -> None:
    store.record_attempts(
        [
            attempt("d_old", outcome="exhausted", started_at_ms=T0 - HOUR_MS, status_code=500),
            attempt("d_in1", outcome="permanent_failure", started_at_ms=T0, status_code=400),
            attempt("d_in2", outcome="refused", started_at_ms=T0 + 10, status_code=None),
            attempt("d_ok", outcome="success", started_at_ms=T0 + 20),
            attempt("d_retry", outcome="temporary_failure", started_at_ms=T0 + 30),
            attempt("d_other", outcome="exhausted", started_at_ms=T0 + 40, webhook_id="w2"),
            attempt("d_late", outcome="exhausted", started_at_ms=T0 + HOUR_MS),
            # Created before `since` but failed (finally) inside the range.
            attempt("d_long", outcome="temporary_failure", started_at_ms=T0 - 2 * HOUR_MS),
            attempt("d_long", 2, outcome="exhausted", started_at_ms=T0 + 50),
        ]
    )
    ids = [row.delivery_id for row in store.failed_deliveries("w1", T0, T0 + HOUR_MS)]
    assert ids == ["d_long", "d_in1", "d_in2"]
    everything = [row.delivery_id for row in store.failed_deliveries("w1", T0)]
    assert everything == ["d_long", "d_in1", "d_in2", "d_late"]
    assert all(row.body is None for row in store.failed_deliveries("w1", T0))


# -- health ------------------------------------------------------------------------------


def test_health_of_an_unknown_webhook(store: Store) -> None:
    health = store.webhook_health("nobody", T0)
    assert health.last_outcome is None and health.failing_since_ms is None
    assert (health.success_rate_24h, health.attempts_24h) == (None, 0)


def test_health_success_rate_over_24h_ignores_skips(store: Store) -> None:
    store.record_attempts(
        [
            attempt("d_ancient", outcome="temporary_failure", started_at_ms=T0 - 25 * HOUR_MS),
            attempt("d1", outcome="success", started_at_ms=T0 - 2 * HOUR_MS),
            attempt("d2", outcome="success", started_at_ms=T0 - HOUR_MS),
            attempt("d3", outcome="permanent_failure", started_at_ms=T0 - 10, status_code=404),
            attempt("d4", outcome="skipped", started_at_ms=T0 - 5, status_code=None),
            attempt("d5", outcome="success", started_at_ms=T0, webhook_id="w2"),
        ]
    )
    health = store.webhook_health("w1", T0)
    assert health.attempts_24h == 3
    assert health.success_rate_24h == pytest.approx(2 / 3)
    assert (health.last_outcome, health.last_status_code) == ("permanent_failure", 404)
    assert (health.last_attempt_at_ms, health.failing_since_ms) == (T0 - 10, T0 - 10)


def test_failing_since_is_set_kept_and_cleared(store: Store) -> None:
    def failing_since() -> int | None:
        return store.webhook_health("w1", T0).failing_since_ms

    store.record_attempts([attempt("d1", outcome="success", started_at_ms=T0)])
    assert failing_since() is None
    store.record_attempts([attempt("d2", outcome="temporary_failure", started_at_ms=T0 + 10)])
    assert failing_since() == T0 + 10
    store.record_attempts(
        [
            attempt("d3", outcome="exhausted", started_at_ms=T0 + 20),
            attempt("d4", outcome="skipped", started_at_ms=T0 + 25),
        ]
    )
    assert failing_since() == T0 + 10
    # An attempt older than the last one recorded cannot rewrite history.
    store.record_attempts([attempt("d0", outcome="success", started_at_ms=T0 + 5)])
    assert failing_since() == T0 + 10
    store.record_attempts([attempt("d5", outcome="success", started_at_ms=T0 + 30)])
    assert failing_since() is None
    store.record_attempts(
        [
            attempt("d7", outcome="success", started_at_ms=T0 + 50),
            attempt("d6", outcome="refused", started_at_ms=T0 + 40, status_code=None),
            attempt("d8", outcome="permanent_failure", started_at_ms=T0 + 60),
        ]
    )
    assert failing_since() == T0 + 60


def test_only_skips_leave_no_health_row(store: Store, engine: Engine) -> None:
    store.record_attempts([attempt(outcome="skipped", status_code=None)])
    assert dump(engine, webhook_health) == {"webhook_health": []}


def test_auto_disable_once_per_streak(store: Store) -> None:
    store.record_attempts(
        [
            attempt("d1", outcome="temporary_failure", started_at_ms=T0, webhook_id="w1"),
            attempt("d2", outcome="exhausted", started_at_ms=T0 + HOUR_MS, webhook_id="w1"),
            attempt("d3", outcome="temporary_failure", started_at_ms=T0 + 10, webhook_id="w2"),
            attempt("d4", outcome="success", started_at_ms=T0, webhook_id="w3"),
        ]
    )
    assert store.webhooks_failing_since(T0 - 1) == []
    candidates = store.webhooks_failing_since(T0 + 10)
    assert [(c.webhook_id, c.tenant_id, c.failing_since_ms) for c in candidates] == [
        ("w1", "t1", T0),
        ("w2", "t1", T0 + 10),
    ]
    assert store.mark_auto_disabled("w1", T0) is True
    assert store.mark_auto_disabled("w1", T0) is False
    assert store.mark_auto_disabled("nobody", T0) is False
    assert [c.webhook_id for c in store.webhooks_failing_since(T0 + 10)] == ["w2"]

    # More failures continue the same streak: still handled.
    store.record_attempts([attempt("d5", outcome="exhausted", started_at_ms=T0 + 2 * HOUR_MS)])
    assert [c.webhook_id for c in store.webhooks_failing_since(T0 + 10)] == ["w2"]

    # A success ends the streak; the next failure starts a new one, acted on once again.
    new_streak = T0 + 4 * HOUR_MS
    store.record_attempts(
        [
            attempt("d6", outcome="success", started_at_ms=T0 + 3 * HOUR_MS),
            attempt("d7", outcome="temporary_failure", started_at_ms=new_streak),
        ]
    )
    assert [c.webhook_id for c in store.webhooks_failing_since(T0 + 10)] == ["w2"]
    again = [c for c in store.webhooks_failing_since(new_streak) if c.webhook_id == "w1"]
    assert [c.failing_since_ms for c in again] == [new_streak]
    assert store.mark_auto_disabled("w1", new_streak) is True
    assert store.mark_auto_disabled("w1", new_streak) is False
    assert [c.webhook_id for c in store.webhooks_failing_since(new_streak)] == ["w2"]


def test_replaying_the_log_keeps_the_auto_disable_mark(store: Store, engine: Engine) -> None:
    log = [
        attempt("d1", outcome="temporary_failure", started_at_ms=T0),
        attempt("d2", outcome="exhausted", started_at_ms=T0 + 10),
    ]
    store.record_attempts(log)
    assert store.mark_auto_disabled("w1", T0)
    before = dump(engine)
    store.record_attempts(log)
    assert dump(engine) == before
    assert store.webhooks_failing_since(T0 + 10) == []


# -- retention ---------------------------------------------------------------------------


def test_retention_deletes_in_batches_and_removes_empty_deliveries(
    store: Store, engine: Engine
) -> None:
    old = [attempt(f"d_old{i:02d}", started_at_ms=T0 + i) for i in range(23)]
    straddling = [
        attempt("d_mixed", outcome="temporary_failure", started_at_ms=T0 + 50, body=b"b"),
        attempt("d_mixed", 2, outcome="success", started_at_ms=T0 + 2 * HOUR_MS),
    ]
    new = [attempt("d_new", started_at_ms=T0 + 3 * HOUR_MS)]
    store.record_attempts(old + straddling + new)

    assert store.delete_attempts_before(T0 + HOUR_MS, batch_size=5) == 24
    left = dump(engine, attempts, deliveries)
    assert [row[0] for row in left["attempts"]] == [
        "att_d_mixed_2_scheduled",
        "att_d_new_1_scheduled",
    ]
    assert [row[0] for row in left["deliveries"]] == ["d_mixed", "d_new"]
    mixed = store.get_delivery("d_mixed", "t1")
    assert mixed is not None and mixed.delivery.body == b"b"
    assert store.delete_attempts_before(T0 + HOUR_MS, batch_size=5) == 0
    assert store.delete_attempts_before(T0 + 10 * HOUR_MS) == 2
    assert dump(engine, attempts, deliveries) == {"attempts": [], "deliveries": []}
    with pytest.raises(ValueError, match="batch_size"):
        store.delete_attempts_before(T0, batch_size=0)


# -- URLs ------------------------------------------------------------------------------


def test_store_urls() -> None:
    assert normalize_url("postgresql://u:p@h/db").drivername == "postgresql+psycopg"
    assert normalize_url("postgres://u:p@h/db").drivername == "postgresql+psycopg"
    assert normalize_url("sqlite:///relative/x.db").database == "relative/x.db"
    for bad in ("sqlite://", "sqlite:///:memory:", "mysql://h/db", "not a url"):
        with pytest.raises(UnsupportedStoreUrlError):
            normalize_url(bad)
