"""Delivery pages: the filtered log, one delivery with every attempt, and replay."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from hookstream.api.bodies import validated
from hookstream.api.console.pages import ROOT, act, render, scope_of
from hookstream.api.errors import ApiError
from hookstream.api.lookup import api_of, delivery_in_scope, delivery_page, webhooks_in_scope
from hookstream.api.models import DeliveryListQuery
from hookstream.api.present import delivery_detail_out, delivery_out
from hookstream.api.resend import replay
from hookstream.store import DELIVERY_STATUSES, Page

routes = web.RouteTableDef()

PAGE_SIZE = 50
FILTERS = ("webhook_id", "status", "event_type", "since", "until")


@routes.get("/deliveries")
async def delivery_list(request: web.Request) -> web.StreamResponse:
    api = api_of(request)
    scope = scope_of(request)
    # Empty form fields mean "any"; the cursor comes from the Older link.
    chosen = {name: request.query.get(name, "").strip() for name in (*FILTERS, "cursor")}
    error: ApiError | None = None
    page = Page(items=[], next_cursor=None)
    try:
        query = validated(
            DeliveryListQuery,
            {"limit": PAGE_SIZE, **{name: value for name, value in chosen.items() if value}},
        )
        page = await delivery_page(api, scope, query)
    except ApiError as exc:
        if exc.status != 422:
            raise
        error = exc
    older = None
    if page.next_cursor is not None:
        older = {**{k: v for k, v in chosen.items() if v}, "cursor": page.next_cursor}
    context: dict[str, Any] = {
        "chosen": chosen,
        "deliveries": [delivery_out(row) for row in page.items],
        "older": older,
        "error": error,
        "webhooks": webhooks_in_scope(api, scope),
        "statuses": sorted(DELIVERY_STATUSES),
        "event_types": [event_type.type for event_type in api.catalog.types],
    }
    return render(request, "deliveries.html", context, status=422 if error else 200)


@routes.get("/deliveries/{id}")
async def delivery(request: web.Request) -> web.StreamResponse:
    detail = await delivery_in_scope(api_of(request), scope_of(request), request.match_info["id"])
    shown = delivery_detail_out(detail)
    payload = shown.payload
    text = (
        payload
        if isinstance(payload, str)
        else orjson.dumps(payload, option=orjson.OPT_INDENT_2).decode()
    )
    return render(request, "delivery.html", {"delivery": shown, "payload": text})


@routes.post("/deliveries/{id}/replay")
async def replay_delivery(request: web.Request) -> web.StreamResponse:
    api = api_of(request)
    detail = await delivery_in_scope(api, scope_of(request), request.match_info["id"])

    async def apply() -> str:
        done = await replay(api, detail)
        return f"Replay queued as attempt {done.attempt}."

    return await act(request, f"{ROOT}/deliveries/{detail.delivery.delivery_id}", apply)
