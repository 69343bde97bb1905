"""The router paces its transactions instead of delaying every batch (issue 19).

`router_batch_seconds` is the shortest time between the starts of two routing transactions:
an event that finds the router idle goes at once, and under load the events gather so that
there are at most 1/router_batch_seconds transactions a second. Both halves are checked on a
real router process: the first against an interval far longer than the test may wait, the
second by the router's own count of committed transactions.
"""

from __future__ import annotations

import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from hookstream.core.records import Webhook
from hookstream.core.settings import Settings
from hookstream.core.topics import Topics
from hookstream.tools.topics import create_topics
from tests.conftest import ServiceStarter, SettingsFactory
from tests.helpers import http_request, wait_for
from tests.pipeline import Platform, Service, TopicTail, make_webhook

pytestmark = pytest.mark.integration

TENANT = "tenant_pacing"


def _setup(settings: Settings) -> tuple[Platform, Webhook, TopicTail]:
    create_topics(settings)
    platform = Platform(settings)
    webhook = platform.webhook(make_webhook(TENANT, "https://example.com/h", ["invoice.paid"]))
    tail = TopicTail(settings, Topics.from_settings(settings).deliveries, "Delivery")
    return platform, webhook, tail


def _routed(tail: TopicTail, event_ids: set[str]) -> set[str]:
    return {d["event_id"] for d in tail.poll()} & event_ids


def _transactions(router: Service) -> float:
    reply = http_request(router.ops_port(), "GET", "/metrics", timeout=10)
    assert reply.status == 200
    return sum(
        sample.value
        for family in text_string_to_metric_families(reply.text)
        for sample in family.samples
        if sample.name == "hookstream_router_transactions_total"
    )


def test_an_event_that_finds_the_router_idle_is_routed_without_waiting_the_interval(
    settings_factory: SettingsFactory, services: ServiceStarter
) -> None:
    # Far longer than the deadline below: a router that gathered for the interval after the
    # first event (what router_batch_seconds used to mean) could not pass.
    settings = settings_factory(router_batch_seconds=600.0)
    platform, _webhook, tail = _setup(settings)
    services("router", settings)
    try:
        first = platform.event(TENANT, "invoice.paid")
        wait_for(lambda: _routed(tail, {first}), timeout=60, what="the lone event routed")
    finally:
        tail.close()


def test_under_load_transactions_are_at_most_one_per_interval_and_nothing_is_lost(
    settings_factory: SettingsFactory, services: ServiceStarter
) -> None:
    interval = 0.5
    settings = settings_factory(router_batch_seconds=interval)
    platform, _webhook, tail = _setup(settings)
    router = services("router", settings)
    try:
        warm_up = platform.event(TENANT, "invoice.paid")
        wait_for(lambda: _routed(tail, {warm_up}), timeout=60, what="the warm-up event routed")
        before = _transactions(router)

        # One at a time, each acknowledged before the next: unpaced, nearly every event would
        # find the router idle and take a transaction of its own.
        started = time.monotonic()
        events = {platform.event(TENANT, "invoice.paid") for _ in range(150)}
        wait_for(lambda: _routed(tail, events) == events, timeout=60, what="all 150 routed")
        elapsed = time.monotonic() - started
        # Counted once the transaction committed: the last one may lag its records a little.
        committed = wait_for(
            lambda: (n := _transactions(router) - before) >= 1 and n,
            timeout=30,
            what="the router's transaction count",
        )
        assert committed <= elapsed / interval + 2, (
            f"{committed:g} transactions in {elapsed:.2f} s at one per {interval} s at most"
        )
        # No delivery twice: each event went to its one webhook once.
        assert len([d for d in tail.poll() if d["event_id"] in events]) == len(events)
    finally:
        tail.close()
