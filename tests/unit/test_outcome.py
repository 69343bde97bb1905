"""The SPEC outcome table and the retry delay: schedule, jitter, Retry-After clamp."""

from __future__ import annotations

import random
import statistics
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest

from hookstream.core.settings import DEFAULT_RETRY_SCHEDULE
from hookstream.sender.outcome import (
    HttpResult,
    Outcome,
    classify,
    parse_retry_after,
    retry_delay,
)


def _result(status: int | None, *, refused: bool = False) -> HttpResult:
    return HttpResult(
        status_code=status,
        duration_ms=12,
        error=None if status is not None else "timeout after 30.0 s",
        response_body=None,
        retry_after=None,
        refused=refused,
    )


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (200, Outcome.SUCCESS),
        (204, Outcome.SUCCESS),
        (299, Outcome.SUCCESS),
        (301, Outcome.TEMPORARY_FAILURE),
        (302, Outcome.TEMPORARY_FAILURE),
        (400, Outcome.PERMANENT_FAILURE),
        (401, Outcome.PERMANENT_FAILURE),
        (404, Outcome.PERMANENT_FAILURE),
        (408, Outcome.TEMPORARY_FAILURE),
        (410, Outcome.PERMANENT_FAILURE),
        (422, Outcome.PERMANENT_FAILURE),
        (429, Outcome.TEMPORARY_FAILURE),
        (500, Outcome.TEMPORARY_FAILURE),
        (503, Outcome.TEMPORARY_FAILURE),
        (None, Outcome.TEMPORARY_FAILURE),
    ],
)
def test_outcome_table(status: int | None, expected: Outcome) -> None:
    assert classify(_result(status)) is expected


def test_refused_destination_is_never_retried() -> None:
    assert classify(_result(None, refused=True)) is Outcome.REFUSED


def test_outcome_values_are_stable_strings() -> None:
    assert [o.value for o in Outcome] == [
        "success",
        "temporary_failure",
        "permanent_failure",
        "exhausted",
        "skipped",
        "refused",
    ]


def test_delays_follow_the_default_schedule_within_jitter() -> None:
    rng = random.Random(7)
    for attempt, base in enumerate(DEFAULT_RETRY_SCHEDULE, start=1):
        for _ in range(200):
            delay = retry_delay(DEFAULT_RETRY_SCHEDULE, attempt, 0.2, None, 500, rng)
            assert delay is not None
            assert base * 0.8 <= delay <= base * 1.2, (attempt, delay)


def test_exhausted_after_the_last_scheduled_delay() -> None:
    rng = random.Random(1)
    last = len(DEFAULT_RETRY_SCHEDULE)
    assert retry_delay(DEFAULT_RETRY_SCHEDULE, last, 0.2, None, 500, rng) is not None
    assert retry_delay(DEFAULT_RETRY_SCHEDULE, last + 1, 0.2, None, 500, rng) is None
    assert retry_delay((), 1, 0.2, None, 500, rng) is None


def test_attempt_number_is_one_based() -> None:
    with pytest.raises(ValueError, match="1-based"):
        retry_delay(DEFAULT_RETRY_SCHEDULE, 0, 0.2, None, 500, random.Random(1))


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_is_clamped_to_schedule_and_double(status: int) -> None:
    rng = random.Random(3)
    schedule = (300.0, 1800.0)
    assert retry_delay(schedule, 1, 0.2, 7.0, status, rng) == 300.0
    assert retry_delay(schedule, 1, 0.2, 450.0, status, rng) == 450.0
    assert retry_delay(schedule, 1, 0.2, 10_000.0, status, rng) == 600.0
    assert retry_delay(schedule, 2, 0.2, 0.0, status, rng) == 1800.0


@pytest.mark.parametrize("status", [500, 502, 408, None])
def test_retry_after_ignored_for_other_statuses(status: int | None) -> None:
    rng = random.Random(3)
    delay = retry_delay((300.0,), 1, 0.2, 10_000.0, status, rng)
    assert delay is not None
    assert 240.0 <= delay <= 360.0


def test_seeded_rng_is_deterministic() -> None:
    def run(seed: int) -> list[float | None]:
        rng = random.Random(seed)
        return [retry_delay(DEFAULT_RETRY_SCHEDULE, n, 0.2, None, 500, rng) for n in range(1, 10)]

    assert run(42) == run(42)
    assert run(42) != run(43)


def test_jitter_actually_spreads_delays() -> None:
    rng = random.Random(11)
    delays = [retry_delay((1000.0,), 1, 0.2, None, 500, rng) for _ in range(2000)]
    values = [d for d in delays if d is not None]
    assert len(set(values)) > 1900
    assert min(values) < 820.0
    assert max(values) > 1180.0
    assert statistics.mean(values) == pytest.approx(1000.0, rel=0.02)
    # Uniform over [800, 1200] has a standard deviation of 400 / sqrt(12) ≈ 115.
    assert statistics.pstdev(values) == pytest.approx(115.5, rel=0.1)


def test_zero_jitter_gives_the_exact_schedule() -> None:
    rng = random.Random(5)
    got = [retry_delay((5.0, 300.0), n, 0.0, None, 500, rng) for n in (1, 2)]
    assert got == [5.0, 300.0]


def test_parse_retry_after() -> None:
    now = 1_700_000_000.0
    later = datetime.fromtimestamp(now + 120, tz=UTC)
    assert parse_retry_after("7", now) == 7.0
    assert parse_retry_after(" 0 ", now) == 0.0
    assert parse_retry_after(format_datetime(later, usegmt=True), now) == pytest.approx(120.0)
    assert parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now) == 0.0
    assert parse_retry_after(None, now) is None
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after("-5", now) is None
    assert parse_retry_after("1.5", now) is None
