"""Domain values (webhooks, store rows) as the API's response models."""

from __future__ import annotations

import logging
from typing import Any

import orjson

from hookstream.api.models import (
    REDACTED,
    AttemptOut,
    DeliveryDetailOut,
    DeliveryOut,
    HealthOut,
    WebhookOut,
)
from hookstream.api.times import iso
from hookstream.core.records import Attempt, Webhook
from hookstream.endpoints.secrets import Keyring, SecretError
from hookstream.store import DeliveryDetail, DeliveryRow, Health

log = logging.getLogger(__name__)

SECRET_HINT_CHARS = 4


def secret_hint(webhook: Webhook, keyring: Keyring) -> str:
    """The last characters of the current secret's plaintext ("" if it cannot be read)."""
    if not webhook.secrets:
        return ""
    try:
        current = keyring.decrypt(webhook.id, webhook.secrets[0].value)
    except SecretError as exc:
        log.warning("api: no secret hint for webhook %s: %s", webhook.id, exc)
        return ""
    return "…" + current[-SECRET_HINT_CHARS:]


def webhook_out(webhook: Webhook, now_ms: int, keyring: Keyring) -> WebhookOut:
    grace_ends = [
        secret.not_after_ms
        for secret in webhook.secrets[1:]
        if secret.not_after_ms is not None and secret.valid_at(now_ms)
    ]
    return WebhookOut(
        id=webhook.id,
        tenant_id=webhook.tenant_id,
        name=webhook.name,
        url=webhook.url,
        description=webhook.description,
        events=list(webhook.events),
        enabled=webhook.enabled,
        owner_id=webhook.owner_id,
        disabled_reason=webhook.disabled_reason,
        secret_hint=secret_hint(webhook, keyring),
        previous_secrets_valid_until=iso(max(grace_ends)) if grace_ends else None,
        created_at=iso(webhook.created_at_ms),
        updated_at=iso(webhook.updated_at_ms),
        max_concurrency=webhook.max_concurrency,
        rate_limit=webhook.rate_limit,
        timeout_seconds=webhook.timeout_seconds,
        headers={h.name: REDACTED if h.sensitive else h.value for h in webhook.headers},
        sensitive_headers=[h.name for h in webhook.headers if h.sensitive],
    )


def health_out(webhook: Webhook, health: Health) -> HealthOut:
    return HealthOut(
        webhook_id=webhook.id,
        enabled=webhook.enabled,
        disabled_reason=webhook.disabled_reason,
        last_status=health.last_outcome,
        last_status_code=health.last_status_code,
        last_attempt_at=iso(health.last_attempt_at_ms),
        success_rate_24h=health.success_rate_24h,
        attempts_24h=health.attempts_24h,
        failing_since=iso(health.failing_since_ms),
    )


def delivery_out(row: DeliveryRow) -> DeliveryOut:
    return DeliveryOut(**_delivery_fields(row))


def delivery_detail_out(detail: DeliveryDetail) -> DeliveryDetailOut:
    return DeliveryDetailOut(
        **_delivery_fields(detail.delivery),
        payload=_payload(detail.delivery.body),
        attempts=[_attempt_out(attempt) for attempt in detail.attempts],
    )


def _delivery_fields(row: DeliveryRow) -> dict[str, Any]:
    return {
        "id": row.delivery_id,
        "tenant_id": row.tenant_id,
        "webhook_id": row.webhook_id,
        "event_id": row.event_id,
        "event_type": row.event_type,
        "status": row.status,
        "attempt_count": row.attempt_count,
        "last_status_code": row.last_status_code,
        "last_error": row.last_error,
        "last_attempt_at": iso(row.last_attempt_at_ms),
        "next_attempt_at": iso(row.next_attempt_at_ms),
        "created_at": iso(row.created_at_ms),
    }


def _attempt_out(row: Attempt) -> AttemptOut:
    return AttemptOut(
        id=row.attempt_id,
        attempt_number=row.attempt_number,
        trigger=row.trigger,
        url=row.url,
        started_at=iso(row.started_at_ms),
        duration_ms=row.duration_ms,
        status_code=row.status_code,
        outcome=row.outcome,
        error=row.error,
        response_body=row.response_body,
        next_attempt_at=iso(row.next_attempt_at_ms),
        webhook_disabled=row.webhook_disabled,
    )


def _payload(body: bytes | None) -> Any:
    if body is None:
        return None
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return body.decode("utf-8", "replace")
