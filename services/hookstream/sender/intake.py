"""From a `deliveries` or retry-tier record to a delivery the sender may attempt, or a refusal.

Avro guarantees the field types and the record type the trigger; this checks what the types
cannot say. Each check stands for a way a record would otherwise fail later, mid-attempt: an
id that cannot travel in a header, an attempt number below 1. (A body that is not UTF-8
cannot be signed: `core/signing.py` refuses it where it decodes the body anyway.)
"""

from __future__ import annotations

from typing import TypeVar

from hookstream.core.codec import Codec
from hookstream.core.deadletter import UNDECODABLE, RejectedRecord, require_ids, require_unix_ms
from hookstream.core.records import Delivery, InvalidRecordError, Retry

_ID_FIELDS = ("delivery_id", "event_id", "webhook_id", "tenant_id", "event_type")
INVALID_DELIVERY = "invalid_delivery"

_D = TypeVar("_D", Delivery, Retry)


def decode_delivery(codec: Codec, kind: type[_D], value: bytes | None) -> _D:
    """The decoded record; raises `DecodeError` or `RejectedRecord` naming what is wrong."""
    if value is None:
        raise RejectedRecord(UNDECODABLE, "the record has no value (a tombstone)")
    # Checked as decoded, before the typed record drops what it does not carry: a delivery's
    # `due_at_ms` is never used, but a value no one could mean is refused all the same.
    record = codec.decode(kind.SCHEMA, value)
    require_ids(record, _ID_FIELDS, INVALID_DELIVERY)
    # No upper bound: a replay of an exhausted delivery asks for one attempt beyond the
    # schedule, and any attempt past it that fails is simply exhausted.
    if record["attempt"] < 1:
        raise RejectedRecord(INVALID_DELIVERY, f"attempt {record['attempt']} is not 1 or more")
    try:
        delivery = kind.from_record(record)
    except InvalidRecordError as exc:
        raise RejectedRecord(INVALID_DELIVERY, str(exc)) from None
    require_unix_ms(record, ("created_at_ms", "due_at_ms"), INVALID_DELIVERY)
    return delivery
