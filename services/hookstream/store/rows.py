"""What the store hands back: plain immutable rows, free of SQLAlchemy types."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class AttemptRow:
    attempt_id: str
    delivery_id: str
    event_id: str
    webhook_id: str
    tenant_id: str
    event_type: str
    attempt_number: int
    trigger: str
    url: str
    started_at_ms: int
    duration_ms: int
    status_code: int | None
    outcome: str
    error: str | None
    response_body: str | None
    next_attempt_at_ms: int | None
    webhook_disabled: bool


@dataclass(frozen=True, slots=True)
class DeliveryRow:
    delivery_id: str
    tenant_id: str
    webhook_id: str
    event_id: str
    event_type: str
    status: str
    attempt_count: int
    last_status_code: int | None
    last_error: str | None
    last_attempt_at_ms: int
    next_attempt_at_ms: int | None
    created_at_ms: int
    updated_at_ms: int
    body: bytes | None


@dataclass(frozen=True, slots=True)
class DeliveryDetail:
    delivery: DeliveryRow
    attempts: list[AttemptRow]


@dataclass(frozen=True, slots=True)
class Page:
    items: list[DeliveryRow]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class Health:
    webhook_id: str
    last_outcome: str | None
    last_status_code: int | None
    last_attempt_at_ms: int | None
    failing_since_ms: int | None
    success_rate_24h: float | None
    attempts_24h: int


@dataclass(frozen=True, slots=True)
class FailingWebhook:
    webhook_id: str
    tenant_id: str
    failing_since_ms: int
