"""From a `delivery-log` record to a row the store takes, or a refusal naming why not.

Avro guarantees the field types; this checks what the store or the API would otherwise trip
over later: empty or unprintable ids, an attempt number below 1, timestamps no one can show,
and NUL characters, which PostgreSQL text cannot hold.
"""

from __future__ import annotations

from dataclasses import fields, replace
from typing import Any

from hookstream.core.codec import Codec
from hookstream.core.deadletter import UNDECODABLE, RejectedRecord, require_ids, require_unix_ms
from hookstream.core.records import Attempt

INVALID_ATTEMPT = "invalid_attempt"
_ID_FIELDS = ("attempt_id", "delivery_id", "event_id", "webhook_id", "tenant_id", "event_type")
_FIELDS = tuple(field.name for field in fields(Attempt))


def decode_attempt(codec: Codec, value: bytes | None) -> Attempt:
    """The decoded, storable attempt; raises `DecodeError` or `RejectedRecord`."""
    if value is None:
        raise RejectedRecord(UNDECODABLE, "the record has no value (a tombstone)")
    attempt = codec.read(Attempt, value)
    require_ids(attempt, _ID_FIELDS, INVALID_ATTEMPT)
    if attempt.attempt_number < 1:
        raise RejectedRecord(INVALID_ATTEMPT, "field 'attempt_number' must be 1 or more")
    if attempt.duration_ms < 0:
        raise RejectedRecord(INVALID_ATTEMPT, "field 'duration_ms' must not be negative")
    require_unix_ms(attempt, ("started_at_ms", "next_attempt_at_ms"), INVALID_ATTEMPT)
    return _storable(attempt)


def _storable(attempt: Attempt) -> Attempt:
    """The attempt with every NUL character in its text shown as U+FFFD.

    A response body or error text may carry NUL (an endpoint answering with binary data);
    PostgreSQL text cannot hold it and would reject the whole batch on every restart. Both
    backends store the same replacement, as the sender already does for invalid UTF-8.
    """
    nul: dict[str, Any] = {
        name: value.replace("\x00", "\ufffd")
        for name in _FIELDS
        if isinstance(value := getattr(attempt, name), str) and "\x00" in value
    }
    return replace(attempt, **nul) if nul else attempt
