"""The log-sink: `delivery-log` -> the SQL store, plus endpoint health upkeep.

Attempts are written in batches bounded by size and time; the batch's offsets are committed
only after the database transaction commits, and the store's upsert is keyed by attempt id,
so a crash anywhere re-writes at most one batch, harmlessly.

The member that owns partition 0 of `delivery-log` also runs the periodic upkeep:
auto-disabling webhooks that have failed continuously for too long, and retention.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

from confluent_kafka import Consumer, Message, Producer, TopicPartition

from hookstream.core.codec import Codec, DecodeError, default_codec
from hookstream.core.deadletter import dead_letter
from hookstream.core.kafka import consumer_config, next_offsets, producer_config
from hookstream.core.runner import run_until_signalled
from hookstream.core.settings import Settings
from hookstream.core.store import Store
from hookstream.core.topics import Topics
from hookstream.core.view import CompactedView, webhook_view
from hookstream.core.webhooks import Webhook
from hookstream.logsink.upkeep import Upkeep

log = logging.getLogger(__name__)

LOG_SINK_GROUP = "log-sink"


class LogSink:
    def __init__(self, settings: Settings, codec: Codec | None = None) -> None:
        self.settings = settings
        self.codec = codec or default_codec()
        self.topics = Topics.from_settings(settings)
        self.webhooks: CompactedView[Webhook] = webhook_view(
            settings, self.codec, self.topics.webhooks
        )
        self.producer = Producer(producer_config(settings))
        self._owns_upkeep = False

    def run(self, stop: threading.Event, ready: threading.Event | None = None) -> None:
        store = Store.open(self.settings.store_url)
        self.webhooks.start()
        consumer = Consumer(
            consumer_config(self.settings, LOG_SINK_GROUP, {"enable.auto.commit": False})
        )
        try:
            self.webhooks.wait_ready()
            upkeep = Upkeep(self.settings, store, self.webhooks, self.producer, self.codec)
            consumer.subscribe(
                [self.topics.delivery_log], on_assign=self._on_assign, on_revoke=self._on_revoke
            )
            if ready is not None:
                ready.set()
            while not stop.is_set():
                batch = self._collect(consumer, stop)
                if batch:
                    self._write(store, consumer, batch)
                if self._owns_upkeep:
                    upkeep.run_if_due()
        finally:
            consumer.close()
            self.producer.flush(10)
            self.webhooks.stop()
            store.close()

    def _collect(self, consumer: Consumer, stop: threading.Event) -> list[Message]:
        """Up to `sink_batch_size` records, waiting at most `sink_batch_seconds` for them."""
        batch: list[Message] = []
        deadline = time.monotonic() + self.settings.sink_batch_seconds
        while len(batch) < self.settings.sink_batch_size and not stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            wanted = self.settings.sink_batch_size - len(batch)
            batch.extend(consumer.consume(num_messages=wanted, timeout=min(remaining, 0.2)))
        return batch

    def _write(self, store: Store, consumer: Consumer, batch: Sequence[Message]) -> None:
        attempts: list[dict[str, Any]] = []
        for message in batch:
            error = message.error()
            if error is not None:
                log.warning("log-sink: consume error: %s", error)
                continue
            try:
                attempts.append(self.codec.decode("Attempt", message.value() or b""))
            except DecodeError as exc:
                log.warning("log-sink: dead-lettered an undecodable attempt record: %s", exc)
                record = dead_letter(message, "undecodable", str(exc))
                self.producer.produce(
                    self.topics.dlq,
                    key=message.key(),
                    value=self.codec.encode("DeadLetter", record),
                )
        if attempts:
            store.record_attempts(attempts)
        # Dead letters must be durable before their offsets move past them.
        if self.producer.flush(30) != 0:
            raise RuntimeError("log-sink: dead letters were not acknowledged by Kafka")
        consumer.commit(offsets=next_offsets(batch), asynchronous=False)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if any(tp.partition == 0 for tp in partitions):
            self._owns_upkeep = True

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if any(tp.partition == 0 for tp in partitions):
            self._owns_upkeep = False


def run_log_sink(settings: Settings) -> int:
    return run_until_signalled("log-sink", LogSink(settings).run)
