"""The sender's Prometheus series."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from hookstream.runtime.metrics import LATENCY_BUCKETS

ATTEMPTS = Counter(
    "hookstream_attempts_total",
    "Delivery attempts by outcome and HTTP status class (2xx..5xx, none).",
    ["outcome", "status_class"],
)
REQUEST_DURATION = Histogram(
    "hookstream_request_duration_seconds",
    "Duration of webhook HTTP requests.",
    buckets=LATENCY_BUCKETS,
)
EVENT_TO_DELIVERY = Histogram(
    "hookstream_event_to_delivery_seconds",
    "From the event's publication to its successful delivery.",
    buckets=LATENCY_BUCKETS,
)
IN_FLIGHT = Gauge("hookstream_requests_in_flight", "Webhook HTTP requests in flight.")
RETRIES_SCHEDULED = Counter(
    "hookstream_retries_scheduled_total", "Retry records produced, by retry tier.", ["tier"]
)
DELIVERIES_DEFERRED = Counter(
    "hookstream_deliveries_deferred_total",
    "Deliveries put off to a retry tier unattempted: the slow lane was full (slow_lane), or "
    "their webhook had as many waiting as its limits let it keep in memory (webhook_limit).",
    ["reason"],
)
WEBHOOK_CONCURRENCY_LIMIT = Gauge(
    "hookstream_webhook_concurrency_limit",
    "Requests one webhook may have in flight now (its max_concurrency, or the adaptive limit).",
    ["webhook_id"],
)
WEBHOOK_IN_FLIGHT = Gauge(
    "hookstream_webhook_in_flight", "Requests in flight to one webhook.", ["webhook_id"]
)

RETRY_COPIES_DROPPED = Counter(
    "hookstream_sender_retry_copies_dropped_total",
    "Retry records dropped as a second copy of an earlier one (a record redone after a crash).",
)


# `.labels()` takes a lock and builds a key per call; a busy webhook reports on every request.
_webhook_children: dict[str, tuple[Gauge, Gauge]] = {}


def webhook_gauges(webhook_id: str, limit: int, in_flight: int) -> None:
    children = _webhook_children.get(webhook_id)
    if children is None:
        children = (
            WEBHOOK_CONCURRENCY_LIMIT.labels(webhook_id),
            WEBHOOK_IN_FLIGHT.labels(webhook_id),
        )
        _webhook_children[webhook_id] = children
    children[0].set(limit)
    children[1].set(in_flight)


def forget_webhook(webhook_id: str) -> None:
    """Drop a webhook's series (the sender no longer keeps its state)."""
    if _webhook_children.pop(webhook_id, None) is not None:
        WEBHOOK_CONCURRENCY_LIMIT.remove(webhook_id)
        WEBHOOK_IN_FLIGHT.remove(webhook_id)


def status_class(status_code: int | None) -> str:
    return "none" if status_code is None else f"{status_code // 100}xx"
