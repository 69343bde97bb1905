"""Webhook CRUD and secret rotation, written to the compacted `webhooks` topic."""

from __future__ import annotations

import secrets
from dataclasses import replace

from aiohttp import web

from hookstream.api.auth import caller
from hookstream.api.bodies import read_body, read_query, respond
from hookstream.api.context import Api
from hookstream.api.docs import operation
from hookstream.api.errors import invalid
from hookstream.api.lookup import api_of, find_webhook
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
from hookstream.api.validation import check_destination, check_subscription
from hookstream.core.metrics import API_WEBHOOK_WRITES
from hookstream.core.signing import new_secret
from hookstream.core.store.cursor import decode_cursor, encode_cursor
from hookstream.core.store.errors import InvalidCursorError
from hookstream.core.webhooks import Webhook, WebhookSecret

routes = web.RouteTableDef()

TAG = "webhooks"
WEBHOOK_ID_PREFIX = "wh_"


async def _save(api: Api, webhook: Webhook, action: str) -> None:
    value = api.codec.encode("Webhook", webhook.to_record())
    await api.write_through(api.webhooks, api.topics.webhooks, "webhook", webhook.id, value)
    API_WEBHOOK_WRITES.labels(action).inc()


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
)
async def create_webhook(request: web.Request) -> web.StreamResponse:
    api = api_of(request)
    body = await read_body(request, WebhookCreate)
    tenant_id = caller(request).write_tenant(body.tenant_id)
    check_subscription(api, body.events)
    await check_destination(api, body.url)
    now = now_ms()
    webhook_id = WEBHOOK_ID_PREFIX + secrets.token_hex(12)
    secret = new_secret()
    webhook = Webhook(
        id=webhook_id,
        tenant_id=tenant_id,
        name=body.name,
        url=body.url,
        events=tuple(body.events),
        secrets=(api.keyring.seal(webhook_id, secret),),
        enabled=body.enabled,
        description=body.description,
        owner_id=body.owner_id,
        created_at_ms=now,
        updated_at_ms=now,
    )
    await _save(api, webhook, "create")
    return respond(_with_secret(api, webhook, secret, now), 201)


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
    api.require_ready(api.webhooks, "webhooks")
    after: tuple[int, str] | None = None
    if query.cursor is not None:
        try:
            after = decode_cursor(query.cursor)
        except InvalidCursorError as exc:
            raise invalid("cursor", str(exc)) from None
    ordered = sorted(
        (w for w in api.webhooks.values() if scope is None or w.tenant_id == scope),
        key=lambda w: (w.created_at_ms, w.id),
        reverse=True,
    )
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
)
async def get_webhook(request: web.Request) -> web.StreamResponse:
    return respond(webhook_out(find_webhook(request), now_ms(), api_of(request).keyring))


@routes.patch("/v1/webhooks/{id}")
@operation(
    "Change a webhook's name, url, description, events or enabled flag",
    TAG,
    response=WebhookOut,
    body=WebhookUpdate,
    query=TenantQuery,
    errors=(400, 404, 413, 422, 503),
    description="Setting `enabled` to true clears the disabled reason.",
)
async def update_webhook(request: web.Request) -> web.StreamResponse:
    api = api_of(request)
    body = await read_body(request, WebhookUpdate)
    changes = body.model_dump(exclude_unset=True)
    async with api.lock("webhook", request.match_info["id"]):
        webhook = find_webhook(request)
        if not changes:
            return respond(webhook_out(webhook, now_ms(), api.keyring))
        if body.events is not None:
            check_subscription(api, body.events)
            changes["events"] = tuple(body.events)
        if body.url is not None and body.url != webhook.url:
            await check_destination(api, body.url)
        if body.enabled:
            changes["disabled_reason"] = None
        now = now_ms()
        updated = replace(webhook, **changes, updated_at_ms=now)
        await _save(api, updated, "update")
    return respond(webhook_out(updated, now, api.keyring))


@routes.delete("/v1/webhooks/{id}")
@operation(
    "Delete a webhook; its delivery history stays",
    TAG,
    status=204,
    query=TenantQuery,
    errors=(404, 422, 503),
)
async def delete_webhook(request: web.Request) -> web.StreamResponse:
    api = api_of(request)
    async with api.lock("webhook", request.match_info["id"]):
        webhook = find_webhook(request)
        await api.write_through(api.webhooks, api.topics.webhooks, "webhook", webhook.id, None)
    API_WEBHOOK_WRITES.labels("delete").inc()
    return web.Response(status=204)


@routes.post("/v1/webhooks/{id}/rotate-secret")
@operation(
    "Replace the signing secret; the response shows the new one in full",
    TAG,
    response=WebhookWithSecret,
    body=RotateSecret,
    query=TenantQuery,
    errors=(400, 404, 413, 422, 503),
    description=(
        "With grace_period_seconds 0 (the default) the old secret stops signing at once; "
        "otherwise requests carry a signature for each secret until the grace period ends."
    ),
)
async def rotate_secret(request: web.Request) -> web.StreamResponse:
    api = api_of(request)
    body = await read_body(request, RotateSecret)
    async with api.lock("webhook", request.match_info["id"]):
        webhook = find_webhook(request)
        now = now_ms()
        kept: tuple[WebhookSecret, ...] = ()
        if body.grace_period_seconds:
            until = now + body.grace_period_seconds * 1000
            # A secret already due to expire sooner keeps its earlier end; values stay as
            # stored (encrypted), whatever key they are under.
            kept = tuple(
                WebhookSecret(s.value, min(s.not_after_ms or until, until))
                for s in webhook.secrets
                if s.valid_at(now)
            )
        secret = new_secret()
        current = api.keyring.seal(webhook.id, secret)
        rotated = replace(webhook, secrets=(current, *kept), updated_at_ms=now)
        await _save(api, rotated, "rotate_secret")
    return respond(_with_secret(api, rotated, secret, now))
