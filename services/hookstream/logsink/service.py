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

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from hookstream.core import metrics
from hookstream.core.codec import Codec, DecodeError, default_codec
from hookstream.core.deadletter import dead_letter
from hookstream.core.kafka import (
    consumer_config,
    next_offsets,
    producer_config,
    with_lag_metrics,
)
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
            with_lag_metrics(
                consumer_config(self.settings, LOG_SINK_GROUP, {"enable.auto.commit": False})
            )
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
                attempts.append(_storable(self.codec.decode("Attempt", message.value() or b"")))
            except DecodeError as exc:
                log.warning("log-sink: dead-lettered an undecodable attempt record: %s", exc)
                record = dead_letter(message, "undecodable", str(exc))
                self.producer.produce(
                    self.topics.dlq,
                    key=message.key(),
                    value=self.codec.encode("DeadLetter", record),
                )
        if attempts:
            started = time.perf_counter()
            store.record_attempts(attempts)
            metrics.STORE_COMMIT_SECONDS.observe(time.perf_counter() - started)
            metrics.STORE_BATCH_SIZE.observe(len(attempts))
        # Dead letters must be durable before their offsets move past them.
        if self.producer.flush(30) != 0:
            raise RuntimeError("log-sink: dead letters were not acknowledged by Kafka")
        self._commit(consumer, batch)

    def _commit(self, consumer: Consumer, batch: Sequence[Message]) -> None:
        """Commit past `batch` for the partitions this member still owns.

        A rebalance that starts while a batch is written (a member joining or leaving) makes
        the commit fail with ILLEGAL_GENERATION or REBALANCE_IN_PROGRESS. The rows are already
        in the store, so that is no reason to stop: whoever reads those partitions next starts
        from the last committed offset and re-writes at most this batch, harmlessly.
        """
        owned = {(tp.topic, tp.partition) for tp in consumer.assignment()}
        offsets = [tp for tp in next_offsets(batch) if (tp.topic, tp.partition) in owned]
        if not offsets:
            return
        try:
            consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            if isinstance(error, KafkaError) and error.fatal():
                raise
            log.warning("log-sink: offsets not committed, the batch may be re-read: %s", error)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if any(tp.partition == 0 for tp in partitions):
            self._owns_upkeep = True

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if any(tp.partition == 0 for tp in partitions):
            self._owns_upkeep = False


def _storable(attempt: dict[str, Any]) -> dict[str, Any]:
    """The attempt with every NUL character in its text shown as U+FFFD.

    A response body or error text may carry NUL (an endpoint answering with binary data);
    PostgreSQL text cannot hold it and would reject the whole batch on every restart. Both
    backends store the same replacement, as the sender already does for invalid UTF-8.
    """
    for name, value in attempt.items():
        if isinstance(value, str) and "\x00" in value:
            attempt[name] = value.replace("\x00", "\ufffd")
    return attempt


def run_log_sink(settings: Settings) -> int:
    return run_until_signalled("log-sink", settings, LogSink(settings).run)
