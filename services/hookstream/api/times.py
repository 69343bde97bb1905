"""Timestamps at the API's edge: ISO 8601 or Unix milliseconds in, ISO 8601 UTC out."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import overload

from hookstream.api.errors import invalid
from hookstream.core.instants import InvalidInstantError, normalise_iso, utc_iso

# Python's datetime covers years 1..9999; anything beyond is certainly a client mistake.
_MAX_MS = 253_402_300_799_999


def now_ms() -> int:
    return int(time.time() * 1000)


@overload
def iso(ms: int) -> str: ...
@overload
def iso(ms: None) -> None: ...
@overload
def iso(ms: int | None) -> str | None: ...
def iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return utc_iso(datetime.fromtimestamp(ms / 1000, tz=UTC))


@overload
def parse_instant(field: str, value: str | int) -> int: ...
@overload
def parse_instant(field: str, value: None) -> None: ...
@overload
def parse_instant(field: str, value: str | int | None) -> int | None: ...
def parse_instant(field: str, value: str | int | None) -> int | None:
    """Unix milliseconds from `value`: an integer (or its digits) or ISO 8601 text."""
    if value is None:
        return None
    if isinstance(value, int) or value.strip().lstrip("-").isdigit():
        ms = int(value)
        if not 0 <= ms <= _MAX_MS:
            raise invalid(field, "milliseconds since the Unix epoch out of range")
        return ms
    return _parse_iso(field, value)


def _parse_iso(field: str, value: str) -> int:
    try:
        moment = datetime.fromisoformat(value.strip().replace("z", "Z"))
    except ValueError:
        raise invalid(field, f"not ISO 8601 or Unix milliseconds: {value!r}") from None
    # Without an offset the platform's only zone, UTC, is meant.
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        return int(moment.timestamp() * 1000)
    except (OverflowError, ValueError):
        raise invalid(field, f"out of range: {value!r}") from None


def normalize_iso(field: str, value: str) -> str:
    """`value` as the canonical ISO 8601 UTC text the envelope carries (the router's rule)."""
    try:
        return normalise_iso(value)
    except InvalidInstantError as exc:
        raise invalid(field, str(exc)) from None
