"""Timestamps at the API's edge: ISO 8601 or Unix milliseconds in, ISO 8601 UTC out."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta
from typing import overload

from hookstream.api.errors import invalid
from hookstream.core.records import MAX_UNIX_MS
from hookstream.events.instants import (
    InvalidInstantError,
    normalise_iso,
    parse_iso,
    utc_iso,
)

# Unix milliseconds as text: ASCII digits only (str.isdigit() also takes "²" and "٣").
_MS_TEXT = re.compile(r"-?[0-9]+", re.ASCII)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)


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
    """Unix milliseconds from `value`: an integer (or its ASCII digits) or ISO 8601 text."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise invalid(field, "must be ISO 8601 text or Unix milliseconds, not a boolean")
    if isinstance(value, int):
        return _in_range(field, value)
    text = value.strip()
    if _MS_TEXT.fullmatch(text):
        negative = text.startswith("-")
        digits = text.lstrip("-").lstrip("0") or "0"
        # More digits than the largest instant has can only be out of range, and are not
        # converted: int() refuses text beyond 4,300 digits.
        if len(digits) > len(str(MAX_UNIX_MS)):
            raise invalid(field, "milliseconds since the Unix epoch out of range")
        return _in_range(field, -int(digits) if negative else int(digits))
    return _parse_iso(field, text)


def _in_range(field: str, ms: int) -> int:
    if not 0 <= ms <= MAX_UNIX_MS:
        raise invalid(field, "milliseconds since the Unix epoch out of range")
    return ms


def _parse_iso(field: str, text: str) -> int:
    # A lower-case `z` has always been accepted here, unlike by datetime.fromisoformat.
    candidate = text[:-1] + "Z" if text.endswith("z") else text
    try:
        # The shared parser: text without an offset is UTC, and a moment whose UTC value
        # falls outside the years 1-9999 is refused rather than overflowing.
        moment = parse_iso(candidate)
    except InvalidInstantError as exc:
        raise invalid(field, f"{exc}; expected ISO 8601 or Unix milliseconds") from None
    return (moment - _EPOCH) // _ONE_MS


def normalize_iso(field: str, value: str) -> str:
    """`value` as the canonical ISO 8601 UTC text the envelope carries (the router's rule)."""
    try:
        return normalise_iso(value)
    except InvalidInstantError as exc:
        raise invalid(field, str(exc)) from None
