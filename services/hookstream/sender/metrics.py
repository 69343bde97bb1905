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
    "Deliveries to slow webhooks moved to the first retry tier unattempted (slow lane full).",
)

RETRY_COPIES_DROPPED = Counter(
    "hookstream_sender_retry_copies_dropped_total",
    "Retry records dropped as a second copy of an earlier one (a record redone after a crash).",
)


def status_class(status_code: int | None) -> str:
    return "none" if status_code is None else f"{status_code // 100}xx"
