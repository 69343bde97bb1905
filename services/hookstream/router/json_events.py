"""Events sent as JSON (`content-type: application/json`), decoded to the Avro `Event` shape.

Platforms that cannot write Avro publish JSON; the router reads both alike from here on.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import orjson

from hookstream.core.codec import DecodeError
from hookstream.core.records import Event
from hookstream.events.instants import InvalidInstantError, normalise_iso, parse_iso


def decode_json_event(data: bytes) -> Event:
    """Decode an event sent as JSON into the same shape as a decoded Avro `Event`."""
    try:
        loaded = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(f"event is not valid JSON: {exc}") from exc
    if not isinstance(loaded, dict):
        raise DecodeError(f"event must be a JSON object, got {_json_kind(loaded)}")
    return Event(
        id=_text_field(loaded, "id"),
        type=_text_field(loaded, "type"),
        tenant_id=_text_field(loaded, "tenant_id"),
        occurred_at=_occurred_at(loaded.get("occurred_at")),
        data=_data_text(loaded),
    )


def _text_field(event: Mapping[str, Any], field: str) -> str:
    if field not in event:
        raise DecodeError(f"event is missing field {field!r}")
    value = event[field]
    if not isinstance(value, str) or not value:
        raise DecodeError(f"event field {field!r} must be a non-empty string")
    return value


def _occurred_at(value: Any) -> str:
    if value is None:
        return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    try:
        if not isinstance(value, str):
            parse_iso(value)  # raises, naming what the value is instead
        return normalise_iso(value)
    except InvalidInstantError as exc:
        raise DecodeError(f"event field 'occurred_at' {exc}") from None


def _data_text(event: Mapping[str, Any]) -> str:
    if "data" not in event:
        raise DecodeError("event is missing field 'data'")
    payload = event["data"]
    if not isinstance(payload, dict):
        raise DecodeError(f"event field 'data' must be a JSON object, got {_json_kind(payload)}")
    try:
        return orjson.dumps(payload).decode()
    except TypeError as exc:  # orjson reads 1024 levels of nesting but writes only 254
        raise DecodeError(f"event field 'data' cannot be written as JSON: {exc}") from None


def _json_kind(value: Any) -> str:
    kinds: tuple[tuple[type, str], ...] = (
        (bool, "a boolean"),
        (dict, "an object"),
        (list, "an array"),
        (str, "a string"),
        (int, "a number"),
        (float, "a number"),
    )
    for kind, label in kinds:
        if isinstance(value, kind):
            return label
    return "null"
