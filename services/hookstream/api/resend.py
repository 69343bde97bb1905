"""`Delivery` records the API puts on the `deliveries` topic: test events and replays.

The actions here serve both the JSON routes and the console.
"""

from __future__ import annotations

import uuid
from typing import Any

from hookstream.api.context import Api
from hookstream.api.errors import ApiError, invalid
from hookstream.api.models import Recover, Recovered, Replayed, TestSent
from hookstream.api.times import iso, now_ms, parse_instant
from hookstream.core.envelope import EventHead, build_body, delivery_id
from hookstream.core.records import Webhook
from hookstream.core.writer import Record
from hookstream.store import DeliveryDetail, DeliveryRow

TEST_EVENT_TYPE = "webhook.test"


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


def require_enabled(webhook: Webhook) -> None:
    """409 for a disabled webhook: the sender would not deliver what we queued."""
    if not webhook.enabled:
        reason = webhook.disabled_reason or "disabled by its owner"
        raise ApiError(
            409,
            "webhook_disabled",
            f"webhook {webhook.id} is disabled ({reason}); enable it first",
        )


async def send_test(api: Api, webhook: Webhook) -> TestSent:
    """A `webhook.test` event to this webhook only."""
    require_enabled(webhook)
    now = now_ms()
    event = EventHead(
        id=f"evt_{uuid.uuid4().hex}", type=TEST_EVENT_TYPE, occurred_at=iso(now) or ""
    )
    record = delivery_record(
        delivery_id=delivery_id(event.id, webhook.id),
        event_id=event.id,
        event_type=event.type,
        tenant_id=webhook.tenant_id,
        webhook_id=webhook.id,
        body=build_body(event, {"test": True}, api.settings.api_version),
        attempt=1,
        trigger="test",
        now_ms=now,
    )
    await api.produce([to_deliveries(api, record)])
    return TestSent(delivery_id=record["delivery_id"], event_id=event.id)


async def recover_failed(api: Api, webhook: Webhook, window: Recover) -> Recovered:
    """Replay every failed delivery of `webhook` whose last attempt is in [since, until)."""
    require_enabled(webhook)
    since = parse_instant("since", window.since)
    until = parse_instant("until", window.until)
    if until is not None and until <= since:
        raise invalid("until", "must be later than since")
    failed = await api.blocking(api.store.failed_deliveries, webhook.id, since, until)
    now = now_ms()
    records = [record for row in failed if (record := replay_record(row, now)) is not None]
    await api.produce([to_deliveries(api, record) for record in records])
    return Recovered(replayed=len(records), skipped=len(failed) - len(records))


async def replay(api: Api, detail: DeliveryDetail) -> Replayed:
    """A new manual attempt of a logged delivery, to its webhook as configured now."""
    row = detail.delivery
    api.require_ready(api.webhooks, "webhooks")
    webhook = api.webhooks.get(row.webhook_id)
    if webhook is None:
        raise ApiError(409, "webhook_deleted", f"webhook {row.webhook_id} has been deleted")
    require_enabled(webhook)
    record = replay_record(row, now_ms())
    if record is None:
        raise ApiError(
            409, "body_unavailable", f"the body of delivery {row.delivery_id} is no longer stored"
        )
    await api.produce([to_deliveries(api, record)])
    return Replayed(delivery_id=row.delivery_id, event_id=row.event_id, attempt=record["attempt"])
