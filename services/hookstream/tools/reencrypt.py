"""`hookstream secrets`: re-encrypt every webhook secret under the active key; new keys.

Key rotation without downtime:
  1. generate a key (`hookstream secrets generate-key --kid k2`) and deploy every API and sender
     with `HOOKSTREAM_ENCRYPTION_KEY=k2:...,k1:...` (new first: it encrypts, both decrypt);
  2. run `hookstream secrets reencrypt`: it reads the compacted `webhooks` topic and writes back
     every webhook whose secrets are not all under `k2` (plaintext ones included);
  3. once it reports nothing left, deploy with `HOOKSTREAM_ENCRYPTION_KEY=k2:...` alone.

It reads the topic through a webhook view, the views' own rule (core.versions), so it starts
from the state every service holds, not from a record they refused; each rewrite is that
state's version + 1, re-encrypted. A change made through the API at the same moment wins: our
record then is refused by the views, and the webhook is read again and rewritten on top of the
change (or, deleted meanwhile, stays deleted). A refused record of ours is never left the last
of its key: the state the views hold is written after it (settling), so compaction keeps that.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field, replace

from confluent_kafka import KafkaError, Message, Producer

from hookstream.core.codec import Codec, default_codec
from hookstream.core.deadletter import DeadLetterSink, Refusal
from hookstream.core.deadletter import refuse as refuse_record
from hookstream.core.kafka import Headers, admin_client, header_pairs, producer_config
from hookstream.core.keys import generate_key
from hookstream.core.records import Webhook
from hookstream.core.settings import Settings
from hookstream.core.topics import Topics
from hookstream.core.view import CompactedView, ViewNotReadyError, webhook_view
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
    _require_topic(settings, topic)
    skipped = _Skipped(settings, codec, topic)
    view = webhook_view(settings, codec, topic, skipped).start()
    try:
        try:
            view.wait_ready(timeout)
        except ViewNotReadyError as exc:
            raise ReencryptError(f"reading the webhooks topic: {exc}") from None
        held = sorted(view.values(), key=lambda webhook: webhook.id)
        report.webhooks = len(held)
        report.undecodable = skipped.count
        pending: dict[str, bytes | None] = {}
        for webhook in held:
            rewritten, problem = _rewrite(codec, keyring, webhook)
            if rewritten is not None:
                pending[webhook.id] = rewritten
                report.reencrypted.append(webhook.id)
            elif problem is None:
                report.current += 1
            else:
                report.failed[webhook.id] = problem
        if dry_run or not pending:
            return report
        producer = Producer(producer_config(settings))
        for _round in range(MAX_ROUNDS):
            lost = _write(producer, view, topic, pending, deadline)
            pending = {}
            for webhook_id in lost:
                # Another writer came first. Rewritten on top of its change; or, if that is
                # current already (or the webhook is gone), the held state is written again so
                # that our refused record is not the last of its key.
                current = view.get(webhook_id)
                rewritten = None if current is None else _rewrite(codec, keyring, current)[0]
                if rewritten is None:
                    rewritten = None if current is None else codec.write(current)
                pending[webhook_id] = rewritten
            if not pending:
                return report
            report.reapplied += len(pending)
        raise ReencryptError(
            f"webhooks kept changing during {MAX_ROUNDS} passes; run reencrypt again"
        )
    finally:
        view.stop()


class _Skipped(DeadLetterSink):
    """Counts the records the view could not apply; a tool writes no dead letters."""

    def __init__(self, settings: Settings, codec: Codec, topic: str) -> None:
        super().__init__(settings, codec, topic, "reencrypt", lambda _reason: None)
        self.count = 0

    def refuse(
        self, message: Message, exc: BaseException, headers: Headers | None = None
    ) -> Refusal:
        self.count += 1
        return refuse_record(self.service, message, headers or header_pairs(message), exc)[0]


def _require_topic(settings: Settings, topic: str) -> None:
    admin = admin_client(settings)
    metadata = admin.list_topics(topic, timeout=30).topics.get(topic)
    if metadata is None or metadata.error is not None:
        raise ReencryptError(f"topic {topic} does not exist")


def _write(
    producer: Producer,
    view: CompactedView[Webhook],
    topic: str,
    records: dict[str, bytes | None],
    deadline: float,
) -> list[str]:
    """Write `records` (webhook id -> value, None a tombstone); the ids whose record the
    views refused."""
    with contextlib.ExitStack() as stack:
        seen = {key: stack.enter_context(view.verdicts(key)) for key in records}
        written = _produce(producer, topic, {k.encode(): v for k, v in records.items()})
        for at in written.values():
            left = max(0.0, deadline - time.monotonic())
            if not view.wait_for_offset(at.partition, at.offset, left):
                raise ReencryptError("timed out reading our own records back")
        return [
            key.decode()
            for key, at in written.items()
            if not seen[key.decode()].get((at.partition, at.offset), False)
        ]


def _rewrite(codec: Codec, keyring: Keyring, webhook: Webhook) -> tuple[bytes | None, str | None]:
    """(the record re-encrypted, None); (None, None) if already current; (None, problem)."""
    try:
        updated = keyring.reencrypted(webhook)
    except SecretError as exc:
        return None, str(exc)
    if updated is webhook:
        return None, None
    # updated_at_ms stays: the webhook did not change, only how its secrets are stored. It is
    # still a write based on this version (core.versions).
    return codec.write(replace(updated, version=webhook.version + 1)), None


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
