"""hookstream_consumer_lag from librdkafka statistics."""

from __future__ import annotations

import json
import uuid
from typing import Any

from prometheus_client import REGISTRY

from hookstream.runtime.metrics import lag_reporter


def stats(partitions: dict[str, dict[str, Any]]) -> str:
    return json.dumps({"topics": {"t.events": {"partitions": partitions}}})


def lag(group: str, partition: str) -> float | None:
    labels = {"group": group, "topic": "t.events", "partition": partition}
    return REGISTRY.get_sample_value("hookstream_consumer_lag", labels)


def test_lag_comes_from_the_committed_offset_else_the_stored_one() -> None:
    group = f"g-{uuid.uuid4().hex[:6]}"
    report = lag_reporter(group)
    report(
        stats(
            {
                "0": {"consumer_lag": 7, "consumer_lag_stored": 3, "desired": True},
                # Committed through a producer transaction: the consumer only knows what it
                # stored.
                "1": {"consumer_lag": -1, "consumer_lag_stored": 4, "desired": True},
                "2": {"consumer_lag": -1, "consumer_lag_stored": -1, "desired": True},
                "-1": {"consumer_lag": 5, "desired": False},
            }
        )
    )
    assert lag(group, "0") == 7
    assert lag(group, "1") == 4
    assert lag(group, "2") is None
    assert lag(group, "-1") is None


def test_a_partition_no_longer_owned_loses_its_series() -> None:
    group = f"g-{uuid.uuid4().hex[:6]}"
    report = lag_reporter(group)
    report(stats({"0": {"consumer_lag": 2, "desired": True}}))
    assert lag(group, "0") == 2
    report(stats({"0": {"consumer_lag": -1, "consumer_lag_stored": -1, "desired": False}}))
    assert lag(group, "0") is None
    report("not json")  # ignored
