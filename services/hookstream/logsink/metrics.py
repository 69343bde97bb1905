"""The log-sink's Prometheus series."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

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
