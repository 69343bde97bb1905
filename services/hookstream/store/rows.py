"""What the store hands back: plain immutable rows, free of SQLAlchemy types.

Attempts come back as the `Attempt` records the log-sink stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from hookstream.core.records import Attempt


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
    # As logged, oldest first; their `body` is None: the delivery row keeps the one body.
    attempts: list[Attempt]


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
    last_attempt_at_ms: int = 0
    # This streak was acted on already (disabled, or found disabled or deleted): it is offered
    # again only from its recheck time, to see whether the webhook was re-enabled since.
    acted_on: bool = False


@dataclass(frozen=True, slots=True)
class ClaimedEvent:
    """This caller holds event ids (one token for all it claimed at once): publish, then
    confirm or release them (store/event_claims.py)."""

    token: str


class EventTaken(Enum):
    """Another request claimed the event id first, and has published it or is publishing."""

    PUBLISHED = "published"
    IN_FLIGHT = "in_flight"
