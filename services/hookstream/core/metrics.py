"""Every Prometheus series hookstream exports, defined once so dashboards and alerts can rely
on the names (deploy/ is checked against this module by a test)."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable

from prometheus_client import Counter, Gauge, Histogram

log = logging.getLogger(__name__)

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600)

EVENTS_CONSUMED = Counter(
    "hookstream_events_consumed_total", "Events read from the events topic by the router."
)
DELIVERIES_ROUTED = Counter(
    "hookstream_deliveries_routed_total", "Deliveries produced by the router (one per match)."
)
ATTEMPTS = Counter(
    "hookstream_attempts_total",
    "Delivery attempts by outcome and HTTP status class (2xx..5xx, none).",
    ["outcome", "status_class"],
)
REQUEST_DURATION = Histogram(
    "hookstream_request_duration_seconds",
    "Duration of webhook HTTP requests.",
    buckets=_LATENCY_BUCKETS,
)
EVENT_TO_DELIVERY = Histogram(
    "hookstream_event_to_delivery_seconds",
    "From the event's publication to its successful delivery.",
    buckets=_LATENCY_BUCKETS,
)
IN_FLIGHT = Gauge("hookstream_requests_in_flight", "Webhook HTTP requests in flight.")
RETRIES_SCHEDULED = Counter(
    "hookstream_retries_scheduled_total", "Retry records produced, by retry tier.", ["tier"]
)
DELIVERIES_DEFERRED = Counter(
    "hookstream_deliveries_deferred_total",
    "Deliveries to slow webhooks moved to the first retry tier unattempted (slow lane full).",
)
DEAD_LETTERS = Counter(
    "hookstream_dead_letters_total", "Records written to the dead-letter topic.", ["reason"]
)
CONSUMER_LAG = Gauge(
    "hookstream_consumer_lag",
    "Records behind the end of the partition, per consumer group.",
    ["group", "topic", "partition"],
)
STORE_BATCH_SIZE = Histogram(
    "hookstream_store_batch_size",
    "Attempt records per store transaction.",
    buckets=(1, 10, 50, 100, 250, 500, 1000, 2500, 5000),
)
STORE_COMMIT_SECONDS = Histogram(
    "hookstream_store_commit_seconds", "Duration of a store batch transaction."
)
AUTO_DISABLES = Counter(
    "hookstream_auto_disables_total", "Webhooks disabled automatically after failing too long."
)
API_REQUESTS = Counter(
    "hookstream_api_requests_total",
    "Management API requests, by method, route template and status.",
    ["method", "route", "status"],
)
API_REQUEST_DURATION = Histogram(
    "hookstream_api_request_duration_seconds",
    "Time to answer a management API request, by method and route template.",
    ["method", "route"],
)
API_EVENTS = Counter(
    "hookstream_api_events_total",
    "Events received on POST /v1/events: published, or duplicate (not published again).",
    ["result"],
)
API_WEBHOOK_WRITES = Counter(
    "hookstream_api_webhook_writes_total",
    "Webhook changes the API wrote to the webhooks topic, by action.",
    ["action"],
)


def status_class(status_code: int | None) -> str:
    return "none" if status_code is None else f"{status_code // 100}xx"


def lag_reporter(group: str) -> Callable[[str], None]:
    """A librdkafka `stats_cb` that publishes per-partition consumer lag for `group`.

    The lag behind the committed offset where this client committed it; otherwise (the router
    commits through its producer's transactions, which the consumer never learns about) the
    lag behind the offset stored for commit. A partition this member no longer owns loses its
    series, so a rebalance leaves no stale value behind.
    """

    def report(stats_json: str) -> None:
        try:
            stats = json.loads(stats_json)
        except ValueError:
            return
        for topic, topic_stats in stats.get("topics", {}).items():
            for partition, part in topic_stats.get("partitions", {}).items():
                if partition == "-1":
                    continue
                lag = part.get("consumer_lag", -1)
                if lag < 0:
                    lag = part.get("consumer_lag_stored", -1)
                if part.get("desired", True) and lag >= 0:
                    CONSUMER_LAG.labels(group, topic, partition).set(lag)
                elif not part.get("desired", True):
                    with contextlib.suppress(KeyError):
                        CONSUMER_LAG.remove(group, topic, partition)

    return report
