"""`Delivery` records the API puts on the `deliveries` topic: test events and replays.

The actions here serve both the JSON routes and the console.
"""

from __future__ import annotations

import uuid

from hookstream.api.context import Api
from hookstream.api.errors import ApiError, invalid
from hookstream.api.models import Recover, Recovered, Replayed, TestSent
from hookstream.api.times import iso, now_ms, parse_instant
from hookstream.core.records import TEST_EVENT_TYPE, Delivery, Trigger, Webhook
from hookstream.events.envelope import EventHead, build_body, delivery_id
from hookstream.runtime.writer import Record
from hookstream.store import DeliveryDetail, DeliveryRow


def replay_record(row: DeliveryRow, now_ms: int) -> Delivery | None:
    """A manual attempt of a logged delivery: same ids, so the same webhook-id header.

    None when the store no longer holds the body, which is the only thing that can be sent.
    """
    if row.body is None:
        return None
    return Delivery(
        delivery_id=row.delivery_id,
        event_id=row.event_id,
        event_type=row.event_type,
        tenant_id=row.tenant_id,
        webhook_id=row.webhook_id,
        body=row.body,
        attempt=row.attempt_count + 1,
        trigger=Trigger.MANUAL,
        created_at_ms=now_ms,
    )


def to_deliveries(api: Api, delivery: Delivery) -> Record:
    # Keyed by webhook like the router's records, so one webhook's deliveries share a partition.
    return Record(api.topics.deliveries, delivery.webhook_id.encode(), api.codec.write(delivery))


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
    delivery = Delivery(
        delivery_id=delivery_id(event.id, webhook.id),
        event_id=event.id,
        event_type=event.type,
        tenant_id=webhook.tenant_id,
        webhook_id=webhook.id,
        body=build_body(event, {"test": True}, api.settings.api_version),
        attempt=1,
        trigger=Trigger.TEST,
        created_at_ms=now,
    )
    await api.produce([to_deliveries(api, delivery)])
    return TestSent(delivery_id=delivery.delivery_id, event_id=event.id)


async def recover_failed(api: Api, webhook: Webhook, window: Recover) -> Recovered:
    """Replay every failed delivery of `webhook` whose last attempt is in [since, until)."""
    require_enabled(webhook)
    since = parse_instant("since", window.since)
    until = parse_instant("until", window.until)
    if until is not None and until <= since:
        raise invalid("until", "must be later than since")
    failed = await api.blocking(api.store.failed_deliveries, webhook.id, since, until)
    now = now_ms()
    replays = [delivery for row in failed if (delivery := replay_record(row, now)) is not None]
    await api.produce([to_deliveries(api, delivery) for delivery in replays])
    return Recovered(replayed=len(replays), skipped=len(failed) - len(replays))


async def replay(api: Api, detail: DeliveryDetail) -> Replayed:
    """A new manual attempt of a logged delivery, to its webhook as configured now."""
    row = detail.delivery
    api.require_ready(api.webhooks, "webhooks")
    webhook = api.webhooks.get(row.webhook_id)
    if webhook is None:
        raise ApiError(409, "webhook_deleted", f"webhook {row.webhook_id} has been deleted")
    require_enabled(webhook)
    delivery = replay_record(row, now_ms())
    if delivery is None:
        raise ApiError(
            409, "body_unavailable", f"the body of delivery {row.delivery_id} is no longer stored"
        )
    await api.produce([to_deliveries(api, delivery)])
    return Replayed(delivery_id=row.delivery_id, event_id=row.event_id, attempt=delivery.attempt)
