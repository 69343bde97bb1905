"""Periodic store upkeep: auto-disable webhooks that keep failing, and log retention."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

import orjson
from confluent_kafka import KafkaError, Message, Producer

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
# An auto-disable that keeps losing to other writers is tried again at the next run.
DISABLE_TRIES = 5


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
            if webhook is not None and not webhook.enabled and not failing.acted_on:
                self._announce_unsent(webhook, failing)
            if webhook is not None and webhook.enabled:
                since_ms = streak_start(failing, webhook)
                if since_ms > cutoff_ms:
                    recheck_ms = since_ms  # re-enabled lately: due a period after that
                # Re-enabled and not attempted since: nothing has failed since yet.
                elif failing.last_attempt_at_ms >= since_ms:
                    done = self._disable(webhook, since_ms, now_ms)
                    if done is None:
                        continue  # not settled this run: the streak stays unmarked, next run
                    if done:
                        metrics.AUTO_DISABLES.inc()
                        disabled += 1
            # Marked even when already disabled or deleted: nothing more to do this streak
            # unless the webhook is re-enabled, which the recheck finds.
            self.store.mark_auto_disabled(failing.webhook_id, failing.failing_since_ms, recheck_ms)
        return disabled

    def _disable(self, webhook: Webhook, failing_since_ms: int, now_ms: int) -> bool | None:
        """Disable `webhook` on its current version, then tell its tenant.

        True: disabled by us; False: disabled or deleted meanwhile by someone else, nothing
        left to do; None: it kept changing (or the view lags), try again next run. Only what
        the log-sink owns changes (enabled + reason, core.versions), and the event goes out
        only once our record has won: a lost race must not announce a disable that isn't.
        """
        reason = _reason(failing_since_ms)
        record = webhook.disabled(reason, now_ms)
        for _ in range(DISABLE_TRIES):
            won = self._write(record)
            if won is None:
                return None
            if won:
                # What won: after a racing change, the name and url the tenant sees now.
                self._announce(record, reason, failing_since_ms, now_ms)
                return True
            current = self.webhooks.get(webhook.id)
            if current is None or not current.enabled:
                # Our refused record is the last of its key: the state the views hold goes
                # after it (settling), so compaction keeps that.
                self._write(current, webhook.id)
                return False
            record = current.disabled(reason, now_ms)
        log.warning("log-sink: webhook %s kept changing; auto-disable tried next run", webhook.id)
        return None

    def _announce_unsent(self, webhook: Webhook, failing: FailingWebhook) -> None:
        """A webhook we disabled in this streak whose streak is unmarked: the process died
        between the two, and its notice may never have gone out. Sent (again): one event id
        per streak, so a repeat is the same event to every receiver."""
        reason = webhook.disabled_reason
        since_ms = _since_of(reason)
        if reason is not None and since_ms is not None and since_ms >= failing.failing_since_ms:
            self._announce(webhook, reason, since_ms, webhook.updated_at_ms)

    def _write(self, record: Webhook | None, webhook_id: str = "") -> bool | None:
        """Write `record` (None: a tombstone of `webhook_id`); whether the views applied it
        (None: our view has not read it yet)."""
        written: list[tuple[int, int]] = []

        def acknowledged(error: KafkaError | None, message: Message) -> None:
            if error is None:
                written.append((message.partition() or 0, message.offset() or 0))

        key_text = webhook_id if record is None else record.id
        key, value = key_text.encode(), None if record is None else self.codec.write(record)
        with self.webhooks.verdicts(key_text) as verdicts:
            self.producer.produce(
                self.topics.webhooks, key=key, value=value, on_delivery=acknowledged
            )
            if self.producer.flush(30) != 0 or not written:
                raise RuntimeError("auto-disable record was not acknowledged by Kafka")
            partition, offset = written[0]
            if not self.webhooks.wait_for_offset(partition, offset, 30):
                return None
        return verdicts.get((partition, offset), False)

    def _announce(self, webhook: Webhook, reason: str, failing_since_ms: int, now_ms: int) -> None:
        since = _iso(failing_since_ms)
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
        # Durable before the store says this streak is handled.
        if self.producer.flush(30) != 0:
            raise RuntimeError("webhook.disabled event was not acknowledged by Kafka")
        log.info("log-sink: auto-disabled webhook %s (%s)", webhook.id, reason)

    def apply_retention(self) -> int:
        cutoff_ms = int((time.time() - self.settings.log_retention) * 1000)
        deleted = self.store.delete_attempts_before(cutoff_ms)
        if deleted:
            log.info("log-sink: retention deleted %d attempts", deleted)
        return deleted


def _iso(ms: int) -> str:
    return utc_iso(datetime.fromtimestamp(ms / 1000, tz=UTC))


_REASON_PREFIX = "auto-disabled: every delivery attempt failed since "


def _reason(failing_since_ms: int) -> str:
    return _REASON_PREFIX + _iso(failing_since_ms)


def _since_of(reason: str | None) -> int | None:
    """The streak start an auto-disable reason names (None: not an auto-disable's)."""
    if reason is None or not reason.startswith(_REASON_PREFIX):
        return None
    try:
        moment = datetime.fromisoformat(reason.removeprefix(_REASON_PREFIX))
    except ValueError:
        return None
    return round(moment.timestamp() * 1000)
