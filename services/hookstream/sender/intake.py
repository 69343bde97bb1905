"""From a `deliveries` or retry-tier record to a delivery the sender may attempt, or a refusal.

Avro guarantees the field types; this checks what the types cannot say. Each check stands for
a way a record would otherwise fail later, mid-attempt: an id that cannot travel in a header,
an attempt number below 1, a trigger the store does not know, a body that cannot be signed
(Standard Webhooks signs the body as text, so it must be UTF-8).
"""

from __future__ import annotations

from typing import Any

from hookstream.core.codec import Codec
from hookstream.core.deadletter import UNDECODABLE, RejectedRecord

TRIGGERS = frozenset({"scheduled", "manual", "test"})
_ID_FIELDS = ("delivery_id", "event_id", "webhook_id", "tenant_id", "event_type")
MAX_ID_LENGTH = 256
# The last millisecond of year 9999: beyond it no timestamp can be shown.
MAX_UNIX_MS = 253_402_300_799_999
INVALID_DELIVERY = "invalid_delivery"


def decode_delivery(codec: Codec, record_name: str, value: bytes | None) -> dict[str, Any]:
    """The decoded record; raises `DecodeError` or `RejectedRecord` naming what is wrong."""
    if value is None:
        raise RejectedRecord(UNDECODABLE, "the record has no value (a tombstone)")
    delivery = codec.decode(record_name, value)
    for name in _ID_FIELDS:
        text = delivery[name]
        if not text or len(text) > MAX_ID_LENGTH or not text.isprintable():
            raise RejectedRecord(
                INVALID_DELIVERY,
                f"field {name!r} must be 1 to {MAX_ID_LENGTH} printable characters",
            )
    # The event id is the `webhook-id` header, and receivers strip the spaces around a header
    # value: the id they verify the signature with would not be the one that was signed.
    if delivery["event_id"] != delivery["event_id"].strip(" "):
        raise RejectedRecord(
            INVALID_DELIVERY,
            "field 'event_id' must not start or end with a space: it travels as the "
            "webhook-id header, whose receivers strip them and then fail the signature",
        )
    attempt = delivery["attempt"]
    # No upper bound: a replay of an exhausted delivery asks for one attempt beyond the
    # schedule, and any attempt past it that fails is simply exhausted.
    if attempt < 1:
        raise RejectedRecord(INVALID_DELIVERY, f"attempt {attempt} is not 1 or more")
    if delivery["trigger"] not in TRIGGERS:
        raise RejectedRecord(
            INVALID_DELIVERY,
            f"trigger {delivery['trigger']!r} is not one of {', '.join(sorted(TRIGGERS))}",
        )
    for name in ("created_at_ms", "due_at_ms"):
        if not 0 <= delivery[name] <= MAX_UNIX_MS:
            raise RejectedRecord(INVALID_DELIVERY, f"field {name!r} is out of range")
    try:
        delivery["body"].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RejectedRecord(
            INVALID_DELIVERY, f"field 'body' is not UTF-8 text, so it cannot be signed: {exc}"
        ) from None
    return delivery
