"""`hookstream status`: the SRE's one look at a running hookstream, read from Kafka alone.

- per consumer group (router, sender, log-sink) and topic: the lag (committed offset against the
  end of the partition; a partition the group never committed counts from its first record, as
  the services start there) and the group's members with their partitions;
- per retry tier: the backlog (records the sender group has not finished) and the oldest due
  time (the `hookstream-due-at-ms` header of the first unfinished record of each partition);
- the dead-letter topic: its records (counted by reading them, so transaction markers do not
  count, while there are at most DLQ_READ_LIMIT offsets; estimated from the offsets beyond),
  per reason, and when the newest was written;
- the webhooks disabled in the last 24 hours (read from the compacted `webhooks` topic).

A lag of at most EXACT_LAG_LIMIT offsets is counted by reading the records, so the commit
markers of Kafka transactions (the router writes `deliveries` in transactions) do not show as
lag on an idle pipeline; a larger lag is the offset difference, markers included.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import (
    OFFSET_INVALID,
    Consumer,
    ConsumerGroupTopicPartitions,
    IsolationLevel,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, OffsetSpec

from hookstream.core.codec import DecodeError, default_codec
from hookstream.core.kafka import Headers, admin_client, consumer_config, header_pairs
from hookstream.core.records import (
    LOG_SINK_GROUP,
    ROUTER_GROUP,
    SENDER_GROUP,
    DeadLetter,
    due_at_from_headers,
)
from hookstream.core.settings import Settings
from hookstream.core.topics import Topics
from hookstream.core.view import ViewNotReadyError, webhook_view

DISABLED_WINDOW_MS = 24 * 3600 * 1000
# Up to this many offsets the dead-letter topic is read to count its records by reason.
DLQ_READ_LIMIT = 20_000
# A partition lagging by at most this many offsets has its records counted by reading them.
EXACT_LAG_LIMIT = 100

Partition = tuple[str, int]


@dataclass(frozen=True, slots=True)
class PartitionLag:
    partition: int
    low: int
    high: int
    # None: the group never committed an offset here (it starts at the first record).
    committed: int | None
    # Records between the position and the end, counted by reading them (a small lag only);
    # None: the lag is the offset difference.
    unread: int | None = None

    @property
    def position(self) -> int:
        """Where the group reads next: its committed offset, or the first record still kept."""
        if self.committed is None:
            return self.low
        return max(self.committed, self.low)

    @property
    def lag(self) -> int:
        if self.unread is not None:
            return self.unread
        return max(0, self.high - self.position)


@dataclass(frozen=True, slots=True)
class TopicLag:
    topic: str
    partitions: tuple[PartitionLag, ...]

    @property
    def lag(self) -> int:
        return sum(p.lag for p in self.partitions)


@dataclass(frozen=True, slots=True)
class Member:
    client_id: str
    host: str
    member_id: str
    partitions: tuple[str, ...]  # "topic[partition]"


@dataclass(frozen=True, slots=True)
class GroupStatus:
    name: str
    group_id: str
    state: str
    members: tuple[Member, ...]
    topics: tuple[TopicLag, ...]

    @property
    def lag(self) -> int:
        return sum(t.lag for t in self.topics)


@dataclass(frozen=True, slots=True)
class TierStatus:
    tier: str
    topic: str
    delay_seconds: float
    backlog: int | None  # None: the tier's topic does not exist
    # The earliest due time among the first unfinished record of each partition (Unix ms).
    oldest_due_at_ms: int | None


@dataclass(frozen=True, slots=True)
class DeadLetters:
    topic: str
    size: int
    # False: too many to read, `size` counts offsets (transaction markers included).
    exact: bool
    by_reason: Mapping[str, int]
    newest_at_ms: int | None


@dataclass(frozen=True, slots=True)
class DisabledWebhook:
    id: str
    tenant_id: str
    name: str
    reason: str | None
    disabled_at_ms: int


@dataclass(frozen=True, slots=True)
class Status:
    taken_at_ms: int
    bootstrap_servers: str
    groups: tuple[GroupStatus, ...]
    retry_tiers: tuple[TierStatus, ...]
    dead_letters: DeadLetters
    disabled_webhooks: tuple[DisabledWebhook, ...]
    problems: tuple[str, ...] = field(default=())


def group_topics(topics: Topics) -> dict[str, list[str]]:
    """Each service's consumer group and the topics it reads."""
    return {
        ROUTER_GROUP: [topics.events],
        SENDER_GROUP: [topics.deliveries, *(tier.topic for tier in topics.retry_tiers)],
        LOG_SINK_GROUP: [topics.delivery_log],
    }


# -- collecting ----------------------------------------------------------------------------


def collect_status(settings: Settings, timeout: float = 15.0) -> Status:
    """Everything `hookstream status` shows. Raises KafkaException when Kafka cannot answer."""
    now_ms = int(time.time() * 1000)
    topics = Topics.from_settings(settings)
    admin = admin_client(settings)
    metadata = admin.list_topics(timeout=timeout)
    problems: list[str] = []
    wanted = group_topics(topics)
    partitions: dict[str, list[int]] = {}
    missing: list[str] = []
    every_topic = {t for names in wanted.values() for t in names} | {topics.dlq, topics.webhooks}
    for topic in sorted(every_topic):
        meta = metadata.topics.get(topic)
        if meta is None or meta.error is not None:
            missing.append(topic)
            continue
        partitions[topic] = sorted(meta.partitions)
    if missing:
        problems.append(f"missing topics (run `hookstream topics create`): {', '.join(missing)}")
    every = [(t, p) for t, parts in partitions.items() for p in parts]
    low = _offsets(admin, every, OffsetSpec.earliest(), timeout)  # type: ignore[no-untyped-call]
    high = _offsets(admin, every, OffsetSpec.latest(), timeout)  # type: ignore[no-untyped-call]

    groups = _groups(settings, admin, wanted, partitions, low, high, timeout)
    tiers = _tiers(settings, topics, groups, timeout)
    ranges = {
        (topics.dlq, p): (low[(topics.dlq, p)], high[(topics.dlq, p)])
        for p in partitions.get(topics.dlq, [])
    }
    dead_letters = _dead_letters(settings, topics.dlq, ranges, timeout)
    disabled: tuple[DisabledWebhook, ...] = ()
    if topics.webhooks in partitions:
        disabled, problem = _recently_disabled(settings, topics, now_ms, timeout)
        if problem is not None:
            problems.append(problem)
    return Status(
        taken_at_ms=now_ms,
        bootstrap_servers=settings.kafka_bootstrap_servers,
        groups=tuple(groups),
        retry_tiers=tiers,
        dead_letters=dead_letters,
        disabled_webhooks=disabled,
        problems=tuple(problems),
    )


def _offsets(
    admin: AdminClient, partitions: Sequence[Partition], spec: OffsetSpec, timeout: float
) -> dict[Partition, int]:
    if not partitions:
        return {}
    futures = admin.list_offsets(
        {TopicPartition(topic, part): spec for topic, part in partitions},
        isolation_level=IsolationLevel.READ_COMMITTED,
        request_timeout=timeout,
    )
    return {
        (tp.topic, tp.partition): int(future.result(timeout).offset)
        for tp, future in futures.items()
    }


def _groups(
    settings: Settings,
    admin: AdminClient,
    wanted: Mapping[str, list[str]],
    partitions: Mapping[str, list[int]],
    low: Mapping[Partition, int],
    high: Mapping[Partition, int],
    timeout: float,
) -> list[GroupStatus]:
    ids = {name: settings.consumer_group_prefix + name for name in wanted}
    descriptions = admin.describe_consumer_groups(list(ids.values()), request_timeout=timeout)
    lags: dict[str, dict[str, list[PartitionLag]]] = {}
    for name, group_id in ids.items():
        owned = [(t, p) for t in wanted[name] for p in partitions.get(t, [])]
        committed = _committed(admin, group_id, owned, timeout)
        lags[name] = {
            topic: [
                PartitionLag(p, low[(topic, p)], high[(topic, p)], committed.get((topic, p)))
                for p in partitions[topic]
            ]
            for topic in wanted[name]
            if topic in partitions
        }
    # A small lag may be mostly transaction markers (the router writes `deliveries` in
    # transactions, and a consumer commits past a record, not past the marker after it):
    # count the records themselves. Each topic is read by one group only.
    small = {
        (topic, part.partition): (part.position, part.high)
        for by_topic in lags.values()
        for topic, parts in by_topic.items()
        for part in parts
        if 0 < part.lag <= EXACT_LAG_LIMIT
    }
    unread = _count_unread(settings, small, timeout)
    out: list[GroupStatus] = []
    for name, group_id in ids.items():
        description = descriptions[group_id].result(timeout)
        members = tuple(
            Member(
                client_id=member.client_id or "",
                host=(member.host or "").lstrip("/"),
                member_id=member.member_id or "",
                partitions=_names(member.assignment.topic_partitions if member.assignment else []),
            )
            for member in description.members
        )
        topic_lags = tuple(
            TopicLag(
                topic,
                tuple(replace(p, unread=unread.get((topic, p.partition))) for p in parts),
            )
            for topic, parts in lags[name].items()
        )
        out.append(GroupStatus(name, group_id, description.state.name, members, topic_lags))
    return out


def _committed(
    admin: AdminClient, group_id: str, owned: Sequence[Partition], timeout: float
) -> dict[Partition, int]:
    if not owned:
        return {}
    request = ConsumerGroupTopicPartitions(group_id, [TopicPartition(t, p) for t, p in owned])
    futures = admin.list_consumer_group_offsets([request], request_timeout=timeout)
    result = futures[group_id].result(timeout)
    return {
        (tp.topic, tp.partition): int(tp.offset)
        for tp in result.topic_partitions
        if tp.error is None and tp.offset >= 0 and tp.offset != OFFSET_INVALID
    }


def _names(assigned: Iterable[TopicPartition]) -> tuple[str, ...]:
    return tuple(sorted(f"{tp.topic}[{tp.partition}]" for tp in assigned))


def _tiers(
    settings: Settings, topics: Topics, groups: Sequence[GroupStatus], timeout: float
) -> tuple[TierStatus, ...]:
    sender = next(g for g in groups if g.name == SENDER_GROUP)
    lags = {t.topic: t for t in sender.topics}
    heads = {
        (tier.topic, part.partition): part.position
        for tier in topics.retry_tiers
        if tier.topic in lags
        for part in lags[tier.topic].partitions
        if part.lag > 0
    }
    due = _due_times(settings, heads, timeout)
    out: list[TierStatus] = []
    for tier in topics.retry_tiers:
        lag = lags.get(tier.topic)
        due_times = [ms for (topic, _p), ms in due.items() if topic == tier.topic and ms]
        out.append(
            TierStatus(
                tier=tier.name,
                topic=tier.topic,
                delay_seconds=tier.delay,
                backlog=lag.lag if lag is not None else None,
                oldest_due_at_ms=min(due_times) if due_times else None,
            )
        )
    return tuple(out)


def _read(
    settings: Settings,
    starts: Mapping[Partition, int],
    timeout: float,
    take: Callable[[Partition, Message], bool],
) -> set[Partition]:
    """Read each partition from its start offset, handing every record to `take`, until its
    end or until `take` returns False. Returns the partitions not finished in time.

    The consumer only assigns partitions: it never joins its group nor commits.
    """
    if not starts:
        return set()
    consumer = Consumer(
        consumer_config(
            settings,
            f"status-{uuid.uuid4().hex[:8]}",
            {"enable.auto.commit": False, "enable.partition.eof": True, "fetch.wait.max.ms": 10},
        )
    )
    pending = set(starts)
    try:
        consumer.assign([TopicPartition(t, p, offset) for (t, p), offset in starts.items()])
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            for message in consumer.consume(num_messages=500, timeout=0.2):
                key = (message.topic() or "", message.partition() or 0)
                if key not in pending:
                    continue
                error = message.error()
                if error is None and take(key, message):
                    continue
                if error is None or error.code() == KafkaError._PARTITION_EOF:
                    pending.discard(key)
                    consumer.pause([TopicPartition(*key)])
    finally:
        consumer.close()
    return pending


def _due_times(
    settings: Settings, heads: Mapping[Partition, int], timeout: float
) -> dict[Partition, int | None]:
    """The due time (header) of the record at each given offset."""
    found: dict[Partition, int | None] = {}

    def take(key: Partition, message: Message) -> bool:
        found[key] = _due_header(header_pairs(message))
        return False

    _read(settings, heads, timeout, take)
    return found


def _count_unread(
    settings: Settings, spans: Mapping[Partition, tuple[int, int]], timeout: float
) -> dict[Partition, int]:
    """Records (not transaction markers) from each start offset up to each end offset."""
    counts = dict.fromkeys(spans, 0)

    def take(key: Partition, message: Message) -> bool:
        if (message.offset() or 0) >= spans[key][1]:
            return False
        counts[key] += 1
        return True

    late = _read(settings, {key: start for key, (start, _end) in spans.items()}, timeout, take)
    return {key: count for key, count in counts.items() if key not in late}


def _dead_letters(
    settings: Settings, topic: str, ranges: Mapping[Partition, tuple[int, int]], timeout: float
) -> DeadLetters:
    offsets = sum(high - low for low, high in ranges.values())
    wanted = {part: low for part, (low, high) in ranges.items() if high > low}
    if offsets > DLQ_READ_LIMIT or not wanted:
        return DeadLetters(topic, offsets, offsets == 0, {}, None)
    codec = default_codec()
    reasons: Counter[str] = Counter()
    newest: list[int] = []

    def take(_key: Partition, message: Message) -> bool:
        try:
            record = codec.read(DeadLetter, message.value() or b"")
        except (DecodeError, KeyError, TypeError):
            reasons["(undecodable dead letter)"] += 1
            return True
        reasons[record.reason] += 1
        newest[:] = [max([*newest, record.failed_at_ms])]
        return True

    if _read(settings, wanted, timeout, take):
        # Not read to the end in time: the offsets are the better answer.
        return DeadLetters(topic, offsets, False, {}, None)
    return DeadLetters(
        topic, sum(reasons.values()), True, dict(reasons), newest[0] if newest else None
    )


def _due_header(headers: Headers) -> int | None:
    # A header that cannot be read says nothing about when the record is due.
    return due_at_from_headers(headers) or None


def _recently_disabled(
    settings: Settings, topics: Topics, now_ms: int, timeout: float
) -> tuple[tuple[DisabledWebhook, ...], str | None]:
    view = webhook_view(settings, default_codec(), topics.webhooks, None)
    view.start()
    try:
        view.wait_ready(timeout)
        webhooks = view.values()
    except (ViewNotReadyError, KafkaException) as exc:
        return (), f"webhooks not read: {exc}"
    finally:
        view.stop()
    since = now_ms - DISABLED_WINDOW_MS
    disabled = [
        DisabledWebhook(w.id, w.tenant_id, w.name, w.disabled_reason, w.updated_at_ms)
        for w in webhooks
        if not w.enabled and w.updated_at_ms >= since
    ]
    disabled.sort(key=lambda w: (-w.disabled_at_ms, w.id))
    return tuple(disabled), None


# -- presenting ----------------------------------------------------------------------------


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="seconds")[:-6] + "Z"


def to_json(status: Status) -> dict[str, Any]:
    """The status as plain JSON values, for scripts (`hookstream status --json`)."""
    return {
        "taken_at": _iso(status.taken_at_ms),
        "taken_at_ms": status.taken_at_ms,
        "bootstrap_servers": status.bootstrap_servers,
        "groups": [
            {
                "name": group.name,
                "group_id": group.group_id,
                "state": group.state,
                "lag": group.lag,
                "members": [
                    {
                        "client_id": m.client_id,
                        "host": m.host,
                        "member_id": m.member_id,
                        "partitions": list(m.partitions),
                    }
                    for m in group.members
                ],
                "topics": [
                    {
                        "topic": topic.topic,
                        "lag": topic.lag,
                        "partitions": [
                            {
                                "partition": p.partition,
                                "low": p.low,
                                "high": p.high,
                                "committed": p.committed,
                                "lag": p.lag,
                            }
                            for p in topic.partitions
                        ],
                    }
                    for topic in group.topics
                ],
            }
            for group in status.groups
        ],
        "retry_tiers": [
            {
                "tier": tier.tier,
                "topic": tier.topic,
                "delay_seconds": tier.delay_seconds,
                "backlog": tier.backlog,
                "oldest_due_at_ms": tier.oldest_due_at_ms,
                "oldest_due_at": (
                    _iso(tier.oldest_due_at_ms) if tier.oldest_due_at_ms is not None else None
                ),
            }
            for tier in status.retry_tiers
        ],
        "dlq": {
            "topic": status.dead_letters.topic,
            "size": status.dead_letters.size,
            "exact": status.dead_letters.exact,
            "by_reason": dict(sorted(status.dead_letters.by_reason.items())),
            "newest_at_ms": status.dead_letters.newest_at_ms,
            "newest_at": (
                _iso(status.dead_letters.newest_at_ms)
                if status.dead_letters.newest_at_ms is not None
                else None
            ),
        },
        "disabled_webhooks": [
            {
                "id": w.id,
                "tenant_id": w.tenant_id,
                "name": w.name,
                "reason": w.reason,
                "disabled_at_ms": w.disabled_at_ms,
                "disabled_at": _iso(w.disabled_at_ms),
            }
            for w in status.disabled_webhooks
        ],
        "problems": list(status.problems),
    }


def _duration(seconds: float) -> str:
    seconds = abs(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


def _due_text(due_ms: int | None, now_ms: int) -> str:
    if due_ms is None:
        return "-"
    delta = (due_ms - now_ms) / 1000
    relative = f"in {_duration(delta)}" if delta >= 0 else f"{_duration(delta)} overdue"
    return f"{_iso(due_ms)} ({relative})"


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    cells = [[str(c) for c in headers], *([str(c) for c in row] for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]


def render_table(status: Status) -> str:
    """The status for people: one section per question an SRE asks."""
    now = status.taken_at_ms
    lines = [f"hookstream status at {_iso(now)} (kafka {status.bootstrap_servers})", ""]

    lines.append("CONSUMER GROUPS")
    rows: list[list[object]] = []
    for group in status.groups:
        head: list[object] = [group.name, group.state, len(group.members)]
        if not group.topics:
            rows.append([*head, "-", "-"])
        for i, topic in enumerate(group.topics):
            rows.append([*(head if i == 0 else ["", "", ""]), topic.topic, topic.lag])
    lines += _table(["GROUP", "STATE", "MEMBERS", "TOPIC", "LAG"], rows)

    members = [
        [group.name, m.client_id, m.host, _compact(m.partitions)]
        for group in status.groups
        for m in group.members
    ]
    if members:
        lines += ["", "MEMBERS"]
        lines += _table(["GROUP", "CLIENT", "HOST", "PARTITIONS"], members)

    lines += ["", "RETRY TIERS (sender backlog)"]
    lines += _table(
        ["TIER", "TOPIC", "BACKLOG", "OLDEST DUE"],
        [
            [t.tier, t.topic, _or_dash(t.backlog), _due_text(t.oldest_due_at_ms, now)]
            for t in status.retry_tiers
        ],
    )

    lines += ["", "DEAD LETTERS", _dlq_text(status.dead_letters, now)]
    if status.dead_letters.by_reason:
        lines += _table(["REASON", "RECORDS"], sorted(status.dead_letters.by_reason.items()))

    lines += ["", "WEBHOOKS DISABLED IN THE LAST 24 H"]
    if status.disabled_webhooks:
        lines += _table(
            ["WEBHOOK", "TENANT", "DISABLED AT", "REASON"],
            [
                [w.id, w.tenant_id, _iso(w.disabled_at_ms), w.reason or "by its owner"]
                for w in status.disabled_webhooks
            ],
        )
    else:
        lines.append("none")

    if status.problems:
        lines += ["", "PROBLEMS", *(f"- {p}" for p in status.problems)]
    return "\n".join(lines)


def _dlq_text(dlq: DeadLetters, now_ms: int) -> str:
    if not dlq.exact:
        return f"{dlq.topic}: about {dlq.size} record(s) (offsets, too many to read)"
    text = f"{dlq.topic}: {dlq.size} record(s)"
    if dlq.newest_at_ms is not None:
        age = _duration((now_ms - dlq.newest_at_ms) / 1000)
        text += f", newest {_iso(dlq.newest_at_ms)} ({age} ago)"
    return text


def _or_dash(value: object) -> object:
    return "-" if value is None else value


def _compact(partitions: Sequence[str]) -> str:
    """`a[0] a[1] b[2]` -> `a[0,1] b[2]`."""
    by_topic: dict[str, list[str]] = {}
    for name in partitions:
        topic, _, rest = name.rpartition("[")
        by_topic.setdefault(topic, []).append(rest.rstrip("]"))
    return " ".join(f"{t}[{','.join(parts)}]" for t, parts in by_topic.items()) or "-"


def run(settings: Settings, as_json: bool = False, timeout: float = 15.0) -> int:
    """`hookstream status [--json]`: 0 when Kafka answered, 1 when it did not."""
    try:
        status = collect_status(settings, timeout)
    except KafkaException as exc:
        print(f"hookstream status: Kafka did not answer: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(to_json(status), indent=2) if as_json else render_table(status))
    return 0
