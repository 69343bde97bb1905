"""`hookstream secrets`: re-encrypt every webhook secret under the active key; new keys.

Key rotation without downtime:
  1. generate a key (`hookstream secrets generate-key --kid k2`) and deploy every API and sender
     with `HOOKSTREAM_ENCRYPTION_KEY=k2:...,k1:...` (new first: it encrypts, both decrypt);
  2. run `hookstream secrets reencrypt`: it reads the compacted `webhooks` topic and writes back
     every webhook whose secrets are not all under `k2` (plaintext ones included);
  3. once it reports nothing left, deploy with `HOOKSTREAM_ENCRYPTION_KEY=k2:...` alone.

Rewriting a record races with a change made through the API at the same moment: a change that
lands between our read and our write would be overwritten by our older copy. After writing, the
topic is read again up to our records; any record for the same webhook found in between is
written again after ours (re-encrypted), so the concurrent change wins, as it should.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    Message,
    Producer,
    TopicPartition,
)

from hookstream.core.codec import Codec, DecodeError, default_codec
from hookstream.core.kafka import consumer_config, producer_config
from hookstream.core.keys import generate_key
from hookstream.core.records import Webhook
from hookstream.core.settings import Settings
from hookstream.core.topics import Topics
from hookstream.endpoints.secrets import Keyring, SecretError, load_keyring

# Passes that re-apply concurrent changes before giving up (each one is a rare race).
MAX_ROUNDS = 10


class ReencryptError(Exception):
    pass


@dataclass
class ReencryptReport:
    active_kid: str
    webhooks: int = 0
    reencrypted: list[str] = field(default_factory=list)
    current: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    undecodable: int = 0
    # Concurrent changes written again after a record of ours had overtaken them.
    reapplied: int = 0


@dataclass
class _Written:
    partition: int
    offset: int


def reencrypt_webhooks(
    settings: Settings,
    keyring: Keyring,
    *,
    dry_run: bool = False,
    timeout: float = 60.0,
    codec: Codec | None = None,
) -> ReencryptReport:
    """Rewrite every webhook whose secrets are not all under `keyring`'s active key."""
    codec = codec or default_codec()
    topic = Topics.from_settings(settings).webhooks
    report = ReencryptReport(keyring.active_kid)
    deadline = time.monotonic() + timeout
    consumer = Consumer(
        consumer_config(
            settings,
            f"reencrypt-{uuid.uuid4().hex[:8]}",
            {"enable.auto.commit": False, "enable.partition.eof": True, "fetch.wait.max.ms": 50},
        )
    )
    try:
        metadata = consumer.list_topics(topic, timeout=30).topics.get(topic)
        if metadata is None or metadata.error is not None:
            raise ReencryptError(f"topic {topic} does not exist")
        partitions = sorted(metadata.partitions)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])

        latest: dict[bytes, Message] = {}
        at_end: set[int] = set()

        def snapshot(message: Message) -> None:
            key = message.key()
            if isinstance(key, bytes):
                latest[key] = message

        _consume(consumer, snapshot, lambda: len(at_end) == len(partitions), at_end, deadline)

        pending: dict[bytes, bytes | None] = {}
        for key, message in latest.items():
            value = message.value()
            if value is None:
                continue
            report.webhooks += 1
            rewritten, problem = _rewrite(codec, keyring, value)
            if rewritten is not None:
                pending[key] = rewritten
                report.reencrypted.append(key.decode("utf-8", "replace"))
            elif problem is None:
                report.current += 1
            elif problem == "undecodable":
                report.undecodable += 1
            else:
                report.failed[key.decode("utf-8", "replace")] = problem
        report.reencrypted.sort()
        if dry_run or not pending:
            return report

        producer = Producer(producer_config(settings))
        for _round in range(MAX_ROUNDS):
            ours = _produce(producer, topic, pending)
            pending = _overtaken(consumer, ours, codec, keyring, deadline)
            if not pending:
                return report
            report.reapplied += len(pending)
        raise ReencryptError(
            f"webhooks kept changing during {MAX_ROUNDS} passes; run reencrypt again"
        )
    finally:
        consumer.close()


def _rewrite(codec: Codec, keyring: Keyring, value: bytes) -> tuple[bytes | None, str | None]:
    """(the record re-encrypted, None); (None, None) if already current; (None, problem)."""
    try:
        webhook = codec.read(Webhook, value)
    except (DecodeError, KeyError, TypeError, ValueError):
        return None, "undecodable"
    try:
        updated = keyring.reencrypted(webhook)
    except SecretError as exc:
        return None, str(exc)
    if updated is webhook:
        return None, None
    # updated_at_ms stays: the webhook did not change, only how its secrets are stored. It is
    # still a write based on this version (core.versions): one that raced another writer is
    # refused by the views, and `_overtaken` re-applies it to the winner.
    return codec.write(replace(updated, version=webhook.version + 1)), None


def _consume(
    consumer: Consumer,
    handle: Callable[[Message], None],
    done: Callable[[], bool],
    at_end: set[int],
    deadline: float,
) -> None:
    while not done():
        if time.monotonic() > deadline:
            raise ReencryptError("timed out reading the webhooks topic")
        for message in consumer.consume(num_messages=500, timeout=0.2):
            error = message.error()
            if error is None:
                handle(message)
            elif error.code() == KafkaError._PARTITION_EOF:
                at_end.add(message.partition() or 0)
            else:
                raise ReencryptError(f"reading the webhooks topic: {error}")


def _produce(
    producer: Producer, topic: str, records: dict[bytes, bytes | None]
) -> dict[bytes, _Written]:
    written: dict[bytes, _Written] = {}
    errors: list[str] = []

    def settle(error: KafkaError | None, message: Message) -> None:
        key = message.key()
        if error is not None:
            errors.append(str(error))
        elif isinstance(key, bytes):
            written[key] = _Written(message.partition() or 0, message.offset() or 0)

    for key, value in records.items():
        producer.produce(topic, key=key, value=value, on_delivery=settle)
    if producer.flush(30) != 0 or errors or len(written) != len(records):
        raise ReencryptError(
            f"Kafka did not acknowledge every re-encrypted record: {'; '.join(errors)}"
        )
    return written


def _overtaken(
    consumer: Consumer,
    ours: dict[bytes, _Written],
    codec: Codec,
    keyring: Keyring,
    deadline: float,
) -> dict[bytes, bytes | None]:
    """Read on up to our records; the concurrent changes they overwrote, ready to re-apply.

    A record for one of our keys placed before ours, and after the snapshot we read, is a
    change made meanwhile that our older copy now hides. A record placed after ours is newer
    and wins by itself.
    """
    targets: dict[int, int] = {}
    for written in ours.values():
        targets[written.partition] = max(targets.get(written.partition, -1), written.offset)
    seen: dict[int, int] = {}
    hidden: dict[bytes, Message] = {}

    def check(message: Message) -> None:
        partition, offset = message.partition() or 0, message.offset() or 0
        seen[partition] = max(seen.get(partition, -1), offset)
        key = message.key()
        mine = ours.get(key) if isinstance(key, bytes) else None
        if mine is None or not isinstance(key, bytes):
            return
        if offset < mine.offset:
            hidden[key] = message
        elif offset > mine.offset:
            hidden.pop(key, None)

    def reached() -> bool:
        return all(seen.get(p, -1) >= offset for p, offset in targets.items())

    _consume(consumer, check, reached, set(), deadline)
    again: dict[bytes, bytes | None] = {}
    for key, message in hidden.items():
        value = message.value()
        # Deleted meanwhile (None): deleted again, or our copy would bring it back.
        rewritten = _rewrite(codec, keyring, value)[0] if value is not None else None
        again[key] = rewritten if rewritten is not None else value
    return again


def secrets_command(action: str, settings: Settings | None, kid: str | None, dry_run: bool) -> int:
    """The `hookstream secrets` subcommands; returns the exit status."""
    if action == "generate-key":
        print(generate_key(kid or time.strftime("k%Y%m%d")))
        return 0
    assert settings is not None
    keyring = load_keyring(settings)
    report = reencrypt_webhooks(settings, keyring, dry_run=dry_run)
    verb = "would re-encrypt" if dry_run else "re-encrypted"
    print(f"webhooks: {report.webhooks}")
    print(f"{verb} under key {report.active_kid!r}: {len(report.reencrypted)}")
    print(f"already under key {report.active_kid!r}: {report.current}")
    if report.reapplied:
        print(f"concurrent changes re-applied: {report.reapplied}")
    if report.undecodable:
        print(f"undecodable records skipped: {report.undecodable}")
    for webhook_id, reason in sorted(report.failed.items()):
        print(f"FAILED {webhook_id}: {reason}")
    return 1 if report.failed else 0
