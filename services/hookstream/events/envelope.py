"""The request envelope and delivery ids, shared by every service that creates deliveries.

The router creates deliveries from events; the API creates them for test events and replays.
Both must produce byte-identical envelopes and the same ids, so the rules live here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from hookstream.core.deadletter import RejectedRecord

DELIVERY_ID_PREFIX = "dlv_"


class EnvelopeEvent(Protocol):
    """What the envelope needs to know about an event besides its (possibly redacted) data."""

    @property
    def id(self) -> str: ...

    @property
    def type(self) -> str: ...

    @property
    def occurred_at(self) -> str: ...


@dataclass(frozen=True, slots=True)
class EventHead:
    """An `EnvelopeEvent` for callers that build an event themselves (the API's test event)."""

    id: str
    type: str
    occurred_at: str


def delivery_id(event_id: str, webhook_id: str) -> str:
    """The id of the delivery of `event_id` to `webhook_id`, the same on every computation.

    Deterministic so that a router re-processing an event after a crash produces the same
    deliveries, which downstream deduplicates, instead of sending the event twice.
    """
    # 128-bit BLAKE2b in hex: C all the way (base32 is pure Python and was a tenth of the
    # router's time per delivery).
    digest = hashlib.blake2b(f"{event_id}\0{webhook_id}".encode(), digest_size=16)
    return DELIVERY_ID_PREFIX + digest.hexdigest()


def build_body(event: EnvelopeEvent, data: Mapping[str, Any], api_version: str) -> bytes:
    """The request body: the envelope fields in their documented order, then `data`.

    Raises `RejectedRecord` for `data` nested deeper than JSON serialisation goes (orjson
    writes 254 levels; the envelope takes one), which a decoder may still have read.
    """
    envelope = {
        "id": event.id,
        "type": event.type,
        "occurred_at": event.occurred_at,
        "api_version": api_version,
        # orjson serialises real dicts only; the catalog and redact hand out dicts already.
        "data": data if isinstance(data, dict) else dict(data),
    }
    try:
        return orjson.dumps(envelope)
    except TypeError as exc:  # orjson's "Recursion limit reached"
        raise RejectedRecord(
            "invalid_field", f"event field 'data' cannot be sent as JSON: {exc}"
        ) from None
