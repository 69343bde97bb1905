"""Dead-letter records: the original bytes of what could not be processed, and why."""

from __future__ import annotations

import time
from typing import Any

from confluent_kafka import Message


def dead_letter(
    message: Message,
    reason: str,
    detail: str,
    *,
    webhook_id: str | None = None,
    delivery_id: str | None = None,
    event_id: str | None = None,
) -> dict[str, Any]:
    """A `DeadLetter` record for `message`, keeping its key and value byte for byte."""
    key = message.key()
    value = message.value()
    return {
        "reason": reason,
        "detail": detail,
        "source_topic": message.topic() or "",
        "source_partition": message.partition() or 0,
        "source_offset": message.offset() or 0,
        "key": key if isinstance(key, bytes) else None,
        "value": value if isinstance(value, bytes) else b"",
        "webhook_id": webhook_id,
        "delivery_id": delivery_id,
        "event_id": event_id,
        "failed_at_ms": int(time.time() * 1000),
    }
