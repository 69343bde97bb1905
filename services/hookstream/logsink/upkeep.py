"""Periodic store upkeep: auto-disable webhooks that keep failing, and log retention."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

import orjson
from confluent_kafka import Producer

from hookstream.core.codec import Codec
from hookstream.core.records import Event, Webhook
from hookstream.core.settings import Settings
from hookstream.core.topics import Topics
from hookstream.core.view import CompactedView
from hookstream.events.instants import utc_iso
from hookstream.logsink import metrics
from hookstream.store import FailingWebhook, Store

log = logging.getLogger(__name__)

DISABLED_EVENT_TYPE = "webhook.disabled"


def disabled_event_id(webhook_id: str, failing_since_ms: int) -> str:
    """One id per failing streak: a repeated notice is the same event to every receiver."""
    return f"evt_disabled_{webhook_id}_{failing_since_ms}"


def streak_start(failing: FailingWebhook, webhook: Webhook) -> int:
    """Since when `webhook` counts as failing for auto-disable.

    A streak already acted on and still going means the webhook was re-enabled without a fix
    (or changed): it counts from that change, the webhook's `updated_at_ms`, so a re-enabled
    webhook gets a full period again and is then disabled again, however long the streak.
    """
    if not failing.acted_on:
        return failing.failing_since_ms
    return max(failing.failing_since_ms, webhook.updated_at_ms)


class Upkeep:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        webhooks: CompactedView[Webhook],
        producer: Producer,
        codec: Codec,
    ) -> None:
        self.settings = settings
        self.store = store
        self.webhooks = webhooks
        self.producer = producer
        self.codec = codec
        self.topics = Topics.from_settings(settings)
        self._next_run = 0.0

    def run_if_due(self) -> None:
        now = time.monotonic()
        if now < self._next_run:
            return
        # The check interval never exceeds a quarter of the disable period, so a short period
        # (in tests, seconds) is honoured promptly.
        interval = min(self.settings.maintenance_interval, self.settings.auto_disable_after / 4)
        self._next_run = now + interval
        self.auto_disable()
        self.apply_retention()

    def auto_disable(self) -> int:
        now_ms = int(time.time() * 1000)
        cutoff_ms = now_ms - int(self.settings.auto_disable_after * 1000)
        disabled = 0
        for failing in self.store.webhooks_failing_since(cutoff_ms):
            webhook = self.webhooks.get(failing.webhook_id)
            # Nothing more to do until a period from now, unless the webhook is enabled.
            recheck_ms = now_ms
            if webhook is not None and webhook.enabled:
                since_ms = streak_start(failing, webhook)
                if since_ms > cutoff_ms:
                    recheck_ms = since_ms  # re-enabled lately: due a period after that
                # Re-enabled and not attempted since: nothing has failed since yet.
                elif failing.last_attempt_at_ms >= since_ms:
                    self._disable(webhook, since_ms, now_ms)
                    metrics.AUTO_DISABLES.inc()
                    disabled += 1
            # Marked even when already disabled or deleted: nothing more to do this streak
            # unless the webhook is re-enabled, which the recheck finds.
            self.store.mark_auto_disabled(failing.webhook_id, failing.failing_since_ms, recheck_ms)
        return disabled

    def _disable(self, webhook: Webhook, failing_since_ms: int, now_ms: int) -> None:
        since = _iso(failing_since_ms)
        reason = f"auto-disabled: every delivery attempt failed since {since}"
        updated = webhook.disabled(reason, now_ms)
        key = webhook.id.encode()
        self.producer.produce(self.topics.webhooks, key=key, value=self.codec.write(updated))
        data = {
            "webhook_id": webhook.id,
            "name": webhook.name,
            "url": webhook.url,
            "reason": reason,
            "failing_since": since,
            "disabled_at": _iso(now_ms),
        }
        event = Event(
            id=disabled_event_id(webhook.id, failing_since_ms),
            type=DISABLED_EVENT_TYPE,
            tenant_id=webhook.tenant_id,
            occurred_at=_iso(now_ms),
            data=orjson.dumps(data).decode(),
            published_at_ms=now_ms,
        )
        self.producer.produce(
            self.topics.events, key=webhook.tenant_id.encode(), value=self.codec.write(event)
        )
        # Both records must be durable before the store says this streak is handled.
        if self.producer.flush(30) != 0:
            raise RuntimeError("auto-disable records were not acknowledged by Kafka")
        log.info("log-sink: auto-disabled webhook %s (%s)", webhook.id, reason)

    def apply_retention(self) -> int:
        cutoff_ms = int((time.time() - self.settings.log_retention) * 1000)
        deleted = self.store.delete_attempts_before(cutoff_ms)
        if deleted:
            log.info("log-sink: retention deleted %d attempts", deleted)
        return deleted


def _iso(ms: int) -> str:
    return utc_iso(datetime.fromtimestamp(ms / 1000, tz=UTC))
