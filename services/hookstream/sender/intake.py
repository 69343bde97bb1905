"""From a `deliveries` or retry-tier record to a delivery the sender may attempt, or a refusal.

Avro guarantees the field types; this checks what the types cannot say. Each check stands for
a way a record would otherwise fail later, mid-attempt: an id that cannot travel in a header,
an attempt number below 1, a trigger the store does not know. (A body that is not UTF-8
cannot be signed: `core/signing.py` refuses it where it decodes the body anyway.)
"""

from __future__ import annotations

from typing import Any

from hookstream.core.codec import Codec
from hookstream.core.deadletter import UNDECODABLE, RejectedRecord, require_ids, require_unix_ms

TRIGGERS = frozenset({"scheduled", "manual", "test"})
_ID_FIELDS = ("delivery_id", "event_id", "webhook_id", "tenant_id", "event_type")
INVALID_DELIVERY = "invalid_delivery"


def decode_delivery(codec: Codec, record_name: str, value: bytes | None) -> dict[str, Any]:
    """The decoded record; raises `DecodeError` or `RejectedRecord` naming what is wrong."""
    if value is None:
        raise RejectedRecord(UNDECODABLE, "the record has no value (a tombstone)")
    delivery = codec.decode(record_name, value)
    require_ids(delivery, _ID_FIELDS, INVALID_DELIVERY)
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
    require_unix_ms(delivery, ("created_at_ms", "due_at_ms"), INVALID_DELIVERY)
    return delivery
