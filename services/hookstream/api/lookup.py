"""Finding the resource a request names, as the caller is allowed to see it."""

from __future__ import annotations

from aiohttp import web

from hookstream.api.auth import caller
from hookstream.api.bodies import read_query
from hookstream.api.context import API, Api
from hookstream.api.errors import not_found
from hookstream.api.models import TenantQuery
from hookstream.core.webhooks import Webhook


def api_of(request: web.Request) -> Api:
    return request.app[API]


def read_scope(request: web.Request) -> str | None:
    """The tenant this request may read (None: an admin reading every tenant)."""
    return caller(request).read_scope(read_query(request, TenantQuery).tenant_id)


def find_webhook(request: web.Request) -> Webhook:
    """The webhook named by `{id}`; another tenant's webhook is as absent as a missing one."""
    api = api_of(request)
    api.require_ready(api.webhooks, "webhooks")
    scope = read_scope(request)
    webhook_id = request.match_info["id"]
    webhook = api.webhooks.get(webhook_id)
    if webhook is None or (scope is not None and webhook.tenant_id != scope):
        raise not_found("webhook", webhook_id)
    return webhook
