"""What one attempt leaves behind: its log record, and the retry, dead letter or webhook update.

Pure functions of the attempt's facts, so the whole outcome table is unit-testable without
Kafka or HTTP.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from enum import Enum
from typing import Literal

from hookstream.core.records import Attempt, Delivery, Outcome, Retry, Trigger, Webhook
from hookstream.core.settings import Settings
from hookstream.core.topics import RetryTier, Topics
from hookstream.sender.outcome import HttpResult, classify, retry_delay


class _Unchanged(Enum):
    TOKEN = 0


# `conclude(webhook_now=...)` default: the webhook did not change during the attempt.
UNCHANGED: Literal[_Unchanged.TOKEN] = _Unchanged.TOKEN


@dataclass(frozen=True, slots=True)
class Source:
    """Where the delivery record was read from."""

    topic: str
    partition: int
    offset: int
    # When it was appended (its Kafka timestamp), if known: see sender/absence.py.
    appended_at_ms: int | None = None


@dataclass(frozen=True, slots=True)
class Conclusion:
    outcome: Outcome
    attempt: Attempt
    retry_topic: str | None = None
    retry: Retry | None = None
    dead_letter_reason: str | None = None
    disabled_webhook: Webhook | None = None


def new_attempt_id() -> str:
    """One id per request made (or decided against), never derived from the record.

    A record redone after a crash makes its request again, and may get another answer (a
    503, then a 204): that is a second attempt. Were its id the first one's, the store,
    which keeps an attempt once by its id, would hold the first answer alone, and a
    delivery the endpoint took would read as failed. The same attempt *record* read twice
    (a consumer's redo) still carries one id.
    """
    return "att_" + uuid.uuid4().hex


def conclude(
    delivery: Delivery,
    webhook: Webhook | None,
    result: HttpResult | None,
    started_at_ms: int,
    settings: Settings,
    topics: Topics,
    rng: random.Random,
    skip_reason: str | None = None,
    webhook_now: Webhook | Literal[_Unchanged.TOKEN] | None = UNCHANGED,
) -> Conclusion:
    """Everything that follows an attempt. `result` is None when no request was made.

    `webhook` is the configuration the attempt used; `webhook_now` the one current when it
    ended. A 410 disables the current one, so a change made while the request was in flight
    (a new secret, a new name) is kept, a webhook deleted meanwhile stays deleted and one
    disabled meanwhile keeps its reason.
    """
    current = webhook if webhook_now is UNCHANGED else webhook_now
    number = delivery.attempt
    if result is None:
        outcome = Outcome.SKIPPED
        result = HttpResult(status_code=None, duration_ms=0, error=skip_reason)
    else:
        outcome = classify(result)
    retry_topic: str | None = None
    retry: Retry | None = None
    next_attempt_at_ms: int | None = None
    dead_letter_reason: str | None = None
    disabled: Webhook | None = None

    if outcome is Outcome.TEMPORARY_FAILURE:
        delay = retry_delay(
            settings.retry_schedule,
            number,
            settings.retry_jitter,
            result.retry_after,
            result.status_code,
            rng,
        )
        if delay is None:
            outcome = Outcome.EXHAUSTED
            dead_letter_reason = "exhausted"
        else:
            tier = topics.retry_tiers[number - 1]
            next_attempt_at_ms = started_at_ms + result.duration_ms + round(delay * 1000)
            retry_topic = tier.topic
            retry = delivery.retry(number + 1, next_attempt_at_ms, tier.name)
    elif outcome is Outcome.PERMANENT_FAILURE:
        dead_letter_reason = "permanent_failure"
        # Already disabled (by its owner, or by a concurrent 410): its reason stays.
        if result.status_code == 410 and current is not None and current.enabled:
            disabled = current.disabled(
                f"endpoint answered 410 Gone on delivery {delivery.delivery_id}",
                started_at_ms + result.duration_ms,
            )
    elif outcome is Outcome.REFUSED:
        dead_letter_reason = "destination_refused"

    attempt = Attempt(
        attempt_id=new_attempt_id(),
        delivery_id=delivery.delivery_id,
        event_id=delivery.event_id,
        webhook_id=delivery.webhook_id,
        tenant_id=delivery.tenant_id,
        event_type=delivery.event_type,
        attempt_number=number,
        trigger=delivery.trigger,
        url=webhook.url if webhook is not None else "",
        started_at_ms=started_at_ms,
        duration_ms=result.duration_ms,
        status_code=result.status_code,
        outcome=outcome,
        error=result.error,
        response_body=result.response_body,
        next_attempt_at_ms=next_attempt_at_ms,
        webhook_disabled=disabled is not None,
        # Later attempts repeat the same bytes; the store keeps them from the first.
        body=delivery.body if number == 1 or delivery.trigger is not Trigger.SCHEDULED else None,
    )
    return Conclusion(outcome, attempt, retry_topic, retry, dead_letter_reason, disabled)


def deferred(delivery: Delivery, tier: RetryTier, due_at_ms: int) -> Retry:
    """The retry record that puts off an attempt not yet made (the slow lane was full, or
    its webhook's limits hold back as many as may wait), due at `due_at_ms`.

    It asks for the same attempt number again, so deferring never uses up an attempt, and
    keeps its trigger: a deferred replay is still the manual attempt.
    """
    return delivery.retry(delivery.attempt, due_at_ms, tier.name, delivery.trigger)
