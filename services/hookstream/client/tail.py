"""`hookstream deliveries tail`: follow the delivery-log topic, one line per attempt.

Reads Kafka directly (no API key involved): an operator's tool, like tailing a log file.
Partitions are assigned, not joined as a consumer group, and no offsets are committed, so
any number of tails can run beside the services without disturbing them.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import uuid
from datetime import UTC, datetime
from types import FrameType
from typing import Any, TextIO

from hookstream.core.records import Attempt
from hookstream.core.settings import Settings
from hookstream.core.topics import Topics

POLL_SECONDS = 0.5
METADATA_TIMEOUT = 10.0


class TailError(Exception):
    """The topic cannot be followed (broker unreachable, topic missing)."""


def when(ms: int | None) -> str:
    if ms is None:
        return "-"
    moment = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def attempt_line(attempt: dict[str, Any]) -> str:
    """time, outcome, status, webhook, event type, delivery id, duration (and any error)."""
    status = attempt.get("status_code")
    parts = [
        when(attempt.get("started_at_ms")),
        f"{attempt['outcome']:<17}",
        f"{status if status is not None else '-':>3}",
        attempt["webhook_id"],
        attempt["event_type"],
        attempt["delivery_id"],
        f"{attempt['duration_ms']}ms",
        f"#{attempt['attempt_number']} {attempt['trigger']}",
    ]
    error = attempt.get("error")
    if error:
        parts.append(" ".join(str(error).split())[:200])
    return "  ".join(parts)


def attempt_json(attempt: dict[str, Any]) -> str:
    """The record as one JSON line, without the request body, times also as ISO 8601."""
    shown = {key: value for key, value in attempt.items() if key != "body"}
    shown["started_at"] = when(attempt.get("started_at_ms"))
    return json.dumps(shown, ensure_ascii=False)


def tail(
    settings: Settings,
    *,
    from_beginning: bool = False,
    webhook_id: str | None = None,
    tenant_id: str | None = None,
    as_json: bool = False,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Print attempts until SIGINT or SIGTERM; returns the exit code."""
    from confluent_kafka import (
        OFFSET_BEGINNING,
        OFFSET_END,
        Consumer,
        KafkaException,
        TopicPartition,
    )

    from hookstream.core.codec import default_codec
    from hookstream.core.kafka import consumer_config

    out = out or sys.stdout
    err = err or sys.stderr
    codec = default_codec()
    topic = Topics.from_settings(settings).delivery_log
    consumer = Consumer(
        consumer_config(
            settings,
            f"cli-tail-{uuid.uuid4().hex[:8]}",
            {"enable.auto.commit": False, "enable.auto.offset.store": False},
        )
    )
    stop = threading.Event()

    def request_stop(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            metadata = consumer.list_topics(topic, timeout=METADATA_TIMEOUT)
        except KafkaException as exc:
            raise TailError(
                f"cannot read topic {topic} at {settings.kafka_bootstrap_servers}: {exc}"
            ) from None
        found = metadata.topics.get(topic)
        if found is None or found.error is not None or not found.partitions:
            raise TailError(
                f"topic {topic} not found at {settings.kafka_bootstrap_servers} "
                "(run `hookstream topics create`, or check HOOKSTREAM_TOPIC_PREFIX)"
            )
        start = OFFSET_BEGINNING if from_beginning else OFFSET_END
        consumer.assign([TopicPartition(topic, p, start) for p in sorted(found.partitions)])
        print(
            f"following {topic} at {settings.kafka_bootstrap_servers} "
            f"({'from the beginning' if from_beginning else 'new attempts only'}; Ctrl-C stops)",
            file=err,
            flush=True,
        )
        while not stop.is_set():
            for message in consumer.consume(500, timeout=POLL_SECONDS):
                if message.error() is not None:
                    print(f"kafka: {message.error()}", file=err, flush=True)
                    continue
                value = message.value()
                if value is None:
                    continue
                try:
                    attempt = codec.read(Attempt, value).to_record()
                except Exception as exc:
                    print(
                        f"skipped a record at partition {message.partition()} offset "
                        f"{message.offset()}: {exc}",
                        file=err,
                        flush=True,
                    )
                    continue
                if webhook_id is not None and attempt["webhook_id"] != webhook_id:
                    continue
                if tenant_id is not None and attempt["tenant_id"] != tenant_id:
                    continue
                print(attempt_json(attempt) if as_json else attempt_line(attempt), file=out)
            out.flush()
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        consumer.close()
