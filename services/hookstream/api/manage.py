"""Webhook writes, shared by the JSON routes and the console.

Each write goes to the compacted `webhooks` topic and returns once this instance's view has
applied it, so the caller can read its own write. Writes are optimistic (core.versions): a
change is made on the version this instance holds and carries that version + 1; when another
writer's record came first (another API replica, the sender's 410-disable, the log-sink's
auto-disable), the views refuse ours and the change is made again on the fresh state, or
answered 412 when the client's `If-Match` named the version it no longer is.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, Iterable, Mapping

from hookstream.api.context import Api
from hookstream.api.errors import conflict, invalid, precondition_failed
from hookstream.api.lookup import webhook_in_scope
from hookstream.api.metrics import API_WEBHOOK_WRITES
from hookstream.api.models import WebhookCreate, WebhookUpdate
from hookstream.api.times import now_ms
from hookstream.api.validation import check_destination, check_subscription
from hookstream.core.records import Webhook, WebhookHeader, WebhookSecret
from hookstream.core.signing import new_secret
from hookstream.core.versions import tombstone_headers
from hookstream.endpoints.headers import MAX_HEADERS

WEBHOOK_ID_PREFIX = "wh_"
# Without If-Match a lost race is made again on the fresh state; a webhook that changes this
# often under one request is answered 409 rather than retried for ever.
CONFLICT_TRIES = 5

# If-Match as the routes read it: the strong entity tags it lists ("*" for any), or None.
IfMatch = tuple[str, ...] | None
# Makes the change on the webhook as this instance holds it: the record to write (its version
# + 1), the same webhook when there is nothing to change, or None to delete it.
Change = Callable[[Webhook], Awaitable[Webhook | None]]


def etag(webhook: Webhook) -> str:
    """The strong entity tag of a webhook's version, as `ETag` carries it."""
    return f'"v{webhook.version}"'


def _matches(if_match: IfMatch, webhook: Webhook) -> bool:
    if if_match is None:
        return True
    current = etag(webhook)
    return any(tag in ("*", current) for tag in if_match)


async def _write(api: Api, webhook_id: str, record: Webhook | None, held: Webhook) -> bool:
    """Write `record` (None: a tombstone of `held`); whether the views applied it."""
    if record is None:
        value, headers = None, tombstone_headers(held.version)
    else:
        value, headers = api.codec.write(record), None
    topic = api.topics.webhooks
    return await api.write_through(api.webhooks, topic, "webhook", webhook_id, value, headers)


async def _change(
    api: Api, scope: str | None, webhook_id: str, if_match: IfMatch, action: str, change: Change
) -> Webhook | None:
    """Make `change` on the current version until it wins; the webhook as written."""
    async with api.lock("webhook", webhook_id):
        for _ in range(CONFLICT_TRIES):
            webhook = webhook_in_scope(api, scope, webhook_id)
            if not _matches(if_match, webhook):
                raise precondition_failed("webhook", webhook_id, etag(webhook))
            record = await change(webhook)
            if record is webhook:
                return webhook
            if await _write(api, webhook_id, record, webhook):
                API_WEBHOOK_WRITES.labels(action).inc()
                return record
            # Another writer's record came first and our view has applied it: the next turn
            # reads it (and answers 412 if the client named the version it replaced).
            API_WEBHOOK_WRITES.labels("conflict").inc()
    raise conflict(
        f"webhook {webhook_id!r} kept changing while this request tried to change it; "
        "read it again and retry",
        {"id": webhook_id},
    )


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
        version=1,
        max_concurrency=body.max_concurrency,
        rate_limit=body.rate_limit,
        timeout_seconds=body.timeout_seconds,
        headers=tuple(
            api.keyring.seal_header(webhook_id, name, value) for name, value in body.headers.items()
        ),
    )
    value = api.codec.write(webhook)
    # A new random id: no other writer can hold it, so the views apply it.
    await api.write_through(api.webhooks, api.topics.webhooks, "webhook", webhook_id, value)
    API_WEBHOOK_WRITES.labels("create").inc()
    return webhook, secret


async def update_webhook(
    api: Api, scope: str | None, webhook_id: str, body: WebhookUpdate, if_match: IfMatch = None
) -> Webhook:
    """The webhook with the fields `body` sets changed; enabling clears the disabled reason."""
    changes = body.model_dump(exclude_unset=True)
    if body.events is not None:
        check_subscription(api, body.events)
        changes["events"] = tuple(body.events)
    if body.enabled:
        changes["disabled_reason"] = None
    header_changes = changes.pop("headers", None)
    checked_url: str | None = None

    async def change(webhook: Webhook) -> Webhook:
        nonlocal checked_url
        if not changes and header_changes is None:
            return webhook
        if body.url is not None and body.url not in (webhook.url, checked_url):
            await check_destination(api, body.url)
            checked_url = body.url
        if header_changes is None:
            return webhook.next_version(now_ms(), **changes)
        headers = merged_headers(api, webhook, header_changes)
        return webhook.next_version(now_ms(), **changes, headers=headers)

    updated = await _change(api, scope, webhook_id, if_match, "update", change)
    assert updated is not None
    return updated


def merged_headers(
    api: Api, webhook: Webhook, header_changes: Mapping[str, str | None]
) -> tuple[WebhookHeader, ...]:
    """The webhook's headers with a PATCH's merged in: a name (in any case) set to a value
    replaces the header of that name, set to null removes it; the others stay in order."""
    changed = {name.lower(): (name, value) for name, value in header_changes.items()}
    kept = [h for h in webhook.headers if h.name.lower() not in changed]
    added = [
        api.keyring.seal_header(webhook.id, name, value)
        for name, value in changed.values()
        if value is not None
    ]
    headers = (*kept, *added)
    if len(headers) > MAX_HEADERS:
        raise invalid(
            "headers",
            f"a webhook carries at most {MAX_HEADERS} custom headers; this change leaves "
            f"{len(headers)}",
        )
    return headers


async def delete_webhook(
    api: Api, scope: str | None, webhook_id: str, if_match: IfMatch = None
) -> None:
    async def change(webhook: Webhook) -> None:
        return None

    await _change(api, scope, webhook_id, if_match, "delete", change)


async def rotate_secret(
    api: Api,
    scope: str | None,
    webhook_id: str,
    grace_period_seconds: int,
    if_match: IfMatch = None,
) -> tuple[Webhook, str]:
    """A new current secret (its plaintext returned); with a grace period the old ones keep
    signing until it ends."""
    secret = new_secret()

    async def change(webhook: Webhook) -> Webhook:
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
        current = api.keyring.seal(webhook.id, secret)
        return webhook.next_version(now, secrets=(current, *kept))

    rotated = await _change(api, scope, webhook_id, if_match, "rotate_secret", change)
    assert rotated is not None
    return rotated, secret


async def settle_webhooks(api: Api, webhook_ids: Iterable[str]) -> int:
    """Write the state the views hold after records they refused; how many were written.

    A refused record is still the last of its key in the log until something follows it,
    and compaction keeps only the last: a view read later would apply it. Re-writing the
    held webhook (or a tombstone for a deleted one) is applied by every view and changes
    nothing; every replica may do it, the copies are alike.
    """
    settled = 0
    for webhook_id in webhook_ids:
        async with api.lock("webhook", webhook_id):
            held = api.webhooks.get(webhook_id)
            value = None if held is None else api.codec.write(held)
            await api.write_through(api.webhooks, api.topics.webhooks, "webhook", webhook_id, value)
        API_WEBHOOK_WRITES.labels("settle").inc()
        settled += 1
    return settled
