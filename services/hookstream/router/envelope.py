"""From a raw `events` record to the exact bytes each webhook receives.

The router turns one event into thousands of deliveries, so everything here is arranged for
the per-webhook step to be a dict lookup: the event is decoded and validated once, and each
distinct redaction of its body is serialised once and shared.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from hookstream.core.codec import Codec, DecodeError
from hookstream.core.deadletter import RejectedRecord, require_ids, require_unix_ms
from hookstream.core.records import Event
from hookstream.events.catalog import Catalog, EventType, redact
from hookstream.events.envelope import build_body
from hookstream.events.instants import InvalidInstantError, normalise_iso, parse_iso
from hookstream.router.json_events import decode_json_event

JSON_CONTENT_TYPE = "application/json"

RejectReason = Literal[
    "undecodable",
    "missing_field",
    "unknown_event_type",
    "payload_too_large",
    "invalid_field",
]
_TEXT_FIELDS = ("id", "type", "tenant_id")


@dataclass(frozen=True, slots=True)
class RoutedEvent:
    id: str
    type: str
    tenant_id: str
    occurred_at: str
    data: dict[str, Any]
    published_at_ms: int | None = None


class RejectedEvent(RejectedRecord):
    """An event the router will not deliver; `reason` is stable, `detail` is for humans."""

    def __init__(self, reason: RejectReason, detail: str) -> None:
        super().__init__(reason, detail)
        self.reason: RejectReason = reason


def parse_event(
    value: bytes | None,
    headers: Sequence[tuple[str, bytes | None]] | None,
    codec: Codec,
    catalog: Catalog,
    max_payload_bytes: int,
) -> RoutedEvent:
    """Decode and validate one `events` record (Avro, or JSON when its header says so)."""
    if value is None:
        raise RejectedEvent("undecodable", "the record has no value (a tombstone)")
    # Checked on the raw bytes, before any decoding work is spent on an oversized record.
    if len(value) > max_payload_bytes:
        raise RejectedEvent(
            "payload_too_large",
            f"the event is {len(value)} bytes, above the limit of {max_payload_bytes} bytes",
        )
    try:
        # The JSON path reads the same Event record; both are validated as decoded, before a
        # typed record is built: the router pays for one object per event, the RoutedEvent.
        if _is_json(headers):
            record = decode_json_event(value).to_record()
        else:
            record = codec.decode(Event.SCHEMA, value)
    except DecodeError as exc:
        raise RejectedEvent(_decode_reason(str(exc)), str(exc)) from None
    try:
        require_ids(record, _TEXT_FIELDS, "invalid_field")
    except RejectedRecord as exc:
        raise RejectedEvent("invalid_field", f"event {exc.detail}") from None
    event_type: str = record["type"]
    if catalog.get(event_type) is None:
        raise RejectedEvent("unknown_event_type", f"{event_type!r} is not in the event catalog")
    try:
        require_unix_ms(record, ("published_at_ms",), "invalid_field")
    except RejectedRecord as exc:
        raise RejectedEvent("invalid_field", f"event {exc.detail}") from None
    return RoutedEvent(
        id=record["id"],
        type=event_type,
        tenant_id=record["tenant_id"],
        occurred_at=_occurred_at(record["occurred_at"]),
        data=_data(record["data"]),
        published_at_ms=record["published_at_ms"],
    )


def _is_json(headers: Sequence[tuple[str, bytes | None]] | None) -> bool:
    for key, raw in headers or ():
        if key.lower() == "content-type" and raw is not None:
            # Tolerate parameters such as `; charset=utf-8`: JSON is UTF-8 either way.
            media_type = raw.split(b";", 1)[0].strip().lower()
            return media_type == JSON_CONTENT_TYPE.encode()
    return False


def _decode_reason(message: str) -> RejectReason:
    # The codec's messages are the only signal of what went wrong: "is missing field 'x'" for
    # an absent field and "event field 'x' ..." for a field present with a bad value.
    if "missing field" in message:
        return "missing_field"
    if message.startswith("event field "):
        return "invalid_field"
    return "undecodable"


def _occurred_at(value: Any) -> str:
    try:
        if not isinstance(value, str):
            parse_iso(value)  # raises, naming what the value is instead
        return normalise_iso(value)
    except InvalidInstantError as exc:
        raise RejectedEvent("invalid_field", f"event field 'occurred_at' {exc}") from None


def _data(value: Any) -> dict[str, Any]:
    # Avro carries `data` as JSON text (the schema cannot describe arbitrary objects); the JSON
    # path re-serialises it the same way, so both arrive here as text.
    if isinstance(value, str | bytes):
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            raise RejectedEvent(
                "invalid_field", f"event field 'data' is not valid JSON: {exc}"
            ) from None
    if not isinstance(value, dict):
        raise RejectedEvent("invalid_field", "event field 'data' must be a JSON object")
    return value


_Hidden = tuple[str, ...]


class EventBodies:
    """The bodies of one event for every owner visibility, each serialised once.

    Webhooks whose owners see the same fields get the very same bytes object, so fanning one
    event out to many webhooks costs one serialisation per distinct redaction.
    """

    __slots__ = ("_api_version", "_by_hidden", "_by_permissions", "event", "event_type")

    def __init__(self, event: RoutedEvent, event_type: EventType, api_version: str) -> None:
        self.event = event
        self.event_type = event_type
        self._api_version = api_version
        self._by_permissions: dict[frozenset[str] | None, bytes | None] = {}
        self._by_hidden: dict[_Hidden, bytes] = {}

    def body_for(self, permissions: frozenset[str] | None) -> bytes | None:
        """The body for an owner with `permissions`; None when the owner may not see it.

        `permissions=None` means unrestricted: a platform-level webhook with no owner. A
        webhook whose owner is set but unknown must be skipped by the caller, not passed None.
        """
        # Owners mostly share a handful of roles; frozensets cache their hash, so a repeat
        # visibility costs a dict lookup. Tested before reading rather than catching KeyError:
        # with one webhook per event the first lookup is the common case, and raising is slow.
        if permissions in self._by_permissions:
            return self._by_permissions[permissions]
        body = self._build(permissions)
        self._by_permissions[permissions] = body
        return body

    def _build(self, permissions: frozenset[str] | None) -> bytes | None:
        if permissions is None:
            return self._body((), None)
        if not self.event_type.visible_to(permissions):
            return None
        data = self.event.data
        hidden = tuple(
            name
            for name, needed in self.event_type.field_permissions.items()
            if needed not in permissions and name in data
        )
        return self._body(hidden, permissions)

    def _body(self, hidden: _Hidden, permissions: frozenset[str] | None) -> bytes:
        body = self._by_hidden.get(hidden)
        if body is None:
            data = self.event.data
            if permissions is not None and hidden:
                data = redact(data, self.event_type, permissions)
            body = build_body(self.event, data, self._api_version)
            self._by_hidden[hidden] = body
        return body


class BodyShaper:
    """Shapes event bodies per owner; holds the catalog and API version for the process."""

    __slots__ = ("api_version", "catalog")

    def __init__(self, catalog: Catalog, api_version: str) -> None:
        self.catalog = catalog
        self.api_version = api_version

    def bodies(self, event: RoutedEvent, event_type: EventType | None = None) -> EventBodies:
        """A fresh body cache for one event; look the type up when the caller has not."""
        if event_type is None:
            event_type = self.catalog.get(event.type)
            if event_type is None:
                raise RejectedEvent(
                    "unknown_event_type", f"{event.type!r} is not in the event catalog"
                )
        return EventBodies(event, event_type, self.api_version)
