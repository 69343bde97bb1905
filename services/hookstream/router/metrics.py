"""The router's Prometheus series."""

from __future__ import annotations

from prometheus_client import Counter

EVENTS_CONSUMED = Counter(
    "hookstream_events_consumed_total", "Events read from the events topic by the router."
)
ROUTING_TRANSACTIONS = Counter(
    "hookstream_router_transactions_total",
    "Routing transactions the router committed; at most 1/router_batch_seconds per second.",
)
DELIVERIES_ROUTED = Counter(
    "hookstream_deliveries_routed_total", "Deliveries produced by the router (one per match)."
)
