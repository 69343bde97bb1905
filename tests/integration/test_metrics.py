"""Every service's /metrics, /healthz and /readyz, scraped over HTTP while real traffic flows.

One pipeline (router, sender, log-sink and api as processes) gets successes, a failing endpoint
(retries, then a dead letter and an auto-disable), a slow endpoint (requests in flight) and a
poison event; each series of metrics modules must then have moved on the service that owns it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from hookstream.core.records import Webhook
from hookstream.core.settings import Settings
from hookstream.core.signing import new_secret
from hookstream.core.topics import Topics
from hookstream.tools import localkafka
from hookstream.tools.topics import create_topics
from tests.conftest import ServiceStarter, SettingsFactory
from tests.helpers import http_request, wait_for
from tests.pipeline import Platform, Service, make_webhook
from tests.receiver import Behaviour, TestReceiver

pytestmark = pytest.mark.integration

ADMIN_KEY = "metrics-admin-key-0123456789"
TENANT = "tenant_metrics"
EVENT_TYPE = "invoice.paid"
# Two retry tiers: a failing endpoint is tried three times, then dead-lettered as exhausted.
SCHEDULE = (0.2, 0.5)
TIERS = ("200ms", "500ms")


@dataclass(frozen=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float


class Scrape:
    """One /metrics answer, parsed."""

    def __init__(self, text: str) -> None:
        self.samples = [
            Sample(s.name, dict(s.labels), s.value)
            for family in text_string_to_metric_families(text)
            for s in family.samples
        ]

    def value(self, name: str, **labels: str) -> float:
        """The sum of every sample of `name` whose labels include `labels`."""
        return sum(
            s.value
            for s in self.samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        )

    def labels(self, name: str, label: str) -> set[str]:
        return {s.labels[label] for s in self.samples if s.name == name and label in s.labels}

    def has(self, name: str) -> bool:
        return any(s.name == name for s in self.samples)


def get(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    reply = http_request(port, "GET", path, headers=headers, timeout=10)
    return reply.status, reply.text


def scrape(port: int) -> Scrape:
    status, text = get(port, "/metrics")
    assert status == 200
    return Scrape(text)


def ready(port: int) -> bool:
    try:
        return get(port, "/readyz")[0] == 200
    except OSError:
        return False


@dataclass
class Stack:
    settings: Settings
    platform: Platform
    receiver: TestReceiver
    services: dict[str, Service]
    ports: dict[str, int]

    def scrape(self, name: str) -> Scrape:
        return scrape(self.ports[name])

    def logs(self) -> str:
        return "\n".join(f"--- {n} ---\n{s.log()[-3000:]}" for n, s in self.services.items())


@pytest.fixture
def stack(
    settings_factory: SettingsFactory, receiver: TestReceiver, services: ServiceStarter
) -> Iterator[Stack]:
    settings = settings_factory(
        allow_private_targets=("127.0.0.0/8",),
        request_timeout=5.0,
        retry_schedule=SCHEDULE,
        auto_disable_after=4.0,  # after the third attempt, well clear of it
        maintenance_interval=0.5,
        api_host="127.0.0.1",
        api_port=localkafka.free_port(),
        api_keys={ADMIN_KEY: "*"},
    )
    create_topics(settings)
    started = {name: services(name, settings) for name in ("log-sink", "router", "sender", "api")}
    ports = {name: started[name].ops_port() for name in ("log-sink", "router", "sender")}
    ports["api"] = settings.api_port
    yield Stack(settings, Platform(settings), receiver, started, ports)


def endpoint(stack: Stack, tenant: str, path: str, behaviour: Behaviour | None = None) -> Webhook:
    secret = new_secret()
    url = stack.receiver.expect(path, [secret], behaviour)
    return stack.platform.webhook(make_webhook(tenant, url, [EVENT_TYPE], secret=secret))


def test_every_service_serves_probes_and_its_series_move_with_traffic(stack: Stack) -> None:
    # -- probes: alive at once, ready once loaded --------------------------------------
    for name, port in stack.ports.items():
        wait_for(lambda p=port: ready(p), timeout=90, what=f"{name} /readyz 200")
        assert get(port, "/healthz")[0] == 200, name
    assert get(stack.ports["router"], "/nowhere")[0] == 404

    # Before any traffic the counters are there, at zero.
    before = stack.scrape("sender")
    assert before.has("hookstream_requests_in_flight")
    assert before.value("hookstream_attempts_total") == 0

    # -- traffic -------------------------------------------------------------------------
    receiver, platform = stack.receiver, stack.platform
    endpoint(stack, TENANT, "/ok")
    failing = endpoint(stack, "tenant_failing", "/fail", Behaviour(status=503))
    endpoint(stack, "tenant_slow", "/slow", Behaviour(delay=3.0))
    time.sleep(0.5)  # the router's and the sender's views apply the webhooks

    for _ in range(3):
        platform.event(TENANT, EVENT_TYPE)
    platform.event("tenant_failing", EVENT_TYPE)
    platform.event(TENANT, "no.such.type")  # poison: dead-lettered by the router
    platform.event("tenant_slow", EVENT_TYPE)

    # -- sender: a request in flight while the slow endpoint holds it ------------------
    wait_for(lambda: receiver.received("/slow"), timeout=60, what="the slow request")
    assert stack.scrape("sender").value("hookstream_requests_in_flight") >= 1

    # -- router --------------------------------------------------------------------------
    def router_done() -> Scrape | None:
        s = stack.scrape("router")
        routed = s.value("hookstream_deliveries_routed_total")
        return s if s.value("hookstream_events_consumed_total") >= 6 and routed >= 5 else None

    router = wait_for(router_done, timeout=60, what="the router's counters")
    assert router.value("hookstream_dead_letters_total", reason="unknown_event_type") == 1

    # -- sender: outcomes, retries per tier, the exhausted dead letter ------------------
    def sender_done() -> Scrape | None:
        s = stack.scrape("sender")
        done = (
            s.value("hookstream_attempts_total", outcome="success", status_class="2xx") >= 4
            and s.value("hookstream_dead_letters_total", reason="exhausted") >= 1
            and s.value("hookstream_requests_in_flight") == 0
        )
        return s if done else None

    sender = wait_for(sender_done, timeout=90, what=f"the sender's counters\n{stack.logs()}")
    assert sender.value("hookstream_attempts_total", outcome="temporary_failure") == 2
    assert sender.value("hookstream_attempts_total", status_class="5xx") == 3
    for tier in TIERS:
        assert sender.value("hookstream_retries_scheduled_total", tier=tier) == 1, tier
    assert sender.value("hookstream_request_duration_seconds_count") >= 7
    assert sender.value("hookstream_request_duration_seconds_sum") >= 3.0  # the slow one
    assert sender.value("hookstream_event_to_delivery_seconds_count") >= 4
    assert sender.value("hookstream_event_to_delivery_seconds_bucket", le="+Inf") >= 4

    # -- log-sink: store batches, and the failing webhook auto-disabled -----------------
    def sink_done() -> Scrape | None:
        s = stack.scrape("log-sink")
        stored = s.value("hookstream_store_batch_size_sum") >= 7
        return s if stored and s.value("hookstream_auto_disables_total") >= 1 else None

    sink = wait_for(sink_done, timeout=60, what=f"the log-sink's counters\n{stack.logs()}")
    assert sink.value("hookstream_store_batch_size_count") >= 1
    assert sink.value("hookstream_store_commit_seconds_count") == sink.value(
        "hookstream_store_batch_size_count"
    )
    assert sink.value("hookstream_auto_disables_total") == 1
    assert f"auto-disabled webhook {failing.id}" in stack.services["log-sink"].log()

    # -- consumer lag, per group and partition (librdkafka statistics every 5 s) --------
    topics = Topics.from_settings(stack.settings)
    prefix = stack.settings.consumer_group_prefix
    expected = {
        "router": (f"{prefix}router", topics.events),
        "sender": (f"{prefix}sender", topics.deliveries),
        "log-sink": (f"{prefix}log-sink", topics.delivery_log),
    }
    for name, (group, topic) in expected.items():

        def lag_reported(n: str = name, g: str = group, t: str = topic) -> Scrape | None:
            s = stack.scrape(n)
            found = any(
                x.name == "hookstream_consumer_lag"
                and x.labels["group"] == g
                and x.labels["topic"] == t
                for x in s.samples
            )
            return s if found else None

        lag = wait_for(lag_reported, timeout=30, interval=0.5, what=f"{name}'s consumer lag")
        assert lag.labels("hookstream_consumer_lag", "group") == {group}
        assert lag.value("hookstream_consumer_lag", topic=topic) >= 0

    # -- api: its own /metrics counts its requests --------------------------------------
    api = stack.ports["api"]
    status, _ = get(api, "/v1/webhooks", {"Authorization": f"Bearer {ADMIN_KEY}"})
    assert status == 200
    counted = stack.scrape("api")
    assert counted.value("hookstream_api_requests_total", route="/v1/webhooks", status="200") >= 1
    assert counted.value("hookstream_api_request_duration_seconds_count", method="GET") >= 1

    # -- the sender's log: one JSON line per failure, with ids, without secret or payload --
    sender_log = stack.services["sender"].log()
    lines = [orjson.loads(line) for line in sender_log.splitlines() if line.startswith("{")]
    failures = [line for line in lines if line.get("webhook_id") == failing.id]
    assert [line["attempt_number"] for line in failures] == [1, 2, 3], sender_log
    for line in failures:
        assert line["level"] == "INFO" and line["logger"] == "hookstream.sender.service"
        assert line["event_id"].startswith("evt_") and line["delivery_id"].startswith("dlv_")
    assert failures[-1]["outcome"] == "exhausted"
    assert failing.secrets[0].value not in sender_log
    assert "inv_1" not in sender_log  # the events' data

    # Every service stays up through all of it.
    for service in stack.services.values():
        assert service.alive(), f"{service.name} exited:\n{service.log()[-4000:]}"
