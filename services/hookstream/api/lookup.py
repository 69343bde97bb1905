"""Finding the resource a request names, as the caller is allowed to see it."""

from __future__ import annotations

from aiohttp import web

from hookstream.api.auth import caller
from hookstream.api.bodies import is_ident, read_query
from hookstream.api.context import API, Api
from hookstream.api.errors import invalid, not_found
from hookstream.api.models import DeliveryListQuery, TenantQuery
from hookstream.api.times import parse_instant
from hookstream.core.records import Webhook
from hookstream.store import DeliveryDetail, InvalidCursorError, Page


def api_of(request: web.Request) -> Api:
    # config_dict also finds it from the console, a sub-application of the API's app.
    return request.config_dict[API]


def read_scope(request: web.Request) -> str | None:
    """The tenant this request may read (None: an admin reading every tenant)."""
    return caller(request).read_scope(read_query(request, TenantQuery).tenant_id)


def find_webhook(request: web.Request) -> Webhook:
    """The webhook named by `{id}`; another tenant's webhook is as absent as a missing one."""
    return webhook_in_scope(api_of(request), read_scope(request), request.match_info["id"])


def webhook_in_scope(api: Api, scope: str | None, webhook_id: str) -> Webhook:
    """The webhook if `scope` (None: every tenant) may see it, else 404."""
    api.require_ready(api.webhooks, "webhooks")
    webhook = api.webhooks.get(webhook_id)
    if webhook is None or (scope is not None and webhook.tenant_id != scope):
        raise not_found("webhook", webhook_id)
    return webhook


def webhooks_in_scope(api: Api, scope: str | None) -> list[Webhook]:
    """Every webhook `scope` may see, newest first."""
    api.require_ready(api.webhooks, "webhooks")
    return sorted(
        (w for w in api.webhooks.values() if scope is None or w.tenant_id == scope),
        key=lambda w: (w.created_at_ms, w.id),
        reverse=True,
    )


async def delivery_in_scope(api: Api, scope: str | None, delivery_id: str) -> DeliveryDetail:
    """The delivery with its attempts if `scope` may see it, else 404."""
    # An id no delivery can have (one the store could not even hold, like a NUL) is absent.
    if not is_ident(delivery_id):
        raise not_found("delivery", delivery_id)
    detail = await api.blocking(api.store.get_delivery, delivery_id, scope)
    if detail is None:
        raise not_found("delivery", delivery_id)
    return detail


async def delivery_page(api: Api, scope: str | None, query: DeliveryListQuery) -> Page:
    """One page of the delivery log, newest first, as `query` filters it within `scope`."""
    try:
        return await api.blocking(
            api.store.list_deliveries,
            tenant_id=scope,
            webhook_id=query.webhook_id,
            event_type=query.event_type,
            status=query.status,
            since_ms=parse_instant("since", query.since),
            until_ms=parse_instant("until", query.until),
            limit=query.limit,
            cursor=query.cursor,
        )
    except InvalidCursorError as exc:
        raise invalid("cursor", str(exc)) from None
