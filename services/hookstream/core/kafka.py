"""Kafka client configuration, merged in one fixed order: defaults, caller's, then forced keys."""

from __future__ import annotations

import logging
import operator
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from confluent_kafka import (
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaException,
    Message,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, ClusterMetadata

from hookstream.core.settings import Settings

# Where every client's own log lines go (confluent-kafka's `logger`), so that they come out
# in the service's log format. librdkafka hands them over when the client is polled: each
# client must be polled (or consumed from) at least every second or so, also while idle.
KAFKA_LOG = logging.getLogger("librdkafka")

T = TypeVar("T")


def _merge(
    defaults: dict[str, Any], extra: dict[str, Any] | None, forced: dict[str, Any]
) -> dict[str, Any]:
    return {**defaults, **(extra or {}), **forced}


def admin_client(settings: Settings) -> AdminClient:
    # Its lines are served by admin.poll(): a caller that keeps one polls it after each call.
    config: dict[str, Any] = {
        "bootstrap.servers": settings.kafka_bootstrap_servers,
        "logger": KAFKA_LOG,
    }
    return AdminClient(config)


def producer_config(
    settings: Settings, transactional_id: str | None = None, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    defaults: dict[str, Any] = {
        "client.id": _client_id(settings),
        "linger.ms": 5,
        "compression.type": "lz4",
        "message.max.bytes": 4 * 1024 * 1024,
        "logger": KAFKA_LOG,
    }
    forced: dict[str, Any] = {
        "bootstrap.servers": settings.kafka_bootstrap_servers,
        # Every producer is idempotent: a librdkafka retry never duplicates a record.
        "enable.idempotence": True,
        "acks": "all",
    }
    if transactional_id is not None:
        forced["transactional.id"] = transactional_id
    return _merge(defaults, extra, forced)


def consumer_config(
    settings: Settings,
    group: str,
    extra: dict[str, Any] | None = None,
    *,
    balance_per_topic: bool = False,
) -> dict[str, Any]:
    """A consumer's configuration.

    `balance_per_topic` uses the broker-side group protocol (KIP-848) with its range
    assignor, which spreads every topic's partitions over the members: a group consuming
    one busy topic beside many quiet ones (the sender: `deliveries` and the retry tiers)
    would otherwise leave one member with every busy partition.
    """
    defaults: dict[str, Any] = {
        "auto.offset.reset": "earliest",
        "client.id": _client_id(settings),
        "logger": KAFKA_LOG,
    }
    if balance_per_topic:
        defaults |= {"group.protocol": "consumer", "group.remote.assignor": "range"}
    else:
        defaults |= {
            "partition.assignment.strategy": "cooperative-sticky",
            "session.timeout.ms": 10000,
            "heartbeat.interval.ms": 1000,
        }
    forced: dict[str, Any] = {
        "bootstrap.servers": settings.kafka_bootstrap_servers,
        "group.id": settings.consumer_group_prefix + group,
        # Never read a routed delivery from an aborted router transaction.
        "isolation.level": "read_committed",
    }
    return _merge(defaults, extra, forced)


# Longest a client waits in one blocking call before it is polled for its log lines.
LOG_SERVING_STEP = 1.0


def in_steps(
    call: Callable[[float], T],
    poll: Callable[[float], object],
    timeout: float,
    again: Callable[[KafkaException], bool] = lambda _exc: True,
) -> T:
    """`call(step)` until it succeeds, `again(error)` says no, or `timeout` has passed.

    A blocking client call hands over no log lines while it waits; asked a second at a time
    with `poll(0)` in between, a broker that cannot be reached shows in the log at once,
    not when the whole wait is over. For calls that may be made again after timing out.
    """
    deadline = time.monotonic() + timeout
    while True:
        step = min(LOG_SERVING_STEP, max(0.01, deadline - time.monotonic()))
        try:
            return call(step)
        except KafkaException as exc:
            if not again(exc) or time.monotonic() >= deadline:
                raise
        finally:
            poll(0)


def topic_metadata(consumer: Consumer, topic: str, timeout: float) -> ClusterMetadata:
    """`consumer.list_topics(topic)` within `timeout`, in steps (see `in_steps`); polling a
    consumer not yet assigned anything consumes nothing."""

    def ask(step: float) -> ClusterMetadata:
        metadata: ClusterMetadata = consumer.list_topics(topic, timeout=step)
        return metadata

    return in_steps(ask, consumer.poll, timeout)


def _client_id(settings: Settings) -> str:
    # Shown in broker logs, quotas and `hookstream status` members: which process is which.
    return f"hookstream-{settings.instance_id}"


def next_offsets(messages: Sequence[Message]) -> list[TopicPartition]:
    """The offsets to commit after `messages`: one past the highest of each partition."""
    highest: dict[tuple[str, int], int] = {}
    for message in messages:
        if message.error() is not None:
            continue
        key = (message.topic() or "", message.partition() or 0)
        highest[key] = max(highest.get(key, -1), message.offset() or 0)
    return [TopicPartition(topic, part, offset + 1) for (topic, part), offset in highest.items()]


_read_headers = operator.methodcaller("headers")

# A record's headers as read once: (name, value) pairs.
Headers = list[tuple[str, bytes | None]]


def appended_at_ms(message: Message) -> int | None:
    """When the record was appended, by its producer's clock (or the broker's); None unknown."""
    kind, timestamp = message.timestamp()
    if kind == TIMESTAMP_NOT_AVAILABLE or timestamp <= 0:
        return None
    return int(timestamp)


def header_pairs(message: Message) -> list[tuple[str, bytes | None]]:
    """A record's headers as (name, bytes) pairs, whatever shape the client returned.

    None at all when the client cannot decode them (a header name that is not UTF-8, written
    by a client that does not check): a record is never lost to its headers, and hookstream's
    own headers are only hints (a content type, a due time).

    Call it once per record and pass the pairs on: after a failed read the client keeps a
    broken list in the message and hands it back without an error the next time, and reading
    that list crashes the process (confluent-kafka 2.x).
    """
    try:
        # Through methodcaller, not a plain call: for a name that is not UTF-8 the client
        # hands back a broken list, which the generic call path turns into a SystemError
        # where a specialised call site would crash the process.
        headers = _read_headers(message) or []
    except (UnicodeDecodeError, ValueError, SystemError):
        return []
    pairs = headers.items() if isinstance(headers, dict) else headers
    return [(name, value.encode() if isinstance(value, str) else value) for name, value in pairs]


def consume_batch(
    consumer: Consumer, max_messages: int, timeout: float, gather_until: float = 0.0
) -> list[Message]:
    """Wait up to `timeout` for the first record, then take what else is there.

    `consume(n, timeout)` alone waits the whole timeout unless n records arrive, which puts
    a floor under latency at low rates; this returns as soon as anything is there. Records
    already fetched come along; with `gather_until` (a `time.monotonic()` instant) later
    ones are awaited until then, or until the batch is full.
    """
    first = consumer.consume(num_messages=1, timeout=timeout)
    if not first or max_messages <= 1:
        return first
    gather = max(0.0, gather_until - time.monotonic())
    return first + consumer.consume(num_messages=max_messages - 1, timeout=gather)
