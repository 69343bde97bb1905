"""Webhook writes, shared by the JSON routes and the console.

Each write goes to the compacted `webhooks` topic and returns once this instance's view has
applied it, so the caller can read its own write.
"""

from __future__ import annotations

import secrets
from dataclasses import replace

from hookstream.api.context import Api
from hookstream.api.lookup import webhook_in_scope
from hookstream.api.metrics import API_WEBHOOK_WRITES
from hookstream.api.models import WebhookCreate, WebhookUpdate
from hookstream.api.times import now_ms
from hookstream.api.validation import check_destination, check_subscription
from hookstream.core.records import Webhook, WebhookSecret
from hookstream.core.signing import new_secret

WEBHOOK_ID_PREFIX = "wh_"


async def _save(api: Api, webhook: Webhook, action: str) -> None:
    value = api.codec.write(webhook)
    await api.write_through(api.webhooks, api.topics.webhooks, "webhook", webhook.id, value)
    API_WEBHOOK_WRITES.labels(action).inc()


async def create_webhook(api: Api, tenant_id: str, body: WebhookCreate) -> tuple[Webhook, str]:
    """The new webhook and the plaintext of its secret, which only the caller ever sees."""
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
    return webhook, secret


async def update_webhook(
    api: Api, scope: str | None, webhook_id: str, body: WebhookUpdate
) -> Webhook:
    """The webhook with the fields `body` sets changed; enabling clears the disabled reason."""
    changes = body.model_dump(exclude_unset=True)
    async with api.lock("webhook", webhook_id):
        webhook = webhook_in_scope(api, scope, webhook_id)
        if not changes:
            return webhook
        if body.events is not None:
            check_subscription(api, body.events)
            changes["events"] = tuple(body.events)
        if body.url is not None and body.url != webhook.url:
            await check_destination(api, body.url)
        if body.enabled:
            changes["disabled_reason"] = None
        updated = replace(webhook, **changes, updated_at_ms=now_ms())
        await _save(api, updated, "update")
    return updated


async def delete_webhook(api: Api, scope: str | None, webhook_id: str) -> None:
    async with api.lock("webhook", webhook_id):
        webhook = webhook_in_scope(api, scope, webhook_id)
        await api.write_through(api.webhooks, api.topics.webhooks, "webhook", webhook.id, None)
    API_WEBHOOK_WRITES.labels("delete").inc()


async def rotate_secret(
    api: Api, scope: str | None, webhook_id: str, grace_period_seconds: int
) -> tuple[Webhook, str]:
    """A new current secret (its plaintext returned); with a grace period the old ones keep
    signing until it ends."""
    async with api.lock("webhook", webhook_id):
        webhook = webhook_in_scope(api, scope, webhook_id)
        now = now_ms()
        kept: tuple[WebhookSecret, ...] = ()
        if grace_period_seconds:
            until = now + grace_period_seconds * 1000
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
    return rotated, secret
