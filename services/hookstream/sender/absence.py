"""When a webhook missing from the sender's view is known to be deleted, not merely unread.

Whoever made a delivery record had the webhook in its own view first: the router matching an
event, the API replaying or testing, the sender retrying after an attempt. So the record was
appended after the webhook's write was acknowledged, and a view synced after the record was
appended has applied that write: absence there means deleted. The record's Kafka timestamp is
that moment on the writer's clock. The delivery's `created_at_ms` is not: the router sets it to
the event's publish time, which lies before a webhook created while the router was behind.
"""

from __future__ import annotations

from hookstream.core.records import Delivery


def absence_means_deleted(synced_at_ms: int, delivery: Delivery, appended_ms: int | None) -> bool:
    """Whether a view synced at `synced_at_ms` that lacks the delivery's webhook shows it is
    deleted; if not, the view is synced before it is asked again. Without an append time it
    never does."""
    if appended_ms is None:
        return False
    return synced_at_ms > max(delivery.created_at_ms, appended_ms)
