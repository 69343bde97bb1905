"""Webhook CRUD and secret rotation, written to the compacted `webhooks` topic."""

from __future__ import annotations

from aiohttp import web

from hookstream.api.auth import caller
from hookstream.api.bodies import read_body, read_query, respond
from hookstream.api.context import Api
from hookstream.api.docs import operation
from hookstream.api.errors import invalid
from hookstream.api.lookup import api_of, find_webhook, read_scope, webhooks_in_scope
from hookstream.api.manage import IfMatch, etag
from hookstream.api.manage import create_webhook as create
from hookstream.api.manage import delete_webhook as delete
from hookstream.api.manage import rotate_secret as rotate
from hookstream.api.manage import update_webhook as update
from hookstream.api.models import (
    RotateSecret,
    TenantQuery,
    WebhookCreate,
    WebhookListQuery,
    WebhookOut,
    WebhookPage,
    WebhookUpdate,
    WebhookWithSecret,
)
from hookstream.api.present import webhook_out
from hookstream.api.times import now_ms
from hookstream.core.records import Webhook
from hookstream.store.cursor import decode_cursor, encode_cursor
from hookstream.store.errors import InvalidCursorError

routes = web.RouteTableDef()

TAG = "webhooks"


def _if_match(request: web.Request) -> IfMatch:
    """The strong entity tags of If-Match (RFC 9110 compares them strongly), or None."""
    tags = request.if_match
    if tags is None:
        return None
    return tuple("*" if t.value == "*" else f'"{t.value}"' for t in tags if not t.is_weak)


def _tagged(response: web.Response, webhook: Webhook) -> web.Response:
    response.headers["ETag"] = etag(webhook)
    return response


def _with_secret(api: Api, webhook: Webhook, secret: str, now: int) -> WebhookWithSecret:
    """The one response that shows `secret`, the plaintext of the (encrypted) current one."""
    return WebhookWithSecret(**webhook_out(webhook, now, api.keyring).model_dump(), secret=secret)


@routes.post("/v1/webhooks")
@operation(
    "Create a webhook; the response is the only one that shows its full secret",
    TAG,
    status=201,
    response=WebhookWithSecret,
    body=WebhookCreate,
    errors=(400, 413, 422, 503),
    etag=True,
    description=(
        "A repeat with the same `Idempotency-Key` within its window gets this same answer, "
        "the full secret included, and creates nothing: the key is for a client whose first "
        "answer was lost. Only the API key that sent the first request gets it."
    ),
)
async def create_webhook(request: web.Request) -> web.StreamResponse:
    api = api_of(request)
    body = await read_body(request, WebhookCreate)
    webhook, secret = await create(api, caller(request).write_tenant(body.tenant_id), body)
    return _tagged(respond(_with_secret(api, webhook, secret, now_ms()), 201), webhook)


@routes.get("/v1/webhooks")
@operation(
    "List webhooks, newest first",
    TAG,
    response=WebhookPage,
    query=WebhookListQuery,
    errors=(422, 503),
)
async def list_webhooks(request: web.Request) -> web.StreamResponse:
    api = api_of(request)
    query = read_query(request, WebhookListQuery)
    scope = caller(request).read_scope(query.tenant_id)
    after: tuple[int, str] | None = None
    if query.cursor is not None:
        try:
            after = decode_cursor(query.cursor)
        except InvalidCursorError as exc:
            raise invalid("cursor", str(exc)) from None
    ordered = webhooks_in_scope(api, scope)
    if after is not None:
        ordered = [w for w in ordered if (w.created_at_ms, w.id) < after]
    page = ordered[: query.limit]
    more = len(ordered) > query.limit
    now = now_ms()
    return respond(
        WebhookPage(
            data=[webhook_out(w, now, api.keyring) for w in page],
            next_cursor=encode_cursor(page[-1].created_at_ms, page[-1].id) if more else None,
        )
    )


@routes.get("/v1/webhooks/{id}")
@operation(
    "Get a webhook; its secret appears only as a hint",
    TAG,
    response=WebhookOut,
    query=TenantQuery,
    errors=(404, 422, 503),
    etag=True,
)
async def get_webhook(request: web.Request) -> web.StreamResponse:
    webhook = find_webhook(request)
    return _tagged(respond(webhook_out(webhook, now_ms(), api_of(request).keyring)), webhook)


@routes.patch("/v1/webhooks/{id}")
@operation(
    "Change a webhook's name, url, description, events or enabled flag",
    TAG,
    response=WebhookOut,
    body=WebhookUpdate,
    query=TenantQuery,
    errors=(400, 404, 409, 412, 413, 422, 503),
    etag=True,
    description="Setting `enabled` to true clears the disabled reason.",
)
async def update_webhook(request: web.Request) -> web.StreamResponse:
    api = api_of(request)
    body = await read_body(request, WebhookUpdate)
    webhook_id = request.match_info["id"]
    updated = await update(api, read_scope(request), webhook_id, body, _if_match(request))
    return _tagged(respond(webhook_out(updated, now_ms(), api.keyring)), updated)


@routes.delete("/v1/webhooks/{id}")
@operation(
    "Delete a webhook; its delivery history stays",
    TAG,
    status=204,
    query=TenantQuery,
    errors=(404, 409, 412, 422, 503),
)
async def delete_webhook(request: web.Request) -> web.StreamResponse:
    webhook_id = request.match_info["id"]
    await delete(api_of(request), read_scope(request), webhook_id, _if_match(request))
    return web.Response(status=204)


@routes.post("/v1/webhooks/{id}/rotate-secret")
@operation(
    "Replace the signing secret; the response shows the new one in full",
    TAG,
    response=WebhookWithSecret,
    body=RotateSecret,
    query=TenantQuery,
    errors=(400, 404, 409, 412, 413, 422, 503),
    etag=True,
    description=(
        "With grace_period_seconds 0 (the default) the old secret stops signing at once; "
        "otherwise requests carry a signature for each secret until the grace period ends."
    ),
)
async def rotate_secret(request: web.Request) -> web.StreamResponse:
    api = api_of(request)
    body = await read_body(request, RotateSecret)
    scope, webhook_id = read_scope(request), request.match_info["id"]
    grace = body.grace_period_seconds
    rotated, secret = await rotate(api, scope, webhook_id, grace, _if_match(request))
    return _tagged(respond(_with_secret(api, rotated, secret, now_ms())), rotated)
