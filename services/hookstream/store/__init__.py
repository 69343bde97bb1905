"""The SQL store behind the delivery log, replay and endpoint health (SQLite or PostgreSQL)."""

from hookstream.store.derive import DELIVERY_STATUSES, delivery_status
from hookstream.store.errors import InvalidCursorError, UnsupportedStoreUrlError
from hookstream.store.rows import (
    ClaimedEvent,
    DeliveryDetail,
    DeliveryRow,
    EventTaken,
    FailingWebhook,
    Health,
    Page,
)
from hookstream.store.store import MAX_PAGE_SIZE, Store
from hookstream.store.versioning import migrate

__all__ = [
    "DELIVERY_STATUSES",
    "MAX_PAGE_SIZE",
    "ClaimedEvent",
    "DeliveryDetail",
    "DeliveryRow",
    "EventTaken",
    "FailingWebhook",
    "Health",
    "InvalidCursorError",
    "Page",
    "Store",
    "UnsupportedStoreUrlError",
    "delivery_status",
    "migrate",
]
