"""Subscription index: which enabled webhooks of the event's tenant receive an event type."""

from __future__ import annotations

import pytest

from hookstream.core.records import Webhook
from hookstream.events.catalog import default_catalog, matches
from hookstream.router.matching import SubscriptionIndex


def hook(
    webhook_id: str, events: tuple[str, ...], tenant: str = "ten_a", *, enabled: bool = True
) -> Webhook:
    return Webhook(
        id=webhook_id,
        tenant_id=tenant,
        name=webhook_id,
        url=f"https://example.com/{webhook_id}",
        events=events,
        secrets=(),
        enabled=enabled,
    )


def ids(webhooks: list[Webhook]) -> list[str]:
    return [webhook.id for webhook in webhooks]


@pytest.fixture
def index() -> SubscriptionIndex:
    index = SubscriptionIndex()
    index.upsert(hook("wh_exact", ("invoice.paid",)))
    index.upsert(hook("wh_category", ("invoice.*",)))
    index.upsert(hook("wh_all", ("*",)))
    index.upsert(hook("wh_offer", ("offer.accepted", "offer.declined")))
    return index


def test_exact_category_and_all_subscriptions(index: SubscriptionIndex) -> None:
    assert ids(index.match("ten_a", "invoice.paid")) == ["wh_all", "wh_category", "wh_exact"]
    assert ids(index.match("ten_a", "invoice.created")) == ["wh_all", "wh_category"]
    assert ids(index.match("ten_a", "offer.declined")) == ["wh_all", "wh_offer"]
    assert ids(index.match("ten_a", "milestone.approved")) == ["wh_all"]
    assert len(index) == 4


def test_category_pattern_does_not_match_a_type_sharing_only_a_prefix() -> None:
    index = SubscriptionIndex()
    index.upsert(hook("wh_1", ("invoice.*",)))
    assert index.match("ten_a", "invoices.paid") == []
    assert index.match("ten_a", "invoice") == []


def test_tenants_are_isolated(index: SubscriptionIndex) -> None:
    index.upsert(hook("wh_b", ("invoice.paid",), tenant="ten_b"))
    assert ids(index.match("ten_b", "invoice.paid")) == ["wh_b"]
    assert "wh_b" not in ids(index.match("ten_a", "invoice.paid"))
    assert index.match("ten_unknown", "invoice.paid") == []


def test_disabled_webhook_is_not_matched(index: SubscriptionIndex) -> None:
    index.upsert(hook("wh_off", ("*",), enabled=False))
    assert "wh_off" not in ids(index.match("ten_a", "invoice.paid"))
    assert "wh_off" not in index

    current = index.get("wh_exact")
    assert current is not None
    index.upsert(current.disabled("too many failures", now_ms=1))
    assert ids(index.match("ten_a", "invoice.paid")) == ["wh_all", "wh_category"]
    assert len(index) == 3


def test_upsert_replaces_old_subscriptions(index: SubscriptionIndex) -> None:
    assert "wh_exact" in ids(index.match("ten_a", "invoice.paid"))
    index.upsert(hook("wh_exact", ("offer.created",)))
    assert "wh_exact" not in ids(index.match("ten_a", "invoice.paid"))
    assert ids(index.match("ten_a", "offer.created")) == ["wh_all", "wh_exact"]
    assert len(index) == 4


def test_upsert_moving_tenant_leaves_the_old_tenant(index: SubscriptionIndex) -> None:
    index.upsert(hook("wh_exact", ("invoice.paid",), tenant="ten_b"))
    assert "wh_exact" not in ids(index.match("ten_a", "invoice.paid"))
    assert ids(index.match("ten_b", "invoice.paid")) == ["wh_exact"]


def test_remove(index: SubscriptionIndex) -> None:
    index.remove("wh_all")
    index.remove("wh_category")
    index.remove("wh_never_added")
    assert ids(index.match("ten_a", "invoice.paid")) == ["wh_exact"]
    assert index.match("ten_a", "milestone.approved") == []
    assert len(index) == 2
    for webhook_id in ("wh_exact", "wh_offer"):
        index.remove(webhook_id)
    assert len(index) == 0
    assert index.match("ten_a", "invoice.paid") == []


def test_webhook_subscribed_several_ways_appears_once() -> None:
    index = SubscriptionIndex()
    index.upsert(hook("wh_1", ("invoice.*", "invoice.paid", "*", "invoice.paid")))
    assert ids(index.match("ten_a", "invoice.paid")) == ["wh_1"]
    index.remove("wh_1")
    assert index.match("ten_a", "invoice.paid") == []


def test_returned_list_is_the_callers_to_change(index: SubscriptionIndex) -> None:
    index.match("ten_a", "invoice.paid").clear()
    assert len(index.match("ten_a", "invoice.paid")) == 3


def test_agrees_with_the_reference_matcher() -> None:
    catalog = default_catalog()
    patterns = [
        "*",
        *(f"{category}.*" for category in sorted(catalog.categories)),
        *(event_type.type for event_type in catalog.types),
    ]
    index = SubscriptionIndex()
    webhooks = [
        hook(f"wh_{i:03d}", (patterns[i % len(patterns)], patterns[(i * 7) % len(patterns)]))
        for i in range(60)
    ]
    for webhook in webhooks:
        index.upsert(webhook)
    for event_type in catalog.types:
        expected = [w.id for w in webhooks if matches(w.events, event_type.type)]
        assert ids(index.match("ten_a", event_type.type)) == expected


def test_scale_matches_only_within_the_tenant() -> None:
    index = SubscriptionIndex()
    patterns = ("invoice.paid", "invoice.*", "*", "offer.accepted")
    for i in range(10_000):
        tenant = f"ten_{i % 100:03d}"
        pattern = patterns[i // 100 % len(patterns)]
        index.upsert(hook(f"wh_{i:05d}", (pattern,), tenant=tenant))
    assert len(index) == 10_000

    matched = index.match("ten_007", "invoice.paid")
    # 100 webhooks per tenant, a quarter on each pattern; three of the four cover invoice.paid.
    assert len(matched) == 75
    assert {webhook.tenant_id for webhook in matched} == {"ten_007"}
    assert ids(matched) == sorted(ids(matched))
    assert {webhook.id for webhook in index.match("ten_007", "offer.accepted")} == {
        f"wh_{i:05d}"
        for i in range(7, 10_000, 100)
        if patterns[i // 100 % 4] in ("*", "offer.accepted")
    }
