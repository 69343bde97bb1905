"""Topic names and layout, derived from the settings in one place."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from hookstream.core.records import (
    Attempt,
    DeadLetter,
    Delivery,
    Event,
    Principal,
    Retry,
    TopicRecord,
    Webhook,
)
from hookstream.core.settings import Settings


def tier_name(delay_seconds: float) -> str:
    """A retry tier's topic suffix (`5s`, `5m`, `2h`, `200ms`), readable in a topic listing."""
    millis = round(delay_seconds * 1000)
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if millis % size == 0:
            return f"{millis // size}{unit}"
    return f"{millis}ms"


@dataclass(frozen=True, slots=True)
class RetryTier:
    """One delayed-retry topic: records in it are sent `delay` seconds after their predecessor."""

    index: int
    delay: float
    topic: str

    @property
    def name(self) -> str:
        """The topic's suffix (`5m`), as retry records name their tier."""
        return tier_name(self.delay)


# A refused webhook record stays the last of its key until the API settles it, seconds
# later (core.versions); compaction must not see it as the last one before that.
WEBHOOKS_MIN_COMPACTION_LAG_MS = 3_600_000
# How long the cleaner keeps a webhook's tombstone (Kafka's default, stated): a view started
# later sees the deletion for that long, and a running view remembers it as long (view.py),
# so that both refuse a stale copy of a deleted webhook alike.
WEBHOOKS_DELETE_RETENTION_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    partitions: int
    compacted: bool = False
    min_compaction_lag_ms: int | None = None
    delete_retention_ms: int | None = None

    def config(self) -> dict[str, str]:
        """The topic configs hookstream creates the topic with."""
        config = {"cleanup.policy": "compact" if self.compacted else "delete"}
        if self.min_compaction_lag_ms is not None:
            config["min.compaction.lag.ms"] = str(self.min_compaction_lag_ms)
        if self.delete_retention_ms is not None:
            config["delete.retention.ms"] = str(self.delete_retention_ms)
        return config


@dataclass(frozen=True, slots=True)
class Topics:
    events: str
    webhooks: str
    principals: str
    deliveries: str
    dlq: str
    delivery_log: str
    retry_tiers: tuple[RetryTier, ...]

    @classmethod
    def from_settings(cls, settings: Settings) -> Topics:
        p = settings.topic_prefix
        tiers = tuple(
            RetryTier(index=i, delay=delay, topic=f"{p}retry.{tier_name(delay)}")
            for i, delay in enumerate(settings.retry_schedule)
        )
        return cls(
            events=f"{p}events",
            webhooks=f"{p}webhooks",
            principals=f"{p}principals",
            deliveries=f"{p}deliveries",
            dlq=f"{p}dlq",
            delivery_log=f"{p}delivery-log",
            retry_tiers=tiers,
        )

    # Each topic's record type, set once: the sender asks for every record it takes.
    _record_types: Mapping[str, type[TopicRecord]] = field(
        init=False, repr=False, compare=False, default_factory=dict
    )

    def __post_init__(self) -> None:
        types: dict[str, type[TopicRecord]] = {
            self.events: Event,
            self.webhooks: Webhook,
            self.principals: Principal,
            self.deliveries: Delivery,
            self.dlq: DeadLetter,
            self.delivery_log: Attempt,
        }
        types.update((tier.topic, Retry) for tier in self.retry_tiers)
        object.__setattr__(self, "_record_types", types)

    def record_type(self, topic: str) -> type[TopicRecord]:
        """The one record type the values of `topic` are (`codec.read(type, value)`)."""
        try:
            return self._record_types[topic]
        except KeyError:
            raise ValueError(f"{topic!r} is not one of hookstream's topics") from None

    def delivery_type(self, topic: str) -> type[Delivery]:
        """The record type of a topic the sender reads: `Delivery`, or `Retry` in a tier."""
        kind = self.record_type(topic)
        if not issubclass(kind, Delivery):
            raise ValueError(f"{topic!r} holds {kind.__name__} records, not deliveries")
        return kind


def replication_config(settings: Settings) -> dict[str, str]:
    """Topic configs of replication: with copies on several brokers, how many a write must be
    on before it is acknowledged. Two of three survive the loss of any one broker without
    refusing writes, and an acknowledged record without losing it."""
    if settings.replication_factor < 2:
        return {}
    wanted = settings.min_insync_replicas or (2 if settings.replication_factor >= 3 else 1)
    return {"min.insync.replicas": str(wanted)}


def topic_specs(settings: Settings) -> list[TopicSpec]:
    """Every topic of the architecture with its partitions and cleanup policy."""
    topics = Topics.from_settings(settings)
    specs = [
        TopicSpec(topics.events, settings.events_partitions),
        TopicSpec(
            topics.webhooks,
            settings.compacted_partitions,
            compacted=True,
            min_compaction_lag_ms=WEBHOOKS_MIN_COMPACTION_LAG_MS,
            delete_retention_ms=WEBHOOKS_DELETE_RETENTION_MS,
        ),
        TopicSpec(topics.principals, settings.compacted_partitions, compacted=True),
        TopicSpec(topics.deliveries, settings.deliveries_partitions),
    ]
    specs += [TopicSpec(tier.topic, settings.retry_partitions) for tier in topics.retry_tiers]
    specs += [
        TopicSpec(topics.dlq, settings.dlq_partitions),
        TopicSpec(topics.delivery_log, settings.delivery_log_partitions),
    ]
    return specs
