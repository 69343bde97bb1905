"""The delivery log from the store, and manual replay of one delivery."""

from __future__ import annotations

from aiohttp import web

from hookstream.api.auth import caller
from hookstream.api.bodies import read_query, respond
from hookstream.api.docs import operation
from hookstream.api.lookup import api_of, delivery_in_scope, delivery_page, read_scope
from hookstream.api.models import (
    DeliveryDetailOut,
    DeliveryListQuery,
    DeliveryPage,
    Replayed,
    TenantQuery,
)
from hookstream.api.present import delivery_detail_out, delivery_out
from hookstream.api.resend import replay

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
    query = read_query(request, DeliveryListQuery)
    page = await delivery_page(api_of(request), caller(request).read_scope(query.tenant_id), query)
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
    detail = await delivery_in_scope(api_of(request), read_scope(request), request.match_info["id"])
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
    detail = await delivery_in_scope(api, read_scope(request), request.match_info["id"])
    return respond(await replay(api, detail), 202)
