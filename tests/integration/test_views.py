"""Views of compacted topics, caught up in one request (the router's per-batch catch-up).

Real broker: a webhook or principal written a moment ago (acknowledged, not yet read by the
view's thread) is in the view once `sync_views` returns True, for both views at once.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hookstream.core.records import Principal, Webhook
from hookstream.core.settings import Settings
from hookstream.core.topics import Topics
from hookstream.core.view import CompactedView, principal_view, sync_views, webhook_view
from tests.pipeline import CODEC, Platform, make_webhook

pytestmark = pytest.mark.integration


Views = tuple[CompactedView[Webhook], CompactedView[Principal]]


@pytest.fixture
def views(pipeline_settings: Settings) -> Iterator[Views]:
    topics = Topics.from_settings(pipeline_settings)
    codec = CODEC
    webhooks = webhook_view(pipeline_settings, codec, topics.webhooks, None).start()
    principals = principal_view(pipeline_settings, codec, topics.principals, None).start()
    webhooks.wait_ready()
    principals.wait_ready()
    yield webhooks, principals
    webhooks.stop()
    principals.stop()


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(writes=st.lists(st.sampled_from(["webhook", "principal", "delete"]), min_size=1, max_size=8))
def test_what_was_written_before_a_sync_is_in_both_views_after_it(
    platform: Platform, views: Views, writes: list[str]
) -> None:
    webhooks, principals = views
    expected_webhooks: dict[str, bool] = {}
    expected_principals: set[str] = set()
    for kind in writes:
        if kind == "principal":
            principal_id = f"p-{uuid.uuid4().hex[:8]}"
            platform.principal(principal_id, "acme", ["invoice.paid"])
            expected_principals.add(principal_id)
        else:
            webhook = platform.webhook(
                make_webhook("acme", "http://127.0.0.1:9/hook", ["invoice.paid"])
            )
            expected_webhooks[webhook.id] = True
            if kind == "delete":
                platform.delete_webhook(webhook.id)
                expected_webhooks[webhook.id] = False
    # Acknowledged by the broker (Platform flushes); the views' threads may not have read it.
    assert sync_views([webhooks, principals])
    for webhook_id, present in expected_webhooks.items():
        assert (webhooks.get(webhook_id) is not None) == present, webhook_id
    for principal_id in expected_principals:
        assert principals.get(principal_id) is not None, principal_id


def test_a_sync_of_a_stopped_view_says_it_could_not(views: Views) -> None:
    webhooks, principals = views
    principals.stop()
    assert not sync_views([webhooks, principals], timeout=2)
    assert sync_views([webhooks])
