"""From a `delivery-log` record to a row the store takes, or a refusal naming why not.

Avro guarantees the field types; this checks what the store or the API would otherwise trip
over later: empty or unprintable ids, an attempt number below 1, timestamps no one can show,
and NUL characters, which PostgreSQL text cannot hold.
"""

from __future__ import annotations

from typing import Any

from hookstream.core.codec import Codec
from hookstream.core.deadletter import UNDECODABLE, RejectedRecord

INVALID_ATTEMPT = "invalid_attempt"
_ID_FIELDS = ("attempt_id", "delivery_id", "event_id", "webhook_id", "tenant_id", "event_type")
MAX_ID_LENGTH = 256
# The last millisecond of year 9999: beyond it no timestamp can be shown.
MAX_UNIX_MS = 253_402_300_799_999


def decode_attempt(codec: Codec, value: bytes | None) -> dict[str, Any]:
    """The decoded, storable attempt; raises `DecodeError` or `RejectedRecord`."""
    if value is None:
        raise RejectedRecord(UNDECODABLE, "the record has no value (a tombstone)")
    attempt = codec.decode("Attempt", value)
    for name in _ID_FIELDS:
        text = attempt[name]
        if not text or len(text) > MAX_ID_LENGTH or not text.isprintable():
            raise RejectedRecord(
                INVALID_ATTEMPT, f"field {name!r} must be 1 to {MAX_ID_LENGTH} printable characters"
            )
    if attempt["attempt_number"] < 1:
        raise RejectedRecord(INVALID_ATTEMPT, "field 'attempt_number' must be 1 or more")
    if attempt["duration_ms"] < 0:
        raise RejectedRecord(INVALID_ATTEMPT, "field 'duration_ms' must not be negative")
    for name in ("started_at_ms", "next_attempt_at_ms"):
        moment = attempt.get(name)
        if moment is not None and not 0 <= moment <= MAX_UNIX_MS:
            raise RejectedRecord(INVALID_ATTEMPT, f"field {name!r} is out of range")
    return _storable(attempt)


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
