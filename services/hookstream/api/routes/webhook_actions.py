"""Per-webhook actions: send a test event, read endpoint health, recover failed deliveries."""

from __future__ import annotations

from aiohttp import web

from hookstream.api.bodies import read_body, respond
from hookstream.api.docs import operation
from hookstream.api.lookup import api_of, find_webhook
from hookstream.api.models import HealthOut, Recover, Recovered, TenantQuery, TestSent
from hookstream.api.present import health_out
from hookstream.api.resend import recover_failed
from hookstream.api.resend import send_test as send_test_event
from hookstream.api.times import now_ms

routes = web.RouteTableDef()

TAG = "webhooks"


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
    sent = await send_test_event(api_of(request), find_webhook(request))
    return respond(sent, 202)


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
    return respond(await recover_failed(api, find_webhook(request), body), 202)
