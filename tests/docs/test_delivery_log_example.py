"""docs/examples/analysis/delivery_log_to_duckdb.py against a delivery-log topic filled by the
real router and sender delivering to loopback receivers (healthy, flaky, always failing)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from hookstream.core.settings import Settings
from hookstream.core.topics import Topics
from tests.conftest import ServiceStarter
from tests.helpers import wait_for
from tests.pipeline import Platform, make_webhook, read_topic
from tests.receiver import Behaviour, TestReceiver

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "docs" / "examples" / "analysis" / "delivery_log_to_duckdb.py"


def test_example_reports_success_rate_and_latency_per_webhook(
    pipeline_settings: Settings,
    platform: Platform,
    receiver: TestReceiver,
    services: ServiceStarter,
) -> None:
    behaviours = {
        "healthy": Behaviour(),
        "flaky": Behaviour(fail_first=1),  # the first request fails, its retry succeeds
        "down": Behaviour(status=503),  # every attempt fails until the schedule is exhausted
    }
    webhooks = {}
    for name, behaviour in behaviours.items():
        webhook = make_webhook("tenant_analysis", "", [])
        secret = webhook.secrets[0].value
        url = receiver.expect(f"/{name}", [secret], behaviour)
        # Each webhook its own event type, so the events decide who gets how many.
        event_type = {
            "healthy": "invoice.paid",
            "flaky": "offer.accepted",
            "down": "invoice.voided",
        }
        webhooks[name] = platform.webhook(
            make_webhook("tenant_analysis", url, [event_type[name]], secret=secret)
        ).id
    # The router starts after the webhooks exist, so none of the events below can miss them.
    services("router")
    services("sender")
    for _ in range(3):
        platform.event("tenant_analysis", "invoice.paid")
    for _ in range(2):
        platform.event("tenant_analysis", "offer.accepted")
    platform.event("tenant_analysis", "invoice.voided")

    topic = Topics.from_settings(pipeline_settings).delivery_log
    attempts_for_down = pipeline_settings.max_attempts

    def all_attempts() -> list[dict[str, object]] | None:
        found = read_topic(pipeline_settings, topic, "Attempt")
        done = len(found) == 3 + 3 + attempts_for_down and any(
            a["outcome"] == "exhausted" for a in found
        )
        return found if done else None

    attempts = wait_for(all_attempts, timeout=60, interval=0.3, what="every attempt logged")
    assert Counter(a["webhook_id"] for a in attempts) == {
        webhooks["healthy"]: 3,
        webhooks["flaky"]: 3,
        webhooks["down"]: attempts_for_down,
    }

    command = [
        sys.executable,
        str(EXAMPLE),
        *("--bootstrap", pipeline_settings.kafka_bootstrap_servers),
        *("--topic", topic),
        *("--schemas", str(ROOT / "schemas")),
    ]
    done = subprocess.run([*command, "--json"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    report = {row["webhook_id"]: row for row in map(json.loads, done.stdout.splitlines())}
    expected = {
        # webhook: deliveries, attempts, delivered, success rate %, failed attempts
        "healthy": (3, 3, 3, 100.0, 0),
        "flaky": (2, 3, 2, 100.0, 1),
        "down": (1, attempts_for_down, 0, 0.0, attempts_for_down),
    }
    for name, (deliveries, count, delivered, rate, failed) in expected.items():
        row = report[webhooks[name]]
        got = (
            row["deliveries"],
            row["attempts"],
            row["delivered"],
            row["success_rate_pct"],
            row["failed_attempts"],
        )
        assert got == (deliveries, count, delivered, rate, failed), (name, row)
        durations = [a["duration_ms"] for a in attempts if a["webhook_id"] == webhooks[name]]
        assert min(durations) <= row["p95_duration_ms"] <= max(durations), (name, row)

    # The people's form: a header and one line per webhook.
    table = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0] == f"{len(attempts)} attempts read from {topic}"
    assert lines[2].split()[:3] == ["webhook_id", "deliveries", "attempts"]
    assert sorted(line.split()[0] for line in lines[3:]) == sorted(webhooks.values())
