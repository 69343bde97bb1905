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

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError

from hookstream.core.codec import Codec
from hookstream.core.deadletter import PROCESS_ERRORS, ProcessError
from hookstream.core.kafka import (
    consumer_config,
    header_pairs,
    next_offsets,
    producer_config,
)
from hookstream.core.records import LOG_SINK_GROUP, Attempt, Webhook
from hookstream.core.settings import Settings
from hookstream.core.view import CompactedView
from hookstream.logsink import metrics
from hookstream.logsink.intake import decode_attempt
from hookstream.logsink.spans import StoreSpan
from hookstream.logsink.upkeep import Upkeep
from hookstream.runtime.context import ServiceContext
from hookstream.runtime.metrics import with_lag_metrics
from hookstream.runtime.runner import run_until_signalled
from hookstream.store import Store

log = logging.getLogger(__name__)


class LogSink:
    def __init__(self, settings: Settings, codec: Codec | None = None) -> None:
        self.context = ServiceContext.build(settings, "log-sink", codec)
        self.settings = settings
        self.codec = self.context.codec
        self.topics = self.context.topics
        self.dead_letters = self.context.dead_letters
        self.webhooks: CompactedView[Webhook] = self.context.webhook_view()
        self.producer = Producer(producer_config(settings))
        self._owns_upkeep = False

    def run(self, stop: threading.Event, ready: threading.Event | None = None) -> None:
        store = Store.open(self.settings.store_url)
        # A view that no longer follows its topic stops the log-sink (raised below).
        self.webhooks.when_dead(lambda _error: stop.set())
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
                self.producer.poll(0)  # hands over its log lines (see core.kafka)
            self.webhooks.check()
        finally:
            consumer.close()
            self.producer.flush(10)
            self.webhooks.stop()
            self.dead_letters.flush(10)
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
        span = StoreSpan(self.topics.delivery_log, len(batch), self.settings.store_url)
        attempts: list[tuple[Message, Attempt]] = []
        failure: str | None = "the store write failed"
        try:
            for message in batch:
                error = message.error()
                if error is not None:
                    log.warning("log-sink: consume error: %s", error)
                    continue
                # Read once, and only to link the attempt's span (see header_pairs).
                headers = header_pairs(message) if span.recording else None
                # The per-record boundary of the log-sink, part one: a record that does not
                # decode or validate is dead-lettered; the rest of the batch is stored.
                try:
                    attempts.append((message, decode_attempt(self.codec, message.value())))
                except PROCESS_ERRORS:
                    raise
                except Exception as exc:
                    self.dead_letters.refuse(message, exc, headers)
                    continue
                if headers:
                    span.link(headers)
            if attempts:
                self._store(store, attempts)
            # Dead letters must be durable before their offsets move past them.
            self.dead_letters.flush(30)
            self._commit(consumer, batch)
            failure = None
        finally:
            span.end(len(attempts), failure)

    def _store(self, store: Store, attempts: list[tuple[Message, Attempt]]) -> None:
        """Store the batch in one transaction; if the store refuses it, find who it refuses.

        Part two of the boundary: a record the database refuses (a value out of a column's
        range, say) must not wedge the batch on every restart. Stored one by one, each record
        the store still refuses is dead-lettered. A store that cannot be reached at all is an
        error of the process, not of a record: the log-sink stops.
        """
        started = time.perf_counter()
        try:
            store.record_attempts([attempt for _, attempt in attempts])
        except Exception as exc:
            _raise_if_unreachable(exc)
            log.warning(
                "log-sink: the store refused a batch of %d, storing it one by one: %s",
                len(attempts),
                exc,
            )
            for message, attempt in attempts:
                try:
                    store.record_attempts([attempt])
                except Exception as one:
                    _raise_if_unreachable(one)
                    self.dead_letters.refuse(message, one)
        metrics.STORE_COMMIT_SECONDS.observe(time.perf_counter() - started)
        metrics.STORE_BATCH_SIZE.observe(len(attempts))

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


# Errors that say the database itself is unusable (connection lost, disk full, locked), as
# opposed to refusing the values of one record (DataError, IntegrityError).
def _raise_if_unreachable(exc: Exception) -> None:
    if isinstance(exc, DBAPIError) and not isinstance(exc, DataError | IntegrityError):
        raise ProcessError(f"log-sink: the store cannot be written: {exc}") from exc
    if isinstance(exc, PROCESS_ERRORS):
        raise exc


def run_log_sink(settings: Settings) -> int:
    return run_until_signalled("log-sink", settings, LogSink(settings).run)
