"""The router: `events` -> one `deliveries` record per subscribed webhook, exactly once.

Each consumed batch is routed inside one Kafka transaction that also carries the batch's
consumer offsets, so a crash at any point either publishes the whole batch's deliveries
with its offsets or none of them. No transaction is open while `consume()` runs, which
keeps rebalances simple: there is never uncommitted work to hand over.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import cast

from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from hookstream.core.codec import Codec
from hookstream.core.deadletter import PROCESS_ERRORS, refuse
from hookstream.core.kafka import (
    Headers,
    consume_batch,
    consumer_config,
    header_pairs,
    in_steps,
    next_offsets,
    producer_config,
)
from hookstream.core.records import (
    ROUTER_GROUP,
    TEST_EVENT_TYPE,
    Delivery,
    Principal,
    Trigger,
    Webhook,
)
from hookstream.core.settings import Settings
from hookstream.core.view import CompactedView, sync_views
from hookstream.events.catalog import Catalog, default_catalog
from hookstream.events.envelope import delivery_id
from hookstream.router import metrics
from hookstream.router.envelope import BodyShaper, parse_event
from hookstream.router.matching import SubscriptionIndex
from hookstream.router.spans import RoutingSpan
from hookstream.runtime.context import ServiceContext
from hookstream.runtime.metrics import DEAD_LETTERS, with_lag_metrics
from hookstream.runtime.runner import run_until_signalled

log = logging.getLogger(__name__)

# Seconds a router transaction may stay open before the broker aborts it: also the longest
# the router waits for its offsets to join one (see _send_offsets).
TRANSACTION_TIMEOUT = 15.0
# How much longer than librdkafka's own timeout that wait is given before it is abandoned.
OFFSETS_MARGIN = 5.0


class Router:
    def __init__(
        self, settings: Settings, codec: Codec | None = None, catalog: Catalog | None = None
    ) -> None:
        # View poison cannot go through the transactional producer (it arrives outside any
        # transaction), so it goes to the context's sink.
        self.context = ServiceContext.build(settings, "router", codec)
        self.settings = settings
        self.codec = self.context.codec
        self.catalog = catalog or default_catalog()
        self.topics = self.context.topics
        self.index = SubscriptionIndex()
        self.shaper = BodyShaper(self.catalog, settings.api_version)
        self._write_delivery = self.codec.writer(Delivery)
        self.dead_letters = self.context.dead_letters
        self.webhooks: CompactedView[Webhook] = self.context.webhook_view(self._webhook_changed)
        self.principals: CompactedView[Principal] = self.context.principal_view()

    def _webhook_changed(self, webhook_id: str, webhook: Webhook | None) -> None:
        if webhook is None:
            self.index.remove(webhook_id)
        else:
            self.index.upsert(webhook)

    def run(self, stop: threading.Event, ready: threading.Event | None = None) -> None:
        for view in (self.webhooks, self.principals):
            # A view that no longer follows its topic stops the router (raised below).
            view.when_dead(lambda _error: stop.set())
            view.start()
        try:
            self.webhooks.wait_ready()
            self.principals.wait_ready()
            log.info("router: %d webhooks loaded, routing", len(self.webhooks))
            self._route_until(stop, ready)
            self.webhooks.check()
            self.principals.check()
        finally:
            self.webhooks.stop()
            self.principals.stop()
            self.dead_letters.flush(10)

    def _route_until(self, stop: threading.Event, ready: threading.Event | None) -> None:
        while not stop.is_set():
            try:
                self._route_session(stop, ready)
            except KafkaException as exc:
                # E.g. a transaction coordinator still loading after a broker restart, a
                # producer fenced because the broker outlived the transaction timeout (fatal:
                # the producer is unusable), or an abort that failed while the broker was away.
                # A new producer aborts whatever was left open and a new consumer resumes from
                # the committed offsets, so nothing is lost or doubled.
                log.warning("router: starting over with new Kafka clients after: %s", exc)
                if ready is not None:
                    ready.clear()  # /readyz is red until a new session routes again
                stop.wait(1.0)

    def _route_session(self, stop: threading.Event, ready: threading.Event | None) -> None:
        producer = Producer(
            producer_config(
                self.settings,
                transactional_id=f"{self.settings.consumer_group_prefix}{ROUTER_GROUP}-"
                f"{self.settings.instance_id}",
                extra={"transaction.timeout.ms": int(TRANSACTION_TIMEOUT * 1000)},
            )
        )
        # In steps (a call that timed out carries on where it stopped), so that a broker
        # that cannot be reached shows in the log while the router waits.
        in_steps(producer.init_transactions, producer.poll, 30, _retriable)
        consumer = Consumer(
            with_lag_metrics(
                consumer_config(self.settings, ROUTER_GROUP, {"enable.auto.commit": False})
            )
        )
        # Partitions revoked (or lost) while a batch gathers: see _owned.
        revoked: set[tuple[str, int]] = set()

        def on_revoke(_consumer: Consumer, partitions: list[TopicPartition]) -> None:
            revoked.update((tp.topic, tp.partition) for tp in partitions)

        consumer.subscribe([self.topics.events], on_revoke=on_revoke)
        if ready is not None:
            ready.set()
        # Transactions are paced, not batches delayed: an event that finds the router idle is
        # routed at once, in a transaction of its own; under load, events gather until
        # router_batch_seconds after the start of the previous transaction. Every commit
        # costs the broker about the same whatever its size, so this bounds that cost
        # (1/router_batch_seconds transactions a second) without a wait at light load.
        interval = self.settings.router_batch_seconds
        last_start = -interval
        try:
            while not stop.is_set():
                revoked.clear()
                batch = consume_batch(
                    consumer,
                    self.settings.router_batch_size,
                    timeout=0.2,
                    gather_until=last_start + interval,
                )
                batch = _owned(consumer, batch, revoked)
                if batch:
                    last_start = time.monotonic()
                    self._route_batch(batch, producer, consumer)
                producer.poll(0)  # hands over its log lines (see core.kafka), busy or idle
        finally:
            consumer.close()
            producer.flush(10)

    def _route_batch(
        self, batch: Sequence[Message], producer: Producer, consumer: Consumer
    ) -> None:
        self._catch_up()
        span = RoutingSpan(self.topics.events, len(batch))
        tally = _Tally()
        failure: str | None = "routing failed"
        producer.begin_transaction()
        try:
            # One snapshot of both views per batch: an event never sees a principal update
            # for one of its webhooks and not for another, and updates apply between batches.
            with self.webhooks.lock, self.principals.lock:
                for message in batch:
                    self._route(message, producer, tally, span)
            # Sent last, not alongside the routing: while a transaction holds offsets, every
            # read of the group's committed offsets (a partition's next owner, lag monitoring)
            # waits for that transaction to end.
            _send_offsets(producer, consumer, batch)
            _commit(producer)
            failure = None
            tally.publish()  # only committed work counts: an aborted batch is routed again
        except KafkaException as exc:
            error = exc.args[0]
            if not error.txn_requires_abort():
                raise
            failure = "transaction aborted"
            log.warning("router: transaction aborted, re-reading the batch: %s", error)
            producer.abort_transaction(30)
            _rewind(consumer, batch)
        finally:
            span.end(tally.events, tally.routed, sum(tally.dead_letters.values()), failure)

    def _catch_up(self) -> None:
        """Bring both views up to the current ends of their topics before routing a batch.

        A webhook created a moment before an event was published must get that event, even
        though the view's own thread may not have read the webhook yet. One end-offset query
        for both views per batch; comparing timestamps instead would trust the publishers'
        clocks.
        """
        self.webhooks.check()
        self.principals.check()
        if not sync_views([self.webhooks, self.principals]):
            log.warning("router: could not bring the views up to date")

    def _route(
        self, message: Message, producer: Producer, tally: _Tally, span: RoutingSpan
    ) -> None:
        """Route one record: the per-record boundary of the router.

        Whatever the handling of this one record raises, it is dead-lettered inside the same
        transaction and routing goes on; its deliveries are computed in full before any is
        produced, so a record that fails half-way leaves no partial fan-out behind.
        """
        error = message.error()
        if error is not None:
            log.warning("router: consume error: %s", error)
            return
        tally.events += 1
        headers = header_pairs(message)  # once: see header_pairs
        try:
            deliveries = self._deliveries(message, headers)
        except PROCESS_ERRORS:
            raise
        except Exception as exc:
            refusal, record = refuse("router", message, headers, exc)
            _produce(producer, self.topics.dlq, None, self.codec.write(record))
            tally.dead_letters[refusal.reason] += 1
            return
        if not deliveries:
            return
        # The event's trace context goes on with each of its deliveries (see router/spans.py).
        trace = span.headers_for(headers) or None
        for key, value in deliveries:
            _produce(producer, self.topics.deliveries, key, value, trace)
        tally.routed += len(deliveries)

    def _deliveries(self, message: Message, headers: Headers) -> list[tuple[bytes, bytes]]:
        """The encoded `deliveries` records of one `events` record, keyed by webhook id."""
        event = parse_event(
            message.value(),
            headers,
            self.codec,
            self.catalog,
            self.settings.max_payload_bytes,
        )
        event_type = self.catalog.get(event.type)
        if event_type is None:  # parse_event already rejects unknown types
            return []
        matched = self.index.match(event.tenant_id, event.type)
        if not matched:
            return []  # nothing to shape or encode for an event nobody subscribed to
        bodies = self.shaper.bodies(event, event_type)
        trigger = Trigger.TEST if event.type == TEST_EVENT_TYPE else Trigger.SCHEDULED
        created_at_ms = event.published_at_ms or int(time.time() * 1000)
        write = self._write_delivery
        out: list[tuple[bytes, bytes]] = []
        for webhook in matched:
            allowed, permissions = self._owner_permissions(webhook)
            if not allowed:
                continue
            body = bodies.body_for(permissions)
            if body is None:
                continue
            # Positional: one per webhook an event goes to, and keywords cost a third more.
            delivery = Delivery(
                delivery_id(event.id, webhook.id),
                event.id,
                event.type,
                event.tenant_id,
                webhook.id,
                body,
                1,  # the first attempt
                trigger,
                created_at_ms,
            )
            out.append((webhook.id.encode(), write(delivery)))
        return out

    def _owner_permissions(self, webhook: Webhook) -> tuple[bool, frozenset[str] | None]:
        """Whether the webhook may receive at all, and its owner's permissions.

        A webhook without an owner is the tenant's own and sees everything (None); one whose
        owner is unknown or belongs to another tenant receives nothing.
        """
        if webhook.owner_id is None:
            return True, None
        principal = self.principals.get(webhook.owner_id)
        if principal is None or principal.tenant_id != webhook.tenant_id:
            return False, None
        return True, principal.permissions


@dataclass(slots=True)
class _Tally:
    """One batch's counts, published to the metrics once its transaction commits."""

    events: int = 0
    routed: int = 0
    dead_letters: Counter[str] = field(default_factory=Counter)

    def publish(self) -> None:
        metrics.ROUTING_TRANSACTIONS.inc()
        metrics.EVENTS_CONSUMED.inc(self.events)
        metrics.DELIVERIES_ROUTED.inc(self.routed)
        for reason, count in self.dead_letters.items():
            DEAD_LETTERS.labels(reason).inc(count)


def _send_offsets(producer: Producer, consumer: Consumer, batch: Sequence[Message]) -> None:
    """Hand the batch's offsets to the open transaction, within the transaction timeout.

    librdkafka's own timeout does not hold here: when the group coordinator went away (a
    broker restart) the call can wait until some broker changes state again, which may be
    never (librdkafka issues 5456 and 5511). A router stuck there holds its partitions, and
    its group's next rebalance, for good. So the call runs on a thread of its own and is
    given up on a little after the transaction timeout, by when the broker has aborted the
    transaction anyway: the router starts over with new clients, whose producer fences this
    one. A daemon thread, so that a call that never returns cannot hold the process at exit;
    the abandoned producer is never used again.
    """
    offsets = next_offsets(batch)
    group = consumer.consumer_group_metadata()
    failure: list[BaseException] = []

    def send() -> None:
        try:
            producer.send_offsets_to_transaction(offsets, group, TRANSACTION_TIMEOUT)
        except BaseException as exc:  # handed to the router's thread below
            failure.append(exc)

    sender = threading.Thread(target=send, name="router-offsets", daemon=True)
    sender.start()
    sender.join(TRANSACTION_TIMEOUT + OFFSETS_MARGIN)
    if sender.is_alive():
        reason = f"offsets not added to the transaction within {TRANSACTION_TIMEOUT:.0f} s"
        raise KafkaException(KafkaError(KafkaError._TIMED_OUT, reason))
    if failure:
        raise failure[0]


def _retriable(exc: KafkaException) -> bool:
    return bool(exc.args[0].retriable())


def _commit(producer: Producer) -> None:
    while True:
        try:
            producer.commit_transaction(60)
            return
        except KafkaException as exc:
            # A retriable error (e.g. a timeout) leaves the transaction committable: try again.
            if not exc.args[0].retriable():
                raise
            log.warning("router: retrying the transaction commit: %s", exc.args[0])


_KafkaHeaders = list[tuple[str, str | bytes | None]] | None


def _produce(
    producer: Producer,
    topic: str,
    key: bytes | None,
    value: bytes,
    headers: list[tuple[str, bytes]] | None = None,
) -> None:
    while True:
        try:
            # The client's stub wants a list of str-or-bytes values; bytes are what it gets.
            producer.produce(topic, key=key, value=value, headers=cast(_KafkaHeaders, headers))
            return
        except BufferError:
            # The local queue is full: let librdkafka send some before adding more.
            producer.poll(0.05)


def split_revoked(
    batch: Sequence[Message], revoked: set[tuple[str, int]]
) -> tuple[list[Message], list[Message]]:
    """The batch's records of partitions still owned, and those of partitions revoked."""
    kept: list[Message] = []
    dropped: list[Message] = []
    for message in batch:
        owned = (message.topic() or "", message.partition() or 0) not in revoked
        (kept if owned else dropped).append(message)
    return kept, dropped


def _owned(
    consumer: Consumer, batch: list[Message], revoked: set[tuple[str, int]]
) -> list[Message]:
    """The records of `batch` this router may still route, offsets and all.

    A rebalance can come during the batch's second consume(): the records of a partition
    revoked then belong to its next owner, which reads them from the committed offset, and
    routing them here too would route them twice (the offsets would still be accepted: the
    transaction carries the group's new generation). They are dropped; a partition handed
    back to this router at once is rewound to them, since it may already have fetched past.
    """
    if not revoked:
        return batch
    kept, dropped = split_revoked(batch, revoked)
    if dropped:
        log.info("router: dropping %d records of partitions revoked mid-batch", len(dropped))
        _rewind(consumer, dropped)
    return kept


def _rewind(consumer: Consumer, batch: Sequence[Message]) -> None:
    lowest: dict[tuple[str, int], int] = {}
    for message in batch:
        key = (message.topic() or "", message.partition() or 0)
        offset = message.offset() or 0
        lowest[key] = min(offset, lowest.get(key, offset))
    for (topic, part), offset in lowest.items():
        try:
            consumer.seek(TopicPartition(topic, part, offset))
        except KafkaException as exc:
            # The partition moved to another member in the meantime; it re-reads from the
            # committed offset there.
            log.info("router: not rewinding %s[%d]: %s", topic, part, exc)


def run_router(settings: Settings) -> int:
    return run_until_signalled("router", settings, Router(settings).run)
