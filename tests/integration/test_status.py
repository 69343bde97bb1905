"""`hookstream status` against the real broker: a pipeline with lag, a retry waiting in its
tier, a dead letter and recently disabled webhooks."""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson
import pytest

from hookstream.cli import main
from hookstream.core.settings import Settings
from hookstream.core.signing import new_secret
from hookstream.core.topics import Topics
from hookstream.tools.status import collect_status
from hookstream.tools.topics import create_topics
from tests.conftest import ServiceStarter, SettingsFactory
from tests.helpers import settings_env, wait_for
from tests.pipeline import Platform, make_webhook
from tests.receiver import Behaviour, TestReceiver

pytestmark = pytest.mark.integration

EVENT_TYPE = "invoice.paid"
# A failed first attempt waits a minute in the first tier: long enough to look at it.
SCHEDULE = (60.0, 120.0)
DAY_MS = 24 * 3600 * 1000


def run_cli(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    settings: Settings,
    *args: str,
) -> tuple[int, str, str]:
    """`hookstream status ARGS` with `settings` in the environment: code, stdout, stderr."""
    for name, value in settings_env(settings).items():
        if name.startswith("HOOKSTREAM_"):
            monkeypatch.setenv(name, value)
    capsys.readouterr()
    code = main(["status", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_status_shows_lag_members_retry_backlog_dlq_and_disabled_webhooks(
    settings_factory: SettingsFactory,
    receiver: TestReceiver,
    services: ServiceStarter,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = settings_factory(
        allow_private_targets=("127.0.0.0/8",), request_timeout=2.0, retry_schedule=SCHEDULE
    )
    create_topics(settings)
    topics = Topics.from_settings(settings)
    platform = Platform(settings)
    tenant = f"tenant_{uuid.uuid4().hex[:6]}"

    secret = new_secret()
    url = receiver.expect("/fail", [secret], Behaviour(status=500))
    platform.webhook(make_webhook(tenant, url, [EVENT_TYPE], secret=secret))
    now_ms = int(time.time() * 1000)
    recent = make_webhook(tenant, "https://example.com/a", [EVENT_TYPE])
    platform.webhook(recent.disabled("endpoint answered 410 Gone", now_ms - 60_000))
    old = make_webhook(tenant, "https://example.com/b", [EVENT_TYPE])
    platform.webhook(old.disabled("auto-disabled long ago", now_ms - 2 * DAY_MS))

    router = services("router", settings)
    services("sender", settings)
    platform.event(tenant, EVENT_TYPE)
    platform.event(tenant, "no.such.type")  # dead-lettered by the router
    wait_for(lambda: receiver.received("/fail"), timeout=60, what="the failing attempt")

    # The first tier now holds the retry; the router stops, and events pile up behind it.
    def retry_held() -> Any:
        status = collect_status(settings)
        tier = status.retry_tiers[0]
        return status if tier.backlog == 1 and tier.oldest_due_at_ms else None

    wait_for(retry_held, timeout=30, interval=0.5, what="the retry in its tier")
    wait_for(
        lambda: collect_status(settings).dead_letters.size == 1, timeout=30, what="the dead letter"
    )
    assert router.terminate() == 0
    for _ in range(3):
        platform.event(tenant, EVENT_TYPE, flush=False)
    platform.flush()

    started = time.monotonic()
    code, out, _ = run_cli(monkeypatch, capsys, settings, "--json")
    took = time.monotonic() - started
    assert code == 0
    status = orjson.loads(out)
    prefix = settings.consumer_group_prefix

    groups = {group["name"]: group for group in status["groups"]}
    assert set(groups) == {"router", "sender", "log-sink"}
    router_group = groups["router"]
    assert router_group["group_id"] == f"{prefix}router"
    assert router_group["members"] == [] and router_group["state"] == "EMPTY"
    [events] = router_group["topics"]
    assert events["topic"] == topics.events and events["lag"] == 3 == router_group["lag"]
    assert sum(p["lag"] for p in events["partitions"]) == 3

    sender = groups["sender"]
    assert sender["state"] == "STABLE"
    [member] = sender["members"]
    assert f"{topics.deliveries}[0]" in member["partitions"]
    assert (
        len(member["partitions"])
        == settings.deliveries_partitions + len(SCHEDULE) * settings.retry_partitions
    )
    sender_topics = [t["topic"] for t in sender["topics"]]
    assert sender_topics == [topics.deliveries, *(t.topic for t in topics.retry_tiers)]
    # Only transaction markers follow the one delivery on `deliveries`: no lag.
    [deliveries] = [t for t in sender["topics"] if t["topic"] == topics.deliveries]
    assert deliveries["lag"] == 0
    assert sum(p["high"] - p["low"] for p in deliveries["partitions"]) >= 2  # record + marker

    log_sink = groups["log-sink"]
    assert log_sink["state"] == "DEAD" and log_sink["members"] == []  # never started
    assert log_sink["lag"] == 1  # the failed attempt's record

    first, second = status["retry_tiers"]
    assert (first["tier"], first["topic"], first["backlog"]) == (
        "1m",
        topics.retry_tiers[0].topic,
        1,
    )
    # Due a minute (jittered by up to 20 %) after the attempt.
    due = first["oldest_due_at_ms"]
    assert now_ms + 40_000 < due < int(time.time() * 1000) + 80_000
    assert first["oldest_due_at"].endswith("Z")
    assert second["backlog"] == 0 and second["oldest_due_at_ms"] is None

    dlq = status["dlq"]
    assert (dlq["topic"], dlq["size"], dlq["exact"]) == (topics.dlq, 1, True)
    assert dlq["by_reason"] == {"unknown_event_type": 1}
    assert now_ms - 5000 < dlq["newest_at_ms"] < int(time.time() * 1000)
    assert [w["id"] for w in status["disabled_webhooks"]] == [recent.id]
    [disabled] = status["disabled_webhooks"]
    assert disabled["reason"] == "endpoint answered 410 Gone"
    assert disabled["tenant_id"] == tenant
    assert status["problems"] == []
    assert took < 15, f"status took {took:.1f} s"

    # The same, for people.
    code, table, _ = run_cli(monkeypatch, capsys, settings)
    assert code == 0
    for heading in ("CONSUMER GROUPS", "MEMBERS", "RETRY TIERS", "DEAD LETTERS", "DISABLED"):
        assert heading in table
    router_line = next(line for line in table.splitlines() if line.startswith("router "))
    assert router_line.split()[-2:] == [topics.events, "3"]
    tier_line = next(line for line in table.splitlines() if line.startswith("1m "))
    assert tier_line.split()[:3] == ["1m", topics.retry_tiers[0].topic, "1"] and "in " in tier_line
    assert f"{topics.dlq}: 1 record(s), newest " in table
    assert any(line.split() == ["unknown_event_type", "1"] for line in table.splitlines())
    assert recent.id in table and old.id not in table


def test_status_fails_plainly_when_kafka_does_not_answer(
    settings_factory: SettingsFactory,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = settings_factory(kafka_bootstrap_servers="127.0.0.1:1")
    started = time.monotonic()
    code, out, err = run_cli(monkeypatch, capsys, settings, "--timeout", "2")
    assert code == 1 and out == ""
    assert "Kafka did not answer" in err
    assert time.monotonic() - started < 15
