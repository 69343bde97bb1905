"""The log-sink as a real process on both store backends: delivery-log -> SQL, health, upkeep.

Attempt records are produced straight to the delivery-log topic unless a test needs the whole
pipeline; the store is read with its own API and with full table dumps.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from sqlalchemy import Engine, Table, func, select

from hookstream.core.codec import default_codec
from hookstream.core.kafka import admin_client, consumer_config, producer_config
from hookstream.core.records import LOG_SINK_GROUP, Webhook
from hookstream.core.records import Attempt as AttemptRecord
from hookstream.core.settings import Settings
from hookstream.core.signing import new_secret
from hookstream.core.topics import Topics
from hookstream.core.view import webhook_view
from hookstream.logsink.upkeep import DISABLED_EVENT_TYPE, Upkeep, _reason, disabled_event_id
from hookstream.store import Store
from hookstream.store.engine import make_engine
from hookstream.store.schema import attempts, deliveries, webhook_health
from hookstream.tools.topics import create_topics
from tests.conftest import ServiceStarter, SettingsFactory
from tests.helpers import attempt_record, wait_for
from tests.pipeline import Platform, Service, make_webhook, read_topic
from tests.receiver import Behaviour, TestReceiver

pytestmark = pytest.mark.integration

CODEC = default_codec()
TABLES = (attempts, deliveries, webhook_health)
MINUTE_MS = 60 * 1000
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS

Attempt = dict[str, Any]
Dump = dict[str, list[tuple[Any, ...]]]


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture
def db(store_url: str) -> Iterator[Engine]:
    """A raw engine on the store's database, for counts and full table dumps."""
    Store.open(store_url).close()  # migrated, so the tables exist before the log-sink starts
    engine = make_engine(store_url)
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture
def sink_settings(store_url: str, settings_factory: SettingsFactory) -> SettingsFactory:
    """Settings on this test's store, with every topic they name created."""

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "store_url": store_url,
            "allow_private_targets": ("127.0.0.0/8",),
            "request_timeout": 2.0,
        }
        values.update(overrides)
        settings = settings_factory(**values)
        create_topics(settings)
        return settings

    return make


# -- helpers ----------------------------------------------------------------------------------


_FINAL = (
    ("success", 200, None, "ok"),
    ("success", 204, None, None),
    ("success", 202, None, "accepted ✓"),
    ("exhausted", 503, None, "busy"),
    ("exhausted", None, "timed out after 30 s", None),
    ("permanent_failure", 400, None, '{"error": "bad request"}'),
    ("permanent_failure", 410, None, "gone"),
    ("temporary_failure", 500, None, "oops"),
    ("refused", None, "destination refused: 10.0.0.7 is private", None),
    ("skipped", None, "webhook disabled: by its owner", None),
)
_RETRIED = (
    (500, None, "internal error"),
    (503, None, None),
    (429, None, "slow down"),
    (None, "connection refused", None),
)


def attempt_order(attempt: Attempt) -> tuple[int, int, str]:
    """Which of two attempts is later, as the store documents it: start, number, id."""
    return (attempt["started_at_ms"], attempt["attempt_number"], attempt["attempt_id"])


def delivery_log(rng: random.Random, total: int, now_ms: int, tag: str) -> list[Attempt]:
    """About `total` attempts as senders log them: several per delivery, mixed outcomes,
    several webhooks and tenants, roughly in time order but not exactly.

    Every webhook's attempts start at distinct milliseconds. The store folds endpoint health
    by start time alone, so two attempts of one webhook starting in the same millisecond with
    different outcomes leave a result that depends on batch boundaries (a known limitation of
    `fold_health`, not what these tests are about).
    """
    webhooks = [(f"tenant_{t}_{tag}", f"wh_{tag}_{t}{n}") for t in "abc" for n in range(3)]
    types = ("invoice.created", "invoice.paid", "offer.accepted", "milestone.approved")
    used: set[tuple[str, int]] = set()
    records: list[Attempt] = []
    serial = 0
    while len(records) < total:
        serial += 1
        tenant_id, webhook_id = rng.choice(webhooks)
        delivery_id = f"dlv_{tag}_{serial:05d}"
        event_type = rng.choice(types)
        count = rng.choices((1, 2, 3, 4), weights=(4, 3, 2, 1))[0]
        started = now_ms - rng.randrange(6 * HOUR_MS)
        for number in range(1, count + 1):
            while (webhook_id, started) in used:
                started += 1
            used.add((webhook_id, started))
            last = number == count
            if last:
                outcome, status, error, response = rng.choice(_FINAL)
            else:
                outcome = "temporary_failure"
                status, error, response = rng.choice(_RETRIED)
            delay = rng.randrange(200, 10 * MINUTE_MS)
            records.append(
                attempt_record(
                    delivery_id,
                    number,
                    webhook_id=webhook_id,
                    tenant_id=tenant_id,
                    event_type=event_type,
                    started_at_ms=started,
                    outcome=outcome,
                    status_code=status,
                    error=error,
                    response_body=response,
                    next_attempt_at_ms=started + delay if outcome == "temporary_failure" else None,
                    body=orjson.dumps({"id": f"evt_{delivery_id}", "type": event_type})
                    if number == 1
                    else None,
                )
            )
            started += delay
    # Senders log in completion order: mostly chronological, with local disorder.
    records.sort(key=lambda record: record["started_at_ms"] + rng.randrange(5 * MINUTE_MS))
    return records


def produce_attempts(platform: Platform, records: Sequence[Attempt]) -> None:
    topic = platform.topics.delivery_log
    for record in records:
        value = CODEC.encode("Attempt", record)
        platform.raw(topic, value, key=record["webhook_id"].encode(), flush=False)
    platform.flush()


def _plain(value: Any) -> Any:
    # PostgreSQL hands bytea back as memoryview.
    return bytes(value) if isinstance(value, memoryview) else value


def dump(engine: Engine) -> Dump:
    """Every row of every table, sorted by primary key."""
    out: Dump = {}
    with engine.connect() as conn:
        for table in TABLES:
            rows = [tuple(_plain(v) for v in row) for row in conn.execute(select(table))]
            out[table.name] = sorted(rows, key=lambda row: row[0])
    return out


def count(engine: Engine, table: Table = attempts) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def attempt_ids(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        return set(conn.execute(select(attempts.c.attempt_id)).scalars())


class GroupProgress:
    """Whether a consumer group has committed every partition of delivery-log to its end."""

    def __init__(self, settings: Settings, group: str = LOG_SINK_GROUP) -> None:
        self.topic = Topics.from_settings(settings).delivery_log
        self.partitions = settings.delivery_log_partitions
        # Never subscribes: only reads the group's committed offsets.
        self.consumer = Consumer(consumer_config(settings, group, {"enable.auto.commit": False}))

    def at_end(self) -> bool:
        wanted = [TopicPartition(self.topic, p) for p in range(self.partitions)]
        for committed in self.consumer.committed(wanted, timeout=10):
            _low, high = self.consumer.get_watermark_offsets(
                TopicPartition(self.topic, committed.partition), timeout=10, cached=False
            )
            # A partition never committed reports a negative (logical) offset.
            if high > 0 and committed.offset < high:
                return False
        return True

    def close(self) -> None:
        self.consumer.close()


def wait_until_caught_up(
    settings: Settings, group: str = LOG_SINK_GROUP, timeout: float = 60
) -> None:
    progress = GroupProgress(settings, group)
    try:
        wait_for(progress.at_end, timeout=timeout, interval=0.2, what=f"{group} at the end")
    finally:
        progress.close()


def members_with_partitions(settings: Settings, group: str = LOG_SINK_GROUP) -> int:
    """How many members of the group own at least one partition right now."""
    group_id = settings.consumer_group_prefix + group
    admin = admin_client(settings)  # kept referenced until the answer is in
    future = admin.describe_consumer_groups([group_id], request_timeout=10)[group_id]
    members = future.result(timeout=15).members
    return sum(1 for member in members if member.assignment.topic_partitions)


def start_sink(services: ServiceStarter, settings: Settings) -> Service:
    return services("log-sink", settings)


def assert_alive(service: Service) -> None:
    assert service.alive(), f"{service.name} exited:\n{service.log()[-4000:]}"


def now_ms() -> int:
    return int(time.time() * 1000)


def expected_deliveries(records: Sequence[Attempt]) -> list[tuple[Any, ...]]:
    """The deliveries table as the store documents it, computed from distinct attempts."""
    by_delivery: dict[str, list[Attempt]] = {}
    for record in {record["attempt_id"]: record for record in records}.values():
        by_delivery.setdefault(record["delivery_id"], []).append(record)
    statuses = {
        "success": "succeeded",
        "temporary_failure": "retrying",
        "skipped": "skipped",
    }
    rows: list[tuple[Any, ...]] = []
    for delivery_id, group in sorted(by_delivery.items()):
        group.sort(key=attempt_order)
        latest = group[-1]
        values = {
            "delivery_id": delivery_id,
            "tenant_id": latest["tenant_id"],
            "webhook_id": latest["webhook_id"],
            "event_id": latest["event_id"],
            "event_type": latest["event_type"],
            "status": statuses.get(latest["outcome"], "failed"),
            "attempt_count": len(group),
            "last_status_code": latest["status_code"],
            "last_error": latest["error"],
            "last_attempt_at_ms": latest["started_at_ms"],
            "next_attempt_at_ms": latest["next_attempt_at_ms"],
            "created_at_ms": group[0]["started_at_ms"],
            "updated_at_ms": max(a["started_at_ms"] + a["duration_ms"] for a in group),
            "body": next((a["body"] for a in group if a["body"] is not None), None),
        }
        rows.append(tuple(values[column.name] for column in deliveries.columns))
    return rows


def last_attempts(records: Sequence[Attempt]) -> dict[str, tuple[str, int | None, int]]:
    """Per webhook: outcome, status and start of its latest attempt that reached the endpoint."""
    latest: dict[str, Attempt] = {}
    for record in records:
        if record["outcome"] == "skipped":
            continue
        seen = latest.get(record["webhook_id"])
        if seen is None or attempt_order(record) > attempt_order(seen):
            latest[record["webhook_id"]] = record
    return {
        webhook_id: (a["outcome"], a["status_code"], a["started_at_ms"])
        for webhook_id, a in latest.items()
    }


# -- 1. replay ---------------------------------------------------------------------------------


def test_replaying_the_whole_delivery_log_leaves_identical_tables(
    sink_settings: SettingsFactory, db: Engine, platform: Platform, services: ServiceStarter
) -> None:
    records = delivery_log(random.Random(1), 2000, now_ms(), uuid.uuid4().hex[:6])
    distinct = {record["attempt_id"] for record in records}
    assert len(distinct) == len(records) >= 2000
    produce_attempts(platform, records)

    settings = sink_settings(sink_batch_size=150)
    first = start_sink(services, settings)
    wait_for(lambda: count(db) == len(distinct), timeout=60, what="every attempt stored")
    wait_until_caught_up(settings)
    assert first.terminate() == 0, first.log()[-4000:]
    stored = dump(db)

    # What was stored is what the log says, not merely stable.
    assert {row[0] for row in stored["attempts"]} == distinct
    assert stored["deliveries"] == expected_deliveries(records)
    health = {row[0]: row for row in stored["webhook_health"]}
    names = [column.name for column in webhook_health.columns]
    latest = {
        webhook_id: (
            row[names.index("last_outcome")],
            row[names.index("last_status_code")],
            row[names.index("last_attempt_at_ms")],
        )
        for webhook_id, row in health.items()
    }
    assert latest == last_attempts(records)

    # A second sink in another consumer group reads the same topic from the beginning, with
    # different batch boundaries, into the same store.
    replay = sink_settings(
        consumer_group_prefix=f"replay-{uuid.uuid4().hex[:8]}.", sink_batch_size=400
    )
    second = start_sink(services, replay)
    wait_until_caught_up(replay)
    assert_alive(second)
    assert second.terminate() == 0, second.log()[-4000:]
    assert dump(db) == stored


# -- 2. kill -9 --------------------------------------------------------------------------------


def test_a_killed_sink_restarts_and_stores_every_attempt_exactly_once(
    sink_settings: SettingsFactory, db: Engine, platform: Platform, services: ServiceStarter
) -> None:
    rng = random.Random(2)
    records = delivery_log(rng, 5000, now_ms(), uuid.uuid4().hex[:6])
    stream = list(records)
    # A sender that re-processes a record after its own crash logs the same attempt id again:
    # byte-identical copies, and copies re-timed by the repeated request.
    for original in rng.sample(records, 250):
        copy = dict(original)
        if rng.random() < 0.2:
            copy["started_at_ms"] += rng.randrange(1, 5000)
            copy["duration_ms"] += 17
        position = stream.index(original) + 1
        stream.insert(rng.randrange(position, len(stream) + 1), copy)
    versions: dict[str, list[tuple[Any, ...]]] = {}
    columns = [column.name for column in attempts.columns]
    for record in stream:
        versions.setdefault(record["attempt_id"], []).append(
            tuple(record[name] for name in columns)
        )
    assert len(stream) >= 5000 and len(versions) < len(stream)
    produce_attempts(platform, stream)

    settings = sink_settings(sink_batch_size=200)
    sink = start_sink(services, settings)
    wait_for(lambda: count(db) > 0, timeout=60, interval=0.01, what="the first stored batch")
    sink.kill()
    at_kill = count(db)
    assert 0 < at_kill < len(versions), "the sink was not killed half way through"

    restarted = start_sink(services, settings)
    wait_for(lambda: count(db) >= len(versions), timeout=90, what="every attempt stored")
    wait_until_caught_up(settings)
    assert_alive(restarted)

    stored = dump(db)
    assert len(stored["attempts"]) == len(versions)
    for row in stored["attempts"]:
        assert row in versions[row[0]], f"{row[0]} is stored as no version of it on the topic"
    # The derived rows agree with the attempts that were kept.
    kept = [dict(zip(columns, row, strict=True)) for row in stored["attempts"]]
    by_delivery: dict[str, list[dict[str, Any]]] = {}
    for row in kept:
        by_delivery.setdefault(row["delivery_id"], []).append(row)
    derived = {row[0]: row for row in stored["deliveries"]}
    assert set(derived) == set(by_delivery)
    names = [column.name for column in deliveries.columns]
    for delivery_id, group in by_delivery.items():
        row = dict(zip(names, derived[delivery_id], strict=True))
        latest = max(group, key=attempt_order)
        assert row["attempt_count"] == len(group)
        assert row["created_at_ms"] == min(a["started_at_ms"] for a in group)
        assert row["last_attempt_at_ms"] == latest["started_at_ms"]
        assert row["last_status_code"] == latest["status_code"]


# -- 3. poison ---------------------------------------------------------------------------------


def test_undecodable_records_are_dead_lettered_and_later_attempts_still_stored(
    sink_settings: SettingsFactory, db: Engine, platform: Platform, services: ServiceStarter
) -> None:
    settings = sink_settings()
    topics = Topics.from_settings(settings)
    webhook_id = f"wh_{uuid.uuid4().hex[:12]}"
    start = now_ms()
    good = [
        attempt_record(f"dlv_{i}", 1, webhook_id=webhook_id, started_at_ms=start + i)
        for i in range(10)
    ]
    event = {
        "id": "evt_1",
        "type": "invoice.paid",
        "tenant_id": "tenant_a",
        "occurred_at": "2026-01-01T00:00:00Z",
        "data": "{}",
        "published_at_ms": None,
    }
    bad: list[bytes | None] = [
        b"\x00\x01not avro at all \xff\xfe",
        CODEC.encode("Attempt", good[0])[:25],  # truncated body
        CODEC.encode("Event", event),  # a valid record of the wrong type
        None,  # a tombstone
    ]
    key = webhook_id.encode()
    produce_attempts(platform, good[:5])
    for value in bad:
        platform.raw(topics.delivery_log, value, key=key, flush=False)
    platform.flush()
    produce_attempts(platform, good[5:])

    sink = start_sink(services, settings)
    wanted = {record["attempt_id"] for record in good}
    wait_for(lambda: attempt_ids(db) == wanted, timeout=60, what="the good attempts stored")

    def dead_letters() -> list[dict[str, Any]]:
        found = read_topic(settings, topics.dlq, "DeadLetter")
        return found if len(found) >= len(bad) else []

    letters = wait_for(dead_letters, timeout=30, interval=0.3, what="the dead letters")
    assert [letter["value"] for letter in letters] == [value or b"" for value in bad]
    for letter in letters:
        assert letter["reason"] == "undecodable"
        assert letter["detail"]
        assert letter["source_topic"] == topics.delivery_log
        assert letter["key"] == key
    offsets = [letter["source_offset"] for letter in letters]
    assert offsets == list(range(offsets[0], offsets[0] + len(bad)))
    wait_until_caught_up(settings)
    assert_alive(sink)


def test_attempt_text_with_nul_characters_does_not_wedge_the_sink(
    sink_settings: SettingsFactory, db: Engine, platform: Platform, services: ServiceStarter
) -> None:
    """A customer endpoint may answer with NUL bytes; PostgreSQL text cannot hold them."""
    settings = sink_settings()
    webhook_id = f"wh_{uuid.uuid4().hex[:12]}"
    start = now_ms()
    odd = attempt_record(
        "dlv_nul",
        1,
        webhook_id=webhook_id,
        started_at_ms=start,
        outcome="temporary_failure",
        status_code=500,
        error="upstream said \x00",
        response_body="binary\x00junk\x00",
        next_attempt_at_ms=start + 5000,
    )
    after = attempt_record("dlv_after", 1, webhook_id=webhook_id, started_at_ms=start + 1)
    produce_attempts(platform, [odd, after])

    sink = start_sink(services, settings)
    wanted = {odd["attempt_id"], after["attempt_id"]}
    wait_for(lambda: attempt_ids(db) == wanted or not sink.alive(), timeout=60)
    assert_alive(sink)
    assert attempt_ids(db) == wanted
    store = Store.open(settings.store_url)
    try:
        detail = store.get_delivery("dlv_nul", None)
    finally:
        store.close()
    assert detail is not None
    [stored] = detail.attempts
    # Both backends keep the same text, with each NUL shown as U+FFFD.
    assert stored.response_body == "binary\ufffdjunk\ufffd"
    assert stored.error == "upstream said \ufffd"
    assert detail.delivery.last_error == "upstream said \ufffd"


# -- 4. auto-disable ---------------------------------------------------------------------------


def _is_type(event_type: str) -> Callable[[Any], bool]:
    return lambda request: orjson.loads(request.body)["type"] == event_type


def test_a_webhook_failing_continuously_is_auto_disabled_once_and_can_be_re_enabled(
    sink_settings: SettingsFactory,
    db: Engine,
    platform: Platform,
    receiver: TestReceiver,
    services: ServiceStarter,
) -> None:
    settings = sink_settings(
        auto_disable_after=3.0,
        maintenance_interval=0.5,
        retry_schedule=(0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0),
    )
    topics = Topics.from_settings(settings)
    tenant = f"tenant_{uuid.uuid4().hex[:8]}"
    failing_secret, ops_secret = new_secret(), new_secret()
    failing_url = receiver.expect("/failing", [failing_secret], Behaviour(status=500))
    ops_url = receiver.expect("/ops", [ops_secret])
    failing = platform.webhook(
        make_webhook(tenant, failing_url, ["invoice.paid"], secret=failing_secret)
    )
    platform.webhook(
        make_webhook(tenant, ops_url, [DISABLED_EVENT_TYPE, "invoice.created"], secret=ops_secret)
    )
    for name in ("log-sink", "router", "sender"):
        services(name, settings)

    def latest_version() -> Webhook | None:
        versions = [
            Webhook.from_record(record)
            for record in read_topic(settings, topics.webhooks, "Webhook")
            if record["id"] == failing.id
        ]
        return versions[-1] if versions else None

    def disabled() -> Webhook | None:
        platform.event(tenant, "invoice.paid")  # keep it failing
        current = latest_version()
        return current if current is not None and not current.enabled else None

    off = wait_for(disabled, timeout=90, interval=0.3, what="the webhook auto-disabled")
    assert off.disabled_reason is not None and "auto-disabled" in off.disabled_reason
    assert replace(off, enabled=True, disabled_reason=None, updated_at_ms=0) == replace(
        failing, updated_at_ms=0, version=failing.version + 1
    ), "auto-disable changed more than the enabled flag and its reason (on the next version)"
    assert receiver.received("/failing"), "the endpoint was never called"

    store = Store.open(settings.store_url)
    try:
        health = store.webhook_health(failing.id, now_ms())
    finally:
        store.close()
    assert health.failing_since_ms is not None
    assert health.success_rate_24h == 0
    assert health.attempts_24h > 0

    # The notice reaches the tenant's other webhook.
    [notice] = wait_for(
        lambda: [r for r in receiver.received("/ops") if _is_type(DISABLED_EVENT_TYPE)(r)],
        timeout=60,
        what="the webhook.disabled delivery",
    )
    assert notice.verified
    body = orjson.loads(notice.body)
    assert body["data"]["webhook_id"] == failing.id
    assert body["data"]["name"] == failing.name
    assert "auto-disabled" in body["data"]["reason"]

    def barrier() -> None:
        event_id = platform.event(tenant, "invoice.created")
        wait_for(
            lambda: any(r.headers["webhook-id"] == event_id for r in receiver.received("/ops")),
            timeout=60,
            what="the barrier event",
        )

    barrier()
    calls = len(receiver.received("/failing"))
    after_disable_ms = now_ms()
    # New events for the disabled webhook reach nobody, and a later barrier proves they
    # were routed before it.
    for _ in range(3):
        platform.event(tenant, "invoice.paid")
    barrier()
    wait_until_caught_up(settings)
    assert len(receiver.received("/failing")) == calls
    notices = [r for r in receiver.received("/ops") if _is_type(DISABLED_EVENT_TYPE)(r)]
    assert len(notices) == 1, "the webhook.disabled event was delivered more than once"
    emitted = [
        event
        for event in read_topic(settings, topics.events, "Event")
        if event["type"] == DISABLED_EVENT_TYPE
    ]
    assert len(emitted) == 1
    with db.connect() as conn:
        late = conn.execute(
            select(attempts.c.outcome).where(
                attempts.c.webhook_id == failing.id,
                attempts.c.started_at_ms >= after_disable_ms,
            )
        ).scalars()
        assert set(late) <= {"skipped"}

    # The owner fixes the endpoint and re-enables the webhook: new events flow again.
    receiver.behave("/failing", Behaviour(status=204))
    platform.webhook(off.next_version(now_ms(), enabled=True, disabled_reason=None))
    published: set[str] = set()

    def resumed() -> bool:
        published.add(platform.event(tenant, "invoice.paid"))
        return any(
            r.verified and r.headers["webhook-id"] in published
            for r in receiver.received("/failing")
        )

    wait_for(resumed, timeout=60, interval=0.3, what="a delivery after re-enabling")

    def healthy() -> bool:
        reopened = Store.open(settings.store_url)
        try:
            return reopened.webhook_health(failing.id, now_ms()).failing_since_ms is None
        finally:
            reopened.close()

    wait_for(healthy, timeout=30, interval=0.2, what="the failing streak to end")


# -- 5. retention ------------------------------------------------------------------------------


def test_retention_deletes_old_attempts_and_keeps_recent_ones(
    sink_settings: SettingsFactory, db: Engine, platform: Platform, services: ServiceStarter
) -> None:
    settings = sink_settings(log_retention=3600.0, maintenance_interval=0.5)
    webhook_id = f"wh_{uuid.uuid4().hex[:12]}"
    start = now_ms()

    def batch(tag: str, age_ms: int, n: int) -> list[Attempt]:
        return [
            attempt_record(
                f"dlv_{tag}_{i}",
                1,
                webhook_id=webhook_id,
                started_at_ms=start - age_ms + i,
                body=b"{}",
            )
            for i in range(n)
        ]

    recent = batch("recent", 0, 20) + batch("hour_less_a_minute", HOUR_MS - MINUTE_MS, 5)
    old = batch("old", 30 * DAY_MS, 20) + batch("two_hours", 2 * HOUR_MS, 5)
    # Same key, one partition: the old records are stored no earlier than the recent ones.
    produce_attempts(platform, recent + old)
    sink = start_sink(services, settings)
    wait_until_caught_up(settings)
    keep = {record["attempt_id"] for record in recent}
    wait_for(lambda: attempt_ids(db) == keep, timeout=30, what="old attempts deleted")
    with db.connect() as conn:
        left = set(conn.execute(select(deliveries.c.delivery_id)).scalars())
    assert left == {record["delivery_id"] for record in recent}

    # The running sink keeps applying it to attempts that arrive later.
    later = batch("later_old", 45 * DAY_MS, 3)
    produce_attempts(platform, later)
    wait_until_caught_up(settings)
    wait_for(lambda: attempt_ids(db) == keep, timeout=30, what="later old attempts deleted")
    assert count(db, deliveries) == len(recent)
    assert "retention deleted" in sink.log()
    assert_alive(sink)


# -- scaling out -------------------------------------------------------------------------------


class AttemptStream:
    """Attempts produced in small chunks on a thread of its own until stopped: a stream that is
    still flowing whenever the test looks, whatever the machine's speed (a fixed backlog could
    be stored in full before a second member even joined)."""

    CHUNK = 50
    PAUSE = 0.05  # seconds between chunks: about 1,000 attempts/s

    def __init__(self, platform: Platform, pool: list[Attempt]) -> None:
        self._platform = platform
        self._pool = pool
        self.produced: list[Attempt] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> AttemptStream:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def flowing(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set() and len(self.produced) < len(self._pool):
            chunk = self._pool[len(self.produced) : len(self.produced) + self.CHUNK]
            produce_attempts(self._platform, chunk)
            self.produced.extend(chunk)
            self._stop.wait(self.PAUSE)


def test_members_joining_and_leaving_mid_stream_lose_nothing_and_stay_up(
    sink_settings: SettingsFactory, db: Engine, platform: Platform, services: ServiceStarter
) -> None:
    """An SRE adds a log-sink member while attempts stream in, then stops the first one."""
    pool = delivery_log(random.Random(4), 30_000, now_ms(), uuid.uuid4().hex[:6])
    # Small batches: offsets are committed all the time, also while the group rebalances.
    settings = sink_settings(sink_batch_size=20, delivery_log_partitions=2)
    with AttemptStream(platform, pool) as stream:
        first = start_sink(services, settings)
        wait_for(lambda: count(db) > 0, timeout=60, interval=0.01, what="the first stored batch")
        second = start_sink(services, settings)
        wait_for(
            lambda: members_with_partitions(settings) == 2 or not second.alive(),
            timeout=60,
            interval=0.1,
            what="both members owning partitions",
        )
        # Both members at work on the stream before the first one leaves.
        stored = count(db)
        wait_for(
            lambda: count(db) >= stored + 500 or not first.alive() or not second.alive(),
            timeout=60,
            interval=0.02,
            what="both members storing",
        )
        assert_alive(first)
        assert_alive(second)
        assert first.terminate() == 0, first.log()[-4000:]
        assert stream.flowing(), "the stream ran dry before the first member left"
    records = stream.produced
    wait_for(
        lambda: count(db) >= len(records) or not second.alive(),
        timeout=90,
        what="every attempt stored",
    )
    wait_until_caught_up(settings)
    assert_alive(second)
    assert attempt_ids(db) == {record["attempt_id"] for record in records}


def test_a_webhook_re_enabled_without_a_fix_is_auto_disabled_again(
    sink_settings: SettingsFactory, db: Engine
) -> None:
    """The streak goes on after the owner re-enables the webhook: a period later it is
    disabled again, with a notice of its own, once per re-enable."""
    settings = sink_settings(auto_disable_after=1.0)
    topics = Topics.from_settings(settings)
    platform = Platform(settings)
    store = Store.open(settings.store_url)
    view = webhook_view(settings, CODEC, topics.webhooks, None).start()
    producer = Producer(producer_config(settings))
    upkeep = Upkeep(settings, store, view, producer, CODEC)
    tenant = f"tenant_{uuid.uuid4().hex[:8]}"
    hook = platform.webhook(make_webhook(tenant, "https://hooks.example.com/x", ["a.b"]))
    serial = iter(range(1_000_000))

    def fail_at(started_at_ms: int) -> None:
        record = attempt_record(
            f"dlv_{next(serial)}",
            webhook_id=hook.id,
            tenant_id=tenant,
            outcome="temporary_failure",
            status_code=500,
            started_at_ms=started_at_ms,
        )
        store.record_attempts([AttemptRecord.from_record(record)])

    def current() -> Webhook:
        assert view.sync(10)
        webhook = view.get(hook.id)
        assert webhook is not None
        return webhook

    def disabled() -> Webhook | None:
        webhook = current()
        return None if webhook.enabled else webhook

    try:
        view.wait_ready()
        fail_at(now_ms() - 5000)
        current()
        assert upkeep.auto_disable() == 1
        off = wait_for(disabled, what="the webhook disabled")

        # Re-enabled without a fix: it keeps failing.
        reenabled_at = now_ms()
        platform.webhook(
            replace(
                off,
                enabled=True,
                disabled_reason=None,
                updated_at_ms=reenabled_at,
                version=off.version + 1,  # as the API writes it
            )
        )
        assert current().enabled

        def disabled_again() -> bool:
            fail_at(now_ms())
            current()
            return upkeep.auto_disable() == 1

        wait_for(disabled_again, timeout=30, interval=0.1, what="the second auto-disable")
        assert now_ms() - reenabled_at >= 1000, "disabled again before a full period"
        again = wait_for(disabled, what="the webhook disabled")
        assert again.disabled_reason is not None and "auto-disabled" in again.disabled_reason
        fail_at(now_ms())
        assert upkeep.auto_disable() == 0, "disabled twice for one re-enable"
        notices = [
            event["id"]
            for event in read_topic(settings, topics.events, "Event")
            if event["type"] == DISABLED_EVENT_TYPE
        ]
        assert len(notices) == len(set(notices)) == 2
    finally:
        view.stop()
        store.close()


def test_a_sink_killed_between_its_disable_and_the_notice_sends_the_notice_on_restart(
    sink_settings: SettingsFactory, db: Engine
) -> None:
    """The disable won, the process died before `webhook.disabled` went out: the next run
    (a new process, the streak not marked) sends it, once."""
    settings = sink_settings(auto_disable_after=1.0)
    topics = Topics.from_settings(settings)
    platform = Platform(settings)
    store = Store.open(settings.store_url)
    view = webhook_view(settings, CODEC, topics.webhooks, None).start()
    producer = Producer(producer_config(settings))
    tenant = f"tenant_{uuid.uuid4().hex[:8]}"
    hook = platform.webhook(make_webhook(tenant, "https://hooks.example.com/x", ["a.b"]))
    since = now_ms() - 5000
    record = attempt_record(
        "dlv_crash",
        webhook_id=hook.id,
        tenant_id=tenant,
        outcome="temporary_failure",
        status_code=500,
        started_at_ms=since,
    )
    store.record_attempts([AttemptRecord.from_record(record)])

    def notices() -> list[dict[str, Any]]:
        return [
            event
            for event in read_topic(settings, topics.events, "Event")
            if event["type"] == DISABLED_EVENT_TYPE
        ]

    try:
        view.wait_ready()
        assert view.sync(10) and view.get(hook.id) is not None
        dying = Upkeep(settings, store, view, producer, CODEC)
        # What the dying run got done: its disable record, and nothing after it.
        assert dying._write(hook.disabled(_reason(since), now_ms())) is True
        assert notices() == []

        restarted = Upkeep(settings, store, view, Producer(producer_config(settings)), CODEC)
        assert view.sync(10)
        assert restarted.auto_disable() == 0  # disabled already: nothing to disable
        sent = notices()
        assert [n["id"] for n in sent] == [disabled_event_id(hook.id, since)]
        assert orjson.loads(sent[0]["data"])["webhook_id"] == hook.id
        assert restarted.auto_disable() == 0
        assert len(notices()) == 1, "the streak is marked now: no second notice"
    finally:
        view.stop()
        store.close()
