"""`Delivery` records the API puts on the `deliveries` topic: test events and replays."""

from __future__ import annotations

from typing import Any

from hookstream.api.context import Api
from hookstream.core.store import DeliveryRow
from hookstream.core.writer import Record


def delivery_record(
    *,
    delivery_id: str,
    event_id: str,
    event_type: str,
    tenant_id: str,
    webhook_id: str,
    body: bytes,
    attempt: int,
    trigger: str,
    now_ms: int,
) -> dict[str, Any]:
    return {
        "delivery_id": delivery_id,
        "event_id": event_id,
        "event_type": event_type,
        "tenant_id": tenant_id,
        "webhook_id": webhook_id,
        "body": body,
        "attempt": attempt,
        "trigger": trigger,
        "due_at_ms": 0,
        "created_at_ms": now_ms,
        "first_attempt_at_ms": None,
    }


def replay_record(row: DeliveryRow, now_ms: int) -> dict[str, Any] | None:
    """A manual attempt of a logged delivery: same ids, so the same webhook-id header.

    None when the store no longer holds the body, which is the only thing that can be sent.
    """
    if row.body is None:
        return None
    return delivery_record(
        delivery_id=row.delivery_id,
        event_id=row.event_id,
        event_type=row.event_type,
        tenant_id=row.tenant_id,
        webhook_id=row.webhook_id,
        body=row.body,
        attempt=row.attempt_count + 1,
        trigger="manual",
        now_ms=now_ms,
    )


def to_deliveries(api: Api, record: dict[str, Any]) -> Record:
    # Keyed by webhook like the router's records, so one webhook's deliveries share a partition.
    return Record(
        api.topics.deliveries,
        str(record["webhook_id"]).encode(),
        api.codec.encode("Delivery", record),
    )
