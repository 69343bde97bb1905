"""Views of compacted topics, caught up in one request (the router's per-batch catch-up).

Real broker: a webhook or principal written a moment ago (acknowledged, not yet read by the
view's thread) is in the view once `sync_views` returns True, for both views at once.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from confluent_kafka import IsolationLevel, Message, Producer, TopicPartition
from confluent_kafka.admin import OffsetSpec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hookstream.core.kafka import admin_client, producer_config
from hookstream.core.records import Principal, Webhook
from hookstream.core.settings import Settings
from hookstream.core.topics import Topics
from hookstream.core.view import CompactedView, principal_view, sync_views, webhook_view
from tests.helpers import wait_for
from tests.pipeline import CODEC, Platform, make_webhook

pytestmark = pytest.mark.integration


Views = tuple[CompactedView[Webhook], CompactedView[Principal]]


@pytest.fixture
def views(pipeline_settings: Settings) -> Iterator[Views]:
    topics = Topics.from_settings(pipeline_settings)
    codec = CODEC
    webhooks = webhook_view(pipeline_settings, codec, topics.webhooks, None).start()
    principals = principal_view(pipeline_settings, codec, topics.principals, None).start()
    webhooks.wait_ready()
    principals.wait_ready()
    yield webhooks, principals
    webhooks.stop()
    principals.stop()


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(writes=st.lists(st.sampled_from(["webhook", "principal", "delete"]), min_size=1, max_size=8))
def test_what_was_written_before_a_sync_is_in_both_views_after_it(
    platform: Platform, views: Views, writes: list[str]
) -> None:
    webhooks, principals = views
    expected_webhooks: dict[str, bool] = {}
    expected_principals: set[str] = set()
    for kind in writes:
        if kind == "principal":
            principal_id = f"p-{uuid.uuid4().hex[:8]}"
            platform.principal(principal_id, "acme", ["invoice.paid"])
            expected_principals.add(principal_id)
        else:
            webhook = platform.webhook(
                make_webhook("acme", "http://127.0.0.1:9/hook", ["invoice.paid"])
            )
            expected_webhooks[webhook.id] = True
            if kind == "delete":
                platform.delete_webhook(webhook.id)
                expected_webhooks[webhook.id] = False
    # Acknowledged by the broker (Platform flushes); the views' threads may not have read it.
    assert sync_views([webhooks, principals])
    for webhook_id, present in expected_webhooks.items():
        assert (webhooks.get(webhook_id) is not None) == present, webhook_id
    for principal_id in expected_principals:
        assert principals.get(principal_id) is not None, principal_id


def test_a_sync_of_a_stopped_view_says_it_could_not(views: Views) -> None:
    webhooks, principals = views
    principals.stop()
    assert not sync_views([webhooks, principals], timeout=2)
    assert sync_views([webhooks])


@pytest.mark.parametrize("ending", ["commit", "abort"])
def test_a_sync_reaches_the_end_of_a_topic_written_in_transactions(
    pipeline_settings: Settings, views: Views, ending: str
) -> None:
    # A platform may publish principals transactionally: each transaction leaves a marker
    # after its records, which a read_committed end offset counts and a consumer never sees.
    webhooks, principals = views
    topics = Topics.from_settings(pipeline_settings)
    producer = Producer(
        producer_config(pipeline_settings, transactional_id=f"platform-{uuid.uuid4().hex}")
    )
    producer.init_transactions(30)
    principal_id = f"p-{uuid.uuid4().hex[:8]}"
    producer.begin_transaction()
    record = Principal(principal_id, "acme", frozenset({"invoice.paid"})).to_record()
    written: list[Message] = []
    producer.produce(
        topics.principals,
        key=principal_id.encode(),
        value=CODEC.encode("Principal", record),
        on_delivery=lambda _error, message: written.append(message),
    )
    producer.flush(30)
    if ending == "commit":
        producer.commit_transaction(30)
    else:
        producer.abort_transaction(30)
    # The marker lands a moment after the transaction ends: until then the end offset
    # stops before the record. Once it counts the marker, a sync must reach it.
    (message,) = written
    partition, offset = message.partition() or 0, message.offset() or 0
    wait_for(
        lambda: _committed_end(pipeline_settings, topics.principals, partition) >= offset + 2,
        timeout=30,
        what="the transaction marker",
    )
    assert sync_views([webhooks, principals], timeout=10)
    assert (principals.get(principal_id) is not None) == (ending == "commit")


def _committed_end(settings: Settings, topic: str, partition: int) -> int:
    """The partition's end offset as a read_committed reader sees it (markers included)."""
    admin = admin_client(settings)
    answers = admin.list_offsets(
        {TopicPartition(topic, partition): OffsetSpec.latest()},
        isolation_level=IsolationLevel.READ_COMMITTED,
    )
    return int(next(iter(answers.values())).result().offset)


def test_a_view_counts_a_transaction_marker_as_soon_as_it_applies_the_records_before_it(
    pipeline_settings: Settings, views: Views
) -> None:
    # Nothing past a marker ever shows the view its offset; the consumer's position does,
    # at once. Without it the view waited for the end-of-partition event, which comes only
    # after a further fetch waits out the broker's long poll: every sync behind a
    # transactional write waited that long, and one asked meanwhile was not caught up.
    _webhooks, principals = views
    topics = Topics.from_settings(pipeline_settings)
    producer = Producer(
        producer_config(pipeline_settings, transactional_id=f"platform-{uuid.uuid4().hex}")
    )
    producer.init_transactions(30)
    for _ in range(3):
        principal_id = f"p-{uuid.uuid4().hex[:8]}"
        record = Principal(principal_id, "acme", frozenset({"invoice.paid"})).to_record()
        written: list[Message] = []
        producer.begin_transaction()
        producer.produce(
            topics.principals,
            key=principal_id.encode(),
            value=CODEC.encode("Principal", record),
            on_delivery=lambda _error, message, out=written: out.append(message),
        )
        producer.commit_transaction(30)
        (message,) = written
        partition, offset = message.partition() or 0, message.offset() or 0

        # The record becomes readable when its marker lands: the end then lies past both.
        def marked(partition: int = partition, offset: int = offset) -> int | None:
            end = _committed_end(pipeline_settings, topics.principals, partition)
            return end if end >= offset + 2 else None

        end: int = wait_for(marked, timeout=30, what="the transaction marker")

        def applied(principal_id: str = principal_id) -> bool:
            with principals.lock:  # a batch and the positions after it are one step
                return principals.get(principal_id) is not None

        wait_for(applied, timeout=30, interval=0.01, what="the principal in the view")
        # Already there: no wait for another fetch (timeout 0 only looks).
        assert principals.wait_for_offset(partition, end - 1, timeout=0), (
            "the view does not yet count the transaction marker after the record it applied"
        )
        assert principals.sync(timeout=10)
