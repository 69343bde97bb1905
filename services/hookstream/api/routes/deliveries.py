"""The delivery log from the store, and manual replay of one delivery."""

from __future__ import annotations

from aiohttp import web

from hookstream.api.auth import caller
from hookstream.api.bodies import read_query, respond
from hookstream.api.docs import operation
from hookstream.api.errors import ApiError, invalid, not_found
from hookstream.api.lookup import api_of, read_scope
from hookstream.api.models import (
    DeliveryDetailOut,
    DeliveryListQuery,
    DeliveryPage,
    Replayed,
    TenantQuery,
)
from hookstream.api.present import delivery_detail_out, delivery_out
from hookstream.api.resend import replay_record, to_deliveries
from hookstream.api.times import now_ms, parse_instant
from hookstream.core.store import InvalidCursorError

routes = web.RouteTableDef()

TAG = "deliveries"


@routes.get("/v1/deliveries")
@operation(
    "List deliveries, newest first, by webhook, event type, status and time range",
    TAG,
    response=DeliveryPage,
    query=DeliveryListQuery,
    errors=(422, 503),
    description="`since` and `until` bound the delivery's first attempt: [since, until).",
)
async def list_deliveries(request: web.Request) -> web.StreamResponse:
    api = api_of(request)
    query = read_query(request, DeliveryListQuery)
    scope = caller(request).read_scope(query.tenant_id)
    since = parse_instant("since", query.since)
    until = parse_instant("until", query.until)
    try:
        page = await api.blocking(
            api.store.list_deliveries,
            tenant_id=scope,
            webhook_id=query.webhook_id,
            event_type=query.event_type,
            status=query.status,
            since_ms=since,
            until_ms=until,
            limit=query.limit,
            cursor=query.cursor,
        )
    except InvalidCursorError as exc:
        raise invalid("cursor", str(exc)) from None
    return respond(
        DeliveryPage(data=[delivery_out(row) for row in page.items], next_cursor=page.next_cursor)
    )


@routes.get("/v1/deliveries/{id}")
@operation(
    "Get a delivery with its payload and every attempt",
    TAG,
    response=DeliveryDetailOut,
    query=TenantQuery,
    errors=(404, 422, 503),
)
async def get_delivery(request: web.Request) -> web.StreamResponse:
    api = api_of(request)
    delivery_id = request.match_info["id"]
    detail = await api.blocking(api.store.get_delivery, delivery_id, read_scope(request))
    if detail is None:
        raise not_found("delivery", delivery_id)
    return respond(delivery_detail_out(detail))


@routes.post("/v1/deliveries/{id}/replay")
@operation(
    "Send a delivery again now: a new manual attempt with the same webhook-id",
    TAG,
    status=202,
    response=Replayed,
    query=TenantQuery,
    errors=(404, 409, 422, 503),
)
async def replay_delivery(request: web.Request) -> web.StreamResponse:
    api = api_of(request)
    delivery_id = request.match_info["id"]
    detail = await api.blocking(api.store.get_delivery, delivery_id, read_scope(request))
    if detail is None:
        raise not_found("delivery", delivery_id)
    row = detail.delivery
    api.require_ready(api.webhooks, "webhooks")
    webhook = api.webhooks.get(row.webhook_id)
    if webhook is None:
        raise ApiError(409, "webhook_deleted", f"webhook {row.webhook_id} has been deleted")
    if not webhook.enabled:
        raise ApiError(
            409, "webhook_disabled", f"webhook {webhook.id} is disabled; enable it first"
        )
    record = replay_record(row, now_ms())
    if record is None:
        raise ApiError(
            409, "body_unavailable", f"the body of delivery {delivery_id} is no longer stored"
        )
    await api.produce([to_deliveries(api, record)])
    return respond(
        Replayed(delivery_id=row.delivery_id, event_id=row.event_id, attempt=record["attempt"]),
        202,
    )
