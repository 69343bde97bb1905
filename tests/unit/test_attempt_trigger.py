"""Only the attempt an operator or a test event asked for carries its trigger; its retries are
the schedule's, like any delivery's."""

from __future__ import annotations

import random

import pytest

from hookstream.core.records import Delivery, Outcome, Trigger
from hookstream.core.settings import load_settings
from hookstream.core.topics import Topics
from hookstream.sender.attempt import conclude, deferred
from hookstream.sender.outcome import HttpResult

SETTINGS = load_settings(topic_prefix="t.")
TOPICS = Topics.from_settings(SETTINGS)


def _delivery(attempt: int, trigger: Trigger) -> Delivery:
    return Delivery("dlv_1", "evt_1", "invoice.paid", "ten_1", "wh_1", b"{}", attempt, trigger, 5)


def _failed(delivery: Delivery) -> Delivery:
    """What a 503 to `delivery` leaves: its retry record, checked to be one."""
    result = HttpResult(status_code=503, duration_ms=5, error=None)
    conclusion = conclude(delivery, None, result, 1_000, SETTINGS, TOPICS, random.Random(1))
    assert conclusion.outcome is Outcome.TEMPORARY_FAILURE
    assert conclusion.attempt.trigger == delivery.trigger
    assert conclusion.retry is not None
    return conclusion.retry


@pytest.mark.parametrize("trigger", [Trigger.MANUAL, Trigger.TEST])
def test_the_retries_of_a_replay_or_a_test_are_scheduled(trigger: Trigger) -> None:
    retry = _failed(_delivery(3, trigger))
    assert (retry.attempt, retry.trigger) == (4, Trigger.SCHEDULED)
    # And the attempt the retry makes is logged as scheduled, as is the one after it.
    assert _failed(retry).trigger is Trigger.SCHEDULED


def test_a_deferred_replay_is_still_the_manual_attempt_it_was() -> None:
    later = deferred(_delivery(3, Trigger.MANUAL), TOPICS.retry_tiers[0], 6_000)
    assert (later.attempt, later.trigger) == (3, Trigger.MANUAL)
