"""The Prometheus series every service exports (dead letters, consumer lag) and shared helpers.

Each service defines its own series in its `metrics` module; `SERVICE_METRICS` names them all,
so a test can check the dashboards and alerts in deploy/ against every series."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable
from typing import Any

from prometheus_client import Counter, Gauge

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600)

DEAD_LETTERS = Counter(
    "hookstream_dead_letters_total", "Records written to the dead-letter topic.", ["reason"]
)
CONSUMER_LAG = Gauge(
    "hookstream_consumer_lag",
    "Records behind the end of the partition, per consumer group.",
    ["group", "topic", "partition"],
)


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


def with_lag_metrics(config: dict[str, Any]) -> dict[str, Any]:
    """Publish this group consumer's per-partition lag as `hookstream_consumer_lag`."""
    return {**config, "statistics.interval.ms": 5000, "stats_cb": lag_reporter(config["group.id"])}


def count_dead_letter(reason: str) -> None:
    DEAD_LETTERS.labels(reason).inc()


# Every module defining hookstream series, for the checks of deploy/ and docs against them.
SERVICE_METRICS = (
    "hookstream.runtime.metrics",
    "hookstream.router.metrics",
    "hookstream.sender.metrics",
    "hookstream.logsink.metrics",
    "hookstream.api.metrics",
)
