"""A webhook created while the router is behind is not taken for deleted by a sender whose
view synced after the event was published but before the webhook existed."""

from __future__ import annotations

import time
import uuid

import pytest

from hookstream.core.codec import default_codec
from hookstream.core.kafka import appended_at_ms
from hookstream.core.records import Delivery
from hookstream.core.settings import Settings
from hookstream.core.topics import Topics
from hookstream.core.view import webhook_view
from hookstream.sender.absence import absence_means_deleted
from tests.conftest import ServiceStarter
from tests.helpers import wait_for
from tests.pipeline import Platform, make_webhook, read_topic

pytestmark = pytest.mark.integration


def now_ms() -> int:
    return int(time.time() * 1000)


def test_a_webhook_created_behind_a_backlogged_router_is_not_taken_for_deleted(
    pipeline_settings: Settings, platform: Platform, services: ServiceStarter
) -> None:
    settings = pipeline_settings
    topics = Topics.from_settings(settings)
    tenant = f"tenant_{uuid.uuid4().hex[:8]}"
    # No router runs yet: the event waits on `events`, as behind a backlog.
    event_id = platform.event(tenant, "invoice.paid")
    published_by_ms = now_ms()

    # A sender's view syncs after the publish, before the webhook exists.
    view = webhook_view(settings, default_codec(), topics.webhooks, None).start()
    try:
        view.wait_ready()
        wait_for(
            lambda: view.sync(10) and view.synced_at_ms > published_by_ms,
            what="a view synced after the publish",
        )
        synced_at_ms = view.synced_at_ms
    finally:
        view.stop()
    hook = platform.webhook(make_webhook(tenant, "https://hooks.example.com/x", ["invoice.paid"]))

    # The router catches up and routes the event to the webhook created after it.
    services("router")

    def routed() -> list[object]:
        messages = read_topic(settings, topics.deliveries, None)
        return [m for m in messages if m.key() == hook.id.encode()]

    [message] = wait_for(routed, timeout=60, interval=0.2, what="the router's delivery")
    delivery = default_codec().read(Delivery, message.value())
    assert delivery.event_id == event_id
    appended_ms = appended_at_ms(message)
    assert appended_ms is not None
    # What the sender sees when its view lacks the webhook: synced after the delivery was
    # "created" (the event's publish) but before the webhook was. That is no proof of deletion.
    assert delivery.created_at_ms < synced_at_ms
    assert not absence_means_deleted(synced_at_ms, delivery, appended_ms), (
        "a live delivery would be skipped as deleted by a view synced before its webhook existed"
    )
    # Synced after the record was appended, absence does mean deleted.
    assert absence_means_deleted(appended_ms + 1, delivery, appended_ms)
