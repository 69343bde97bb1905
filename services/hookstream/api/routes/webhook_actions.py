"""Per-webhook actions: send a test event, read endpoint health, recover failed deliveries."""

from __future__ import annotations

import uuid

from aiohttp import web

from hookstream.api.bodies import read_body, respond
from hookstream.api.docs import operation
from hookstream.api.errors import ApiError, invalid
from hookstream.api.lookup import api_of, find_webhook
from hookstream.api.models import HealthOut, Recover, Recovered, TenantQuery, TestSent
from hookstream.api.present import health_out
from hookstream.api.resend import delivery_record, replay_record, to_deliveries
from hookstream.api.times import iso, now_ms, parse_instant
from hookstream.core.envelope import EventHead, build_body, delivery_id
from hookstream.core.webhooks import Webhook

routes = web.RouteTableDef()

TAG = "webhooks"
TEST_EVENT_TYPE = "webhook.test"


def _require_enabled(webhook: Webhook) -> None:
    if not webhook.enabled:
        reason = webhook.disabled_reason or "disabled by its owner"
        raise ApiError(
            409,
            "webhook_disabled",
            f"webhook {webhook.id} is disabled ({reason}); enable it first",
        )


@routes.post("/v1/webhooks/{id}/test")
@operation(
    "Send a webhook.test event to this webhook only",
    TAG,
    status=202,
    response=TestSent,
    query=TenantQuery,
    errors=(404, 409, 422, 503),
)
async def send_test(request: web.Request) -> web.StreamResponse:
    api = api_of(request)
    webhook = find_webhook(request)
    _require_enabled(webhook)
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
    return respond(TestSent(delivery_id=record["delivery_id"], event_id=event.id), 202)


@routes.get("/v1/webhooks/{id}/health")
@operation(
    "Endpoint health: last status, 24 h success rate, failing since, disabled reason",
    TAG,
    response=HealthOut,
    query=TenantQuery,
    errors=(404, 422, 503),
)
async def webhook_health(request: web.Request) -> web.StreamResponse:
    api = api_of(request)
    webhook = find_webhook(request)
    health = await api.blocking(api.store.webhook_health, webhook.id, now_ms())
    return respond(health_out(webhook, health))


@routes.post("/v1/webhooks/{id}/recover")
@operation(
    "Replay every failed delivery of this webhook whose last attempt is in [since, until)",
    TAG,
    status=202,
    response=Recovered,
    body=Recover,
    query=TenantQuery,
    errors=(400, 404, 409, 413, 422, 503),
)
async def recover(request: web.Request) -> web.StreamResponse:
    api = api_of(request)
    body = await read_body(request, Recover)
    webhook = find_webhook(request)
    _require_enabled(webhook)
    since = parse_instant("since", body.since)
    until = parse_instant("until", body.until)
    if until is not None and until <= since:
        raise invalid("until", "must be later than since")
    failed = await api.blocking(api.store.failed_deliveries, webhook.id, since, until)
    now = now_ms()
    records = [record for row in failed if (record := replay_record(row, now)) is not None]
    await api.produce([to_deliveries(api, record) for record in records])
    return respond(Recovered(replayed=len(records), skipped=len(failed) - len(records)), 202)
