"""An Avro event written to the real `events` topic reads back identical."""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka import Consumer, Producer

from hookstream.core.codec import MAGIC, default_codec
from hookstream.core.kafka import consumer_config, producer_config
from hookstream.core.settings import Settings
from hookstream.core.topics import Topics
from hookstream.tools.topics import create_topics

pytestmark = pytest.mark.integration


def test_event_round_trips_through_kafka(settings: Settings) -> None:
    create_topics(settings)
    topics = Topics.from_settings(settings)
    codec = default_codec()
    event = {
        "id": f"evt_{uuid.uuid4().hex}",
        "type": "invoice.paid",
        "tenant_id": "tenant_1",
        "occurred_at": "2026-11-27T10:00:00.000Z",
        "data": '{"invoice_id":"inv_1","amount_cents":1200}',
        "published_at_ms": 1_795_000_000_000,
    }
    producer = Producer(producer_config(settings))
    producer.produce(topics.events, key=b"tenant_1", value=codec.encode("Event", event))
    assert producer.flush(30) == 0

    consumer = Consumer(consumer_config(settings, "roundtrip"))
    consumer.subscribe([topics.events])
    try:
        message = None
        for _ in range(300):
            message = consumer.poll(0.1)
            if message is not None and message.error() is None:
                break
        assert message is not None and message.error() is None
        value = message.value()
        assert value is not None and value.startswith(MAGIC)
        assert codec.decode("Event", value) == event
    finally:
        consumer.close()
