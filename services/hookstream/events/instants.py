"""Instants at every edge: ISO 8601 text in, one canonical UTC form out, or a reason why not.

Every `occurred_at` (JSON or Avro, from Kafka or from `POST /v1/events`) goes through
`normalise_iso`, so the router and the API accept and refuse exactly the same values and
receivers see one format whatever the source.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime

# ISO 8601 with microseconds and an offset is 32 characters; anything much longer is not a
# timestamp, and refusing it early keeps a huge value out of the parser and the cache.
MAX_INSTANT_TEXT = 64


class InvalidInstantError(ValueError):
    """A value that is not an instant hookstream can carry; the message says why."""


def utc_iso(moment: datetime) -> str:
    """ISO 8601 in UTC with a `Z` suffix, keeping only the sub-second precision present.

    Raises `InvalidInstantError` for an aware moment whose UTC value falls outside the years
    1-9999 (e.g. `0001-01-01T00:00:00+01:00`), which `datetime` cannot represent.
    """
    try:
        moment = moment.astimezone(UTC)
    except OverflowError:
        raise InvalidInstantError("its UTC value falls outside the years 1-9999") from None
    micros = moment.microsecond
    if micros == 0:
        timespec = "seconds"
    elif micros % 1000 == 0:
        timespec = "milliseconds"
    else:
        timespec = "microseconds"
    return moment.replace(tzinfo=None).isoformat(timespec=timespec) + "Z"


def parse_iso(value: object) -> datetime:
    """An aware UTC datetime from ISO 8601 text; text without an offset is taken as UTC."""
    if not isinstance(value, str):
        raise InvalidInstantError(f"must be an ISO 8601 string, got {_kind(value)}")
    if len(value) > MAX_INSTANT_TEXT:
        raise InvalidInstantError(
            f"is {len(value)} characters long; an ISO 8601 timestamp has at most {MAX_INSTANT_TEXT}"
        )
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInstantError(f"is not ISO 8601: {value!r}") from None
    # A timestamp without an offset is taken as UTC, the only zone the platform speaks.
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise InvalidInstantError(
            f"{value!r} falls outside the years 1-9999 once converted to UTC"
        ) from None


# Events published together mostly share their timestamps, and parsing and re-formatting one
# was a tenth of the router's time per event. Rejections raise, so they are never cached.
@functools.lru_cache(maxsize=1024)
def normalise_iso(value: str) -> str:
    """`value` as the canonical UTC text (`...Z`) the envelope carries."""
    return utc_iso(parse_iso(value))


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, list | tuple):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
