"""Each topic knows the one record type its values are, and the codec reads it by that type."""

from __future__ import annotations

import pytest

from hookstream.core.codec import default_codec
from hookstream.core.records import (
    Attempt,
    DeadLetter,
    Delivery,
    Event,
    Principal,
    Retry,
    Trigger,
    Webhook,
)
from hookstream.core.settings import load_settings
from hookstream.core.topics import Topics

TOPICS = Topics.from_settings(load_settings(topic_prefix="t."))
DELIVERY = Delivery("dlv_1", "evt_1", "invoice.paid", "ten_1", "wh_1", b"{}", 1, Trigger.TEST, 5)


def test_every_topic_names_its_record_type() -> None:
    assert TOPICS.record_type(TOPICS.events) is Event
    assert TOPICS.record_type(TOPICS.webhooks) is Webhook
    assert TOPICS.record_type(TOPICS.principals) is Principal
    assert TOPICS.record_type(TOPICS.deliveries) is Delivery
    assert TOPICS.record_type(TOPICS.dlq) is DeadLetter
    assert TOPICS.record_type(TOPICS.delivery_log) is Attempt
    assert {TOPICS.record_type(tier.topic) for tier in TOPICS.retry_tiers} == {Retry}
    # Every topic the architecture has is covered, none twice.
    names = [TOPICS.events, TOPICS.webhooks, TOPICS.principals, TOPICS.deliveries, TOPICS.dlq]
    names += [TOPICS.delivery_log, *(tier.topic for tier in TOPICS.retry_tiers)]
    assert len(set(names)) == len(names)


def test_the_sender_reads_deliveries_and_retries_only() -> None:
    assert TOPICS.delivery_type(TOPICS.deliveries) is Delivery
    assert TOPICS.delivery_type(TOPICS.retry_tiers[0].topic) is Retry
    with pytest.raises(ValueError, match="holds Attempt records"):
        TOPICS.delivery_type(TOPICS.delivery_log)
    with pytest.raises(ValueError, match="not one of hookstream's topics"):
        TOPICS.record_type("t.unknown")


def test_records_read_back_as_the_topic_type_they_were_written_to() -> None:
    codec = default_codec()
    tier = TOPICS.retry_tiers[1]
    retry = DELIVERY.retry(2, 1_700_000_000_000, tier.name)
    for topic, record in ((TOPICS.deliveries, DELIVERY), (tier.topic, retry)):
        assert codec.read(TOPICS.delivery_type(topic), codec.write(record)) == record
    # A retry is a delivery to the sender, carrying its due time and tier besides.
    assert isinstance(retry, Delivery)
    assert (retry.attempt, retry.due_at_ms, retry.tier) == (2, 1_700_000_000_000, tier.name)
