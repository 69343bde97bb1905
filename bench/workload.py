"""The synthetic platform: webhooks, events and deliveries, built the way hookstream builds them.

Bodies go through `hookstream.events.envelope.build_body`, so the sender signs and POSTs exactly
the bytes a routed event would carry. Each body is padded with random hex to a set size, so
lz4 on the topics finds about as little to squeeze as in real JSON payloads.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from hookstream.core.codec import Codec
from hookstream.core.records import StoredSecret, Webhook, WebhookSecret
from hookstream.core.settings import Settings
from hookstream.core.signing import new_secret
from hookstream.events.envelope import EventHead, build_body, delivery_id

# The deployment's default, as the router writes it into every body.
API_VERSION: str = Settings.model_fields["api_version"].default
EVENT_TYPE = "invoice.paid"
OCCURRED_AT = "2026-11-27T10:00:00.000Z"


def webhook(index: int, tenant_id: str, url: str, events: tuple[str, ...], run: str) -> Webhook:
    now_ms = int(time.time() * 1000)
    return Webhook(
        id=f"wh_{run}_{index:06d}",
        tenant_id=tenant_id,
        name=f"bench {index}",
        url=url,
        events=events,
        # Stored in plaintext (the legacy form the sender still reads), so the bench receiver
        # verifies with the same value.
        secrets=(WebhookSecret(StoredSecret(new_secret())),),
        created_at_ms=now_ms,
        updated_at_ms=now_ms,
    )


def event_data(index: int, size: int, filler: str, t_us: int | None = None) -> dict[str, Any]:
    """An invoice-like `data` object; `filler` pads the body to the wanted size."""
    data: dict[str, Any] = {
        "invoice_id": f"inv_{index:010d}",
        "number": f"INV-2026-{index:06d}",
        "status": "paid",
        "amount_cents": 1000 + index % 100_000,
        "currency": "EUR",
        "customer": {"id": f"cus_{index % 9973:06d}", "name": "Acme GmbH"},
        "paid_at": OCCURRED_AT,
        "note": filler[: max(0, size)],
    }
    if t_us is not None:
        data["t_us"] = t_us
    return data


@dataclass(frozen=True, slots=True)
class BodyMaker:
    """Request bodies of exactly `size` bytes (when `size` exceeds the envelope itself)."""

    size: int
    filler: str

    @classmethod
    def of_size(cls, size: int) -> BodyMaker:
        return cls(size, os.urandom(max(size, 64)).hex())

    def data(self, index: int, event_id: str, t_us: int | None = None) -> dict[str, Any]:
        bare = build_body(_head(event_id), event_data(index, 0, "", t_us), API_VERSION)
        return event_data(index, self.size - len(bare), self.filler, t_us)

    def body(self, index: int, event_id: str) -> bytes:
        return build_body(_head(event_id), self.data(index, event_id), API_VERSION)


def _head(event_id: str) -> EventHead:
    return EventHead(id=event_id, type=EVENT_TYPE, occurred_at=OCCURRED_AT)


def event_id(run: str, index: int) -> str:
    return f"evt_{run}_{index:09d}"


def delivery_records(
    codec: Codec, webhooks: list[Webhook], count: int, bodies: BodyMaker, run: str
) -> Iterator[tuple[bytes, bytes]]:
    """(key, value) of `count` Delivery records spread round-robin over `webhooks`."""
    now_ms = int(time.time() * 1000)
    for index in range(count):
        hook = webhooks[index % len(webhooks)]
        evt = event_id(run, index)
        record = {
            "delivery_id": delivery_id(evt, hook.id),
            "event_id": evt,
            "event_type": EVENT_TYPE,
            "tenant_id": hook.tenant_id,
            "webhook_id": hook.id,
            "body": bodies.body(index, evt),
            "attempt": 1,
            "trigger": "scheduled",
            "due_at_ms": 0,
            "created_at_ms": now_ms,
            "first_attempt_at_ms": None,
        }
        yield hook.id.encode(), codec.encode("Delivery", record)


def event_value(
    codec: Codec,
    run: str,
    index: int,
    tenant_id: str,
    event_type: str,
    bodies: BodyMaker,
    t_us: int | None = None,
) -> bytes:
    """One Avro `Event`, its data sized so the routed body is about `bodies.size` bytes."""
    evt = event_id(run, index)
    record = {
        "id": evt,
        "type": event_type,
        "tenant_id": tenant_id,
        "occurred_at": OCCURRED_AT,
        "data": orjson.dumps(bodies.data(index, evt, t_us)).decode(),
        "published_at_ms": int(time.time() * 1000),
    }
    return codec.encode("Event", record)
