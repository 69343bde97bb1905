"""Which webhooks an event goes to, found without looking at every webhook.

Webhooks are bucketed per tenant by what they subscribe to, so matching one event costs a few
dict lookups in its own tenant however many webhooks the platform holds. The result agrees
with `hookstream.events.catalog.matches`, which stays the reference definition.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hookstream.core.records import Webhook
from hookstream.events.catalog import ALL_EVENTS

_CATEGORY_SUFFIX = ".*"
# Event types are checked against the catalog before matching, so this bound is only a guard
# against a caller that feeds arbitrary types, not a working-set limit.
_MATCH_CACHE_LIMIT = 4096

_Bucket = dict[str, Webhook]


@dataclass(slots=True)
class _TenantIndex:
    exact: dict[str, _Bucket] = field(default_factory=dict)
    categories: dict[str, _Bucket] = field(default_factory=dict)
    everything: _Bucket = field(default_factory=dict)
    webhooks: int = 0
    # Results per event type; the same few types repeat for every event, so the merge and the
    # sort are paid once per tenant change instead of once per event.
    matched: dict[str, tuple[Webhook, ...]] = field(default_factory=dict)

    def add(self, pattern: str, webhook: Webhook) -> None:
        slot = self._slot(pattern)
        bucket = self.everything if slot is None else slot[0].setdefault(slot[1], {})
        bucket[webhook.id] = webhook

    def discard(self, pattern: str, webhook_id: str) -> None:
        slot = self._slot(pattern)
        if slot is None:
            self.everything.pop(webhook_id, None)
            return
        table, key = slot
        bucket = table.get(key)
        if bucket is None:
            return
        bucket.pop(webhook_id, None)
        # Drop empty buckets so churn in subscriptions does not leave the index growing.
        if not bucket:
            del table[key]

    def _slot(self, pattern: str) -> tuple[dict[str, _Bucket], str] | None:
        """The table and key holding `pattern`'s bucket; None for the everything bucket."""
        if pattern == ALL_EVENTS:
            return None
        if pattern.endswith(_CATEGORY_SUFFIX):
            return self.categories, pattern[: -len(_CATEGORY_SUFFIX)]
        return self.exact, pattern

    def collect(self, event_type: str) -> tuple[Webhook, ...]:
        found: _Bucket = dict(self.everything)
        bucket = self.exact.get(event_type)
        if bucket:
            found.update(bucket)
        # `matches` treats `<category>.*` as a prefix ending in a dot, so every dotted prefix of
        # the type is a candidate category, not only the text before the first dot.
        dot = event_type.find(".")
        while dot != -1:
            bucket = self.categories.get(event_type[:dot])
            if bucket:
                found.update(bucket)
            dot = event_type.find(".", dot + 1)
        return tuple(found[webhook_id] for webhook_id in sorted(found))


class SubscriptionIndex:
    """The enabled webhooks, indexed by tenant and subscription pattern."""

    def __init__(self) -> None:
        self._webhooks: dict[str, Webhook] = {}
        self._tenants: dict[str, _TenantIndex] = {}

    def __len__(self) -> int:
        return len(self._webhooks)

    def __contains__(self, webhook_id: object) -> bool:
        return webhook_id in self._webhooks

    def get(self, webhook_id: str) -> Webhook | None:
        return self._webhooks.get(webhook_id)

    def upsert(self, webhook: Webhook) -> None:
        """Index the latest version of a webhook; a disabled one leaves the index entirely."""
        self.remove(webhook.id)
        if not webhook.enabled:
            return
        tenant = self._tenants.get(webhook.tenant_id)
        if tenant is None:
            tenant = self._tenants[webhook.tenant_id] = _TenantIndex()
        for pattern in set(webhook.events):
            tenant.add(pattern, webhook)
        tenant.webhooks += 1
        tenant.matched.clear()
        self._webhooks[webhook.id] = webhook

    def remove(self, webhook_id: str) -> None:
        old = self._webhooks.pop(webhook_id, None)
        if old is None:
            return
        tenant = self._tenants[old.tenant_id]
        for pattern in set(old.events):
            tenant.discard(pattern, webhook_id)
        tenant.webhooks -= 1
        if tenant.webhooks:
            tenant.matched.clear()
        else:
            del self._tenants[old.tenant_id]

    def match(self, tenant_id: str, event_type: str) -> list[Webhook]:
        """The tenant's webhooks subscribed to `event_type`, each once, sorted by id."""
        tenant = self._tenants.get(tenant_id)
        if tenant is None:
            return []
        matched = tenant.matched.get(event_type)
        if matched is None:
            matched = tenant.collect(event_type)
            if len(tenant.matched) >= _MATCH_CACHE_LIMIT:
                tenant.matched.clear()
            tenant.matched[event_type] = matched
        return list(matched)
