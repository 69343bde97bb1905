"""Every `occurred_at` is parsed once into a UTC instant, or refused with a reason."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from hookstream.events.instants import InvalidInstantError, normalise_iso, parse_iso

# Real offsets are whole minutes, up to a day either way.
OFFSETS = st.integers(min_value=-(24 * 60 - 1), max_value=24 * 60 - 1).map(
    lambda minutes: timedelta(minutes=minutes)
)


@given(st.datetimes(), OFFSETS, st.sampled_from(["seconds", "milliseconds", "microseconds"]))
@example(datetime(1, 1, 1), timedelta(hours=1), "seconds")  # the one that stopped all routing
@example(datetime(9999, 12, 31, 23, 59, 59), timedelta(hours=-1), "seconds")
def test_any_iso_text_is_one_utc_instant_or_refused(
    moment: datetime, offset: timedelta, timespec: str
) -> None:
    text = moment.replace(tzinfo=timezone(offset)).isoformat(timespec=timespec)
    try:
        normalised = normalise_iso(text)
    except InvalidInstantError as exc:
        # Refused only when the UTC value is beyond what a datetime can hold.
        assert "years 1-9999" in str(exc)
        with pytest.raises(OverflowError):
            moment.replace(tzinfo=timezone(offset)).astimezone(UTC)
        return
    assert normalised.endswith("Z")
    assert parse_iso(normalised) == datetime.fromisoformat(text)  # the same instant


@given(st.text(max_size=80))
def test_arbitrary_text_is_an_instant_or_refused_with_a_reason(text: str) -> None:
    try:
        normalised = normalise_iso(text)
    except InvalidInstantError as exc:
        assert str(exc)
    else:
        assert normalise_iso(normalised) == normalised


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "got null"),
        (1_700_000_000, "got a number"),
        (True, "got a boolean"),
        (["2026-01-01"], "got an array"),
        ("0001-01-01T00:00:00+01:00", "years 1-9999"),
        ("9999-12-31T23:59:59-01:00", "years 1-9999"),
        ("2026-02-30T00:00:00Z", "not ISO 8601"),
        ("2" * 65, "at most 64"),
    ],
)
def test_refusals_say_why(value: object, reason: str) -> None:
    with pytest.raises(InvalidInstantError, match=reason):
        parse_iso(value)


def test_naive_text_is_taken_as_utc() -> None:
    assert normalise_iso("2026-12-03T10:00:00") == "2026-12-03T10:00:00Z"
    assert normalise_iso("2026-12-03T11:00:00.250+01:00") == "2026-12-03T10:00:00.250Z"
