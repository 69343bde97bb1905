"""Router envelope: parsing `events` records, delivery ids, and per-owner request bodies."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from hookstream.core.codec import Codec, default_codec
from hookstream.events.catalog import Catalog, EventType, default_catalog
from hookstream.events.envelope import build_body, delivery_id
from hookstream.router.envelope import (
    BodyShaper,
    EventBodies,
    RejectedEvent,
    RoutedEvent,
    parse_event,
)

LIMIT = 256 * 1024
JSON_HEADERS = [("Content-Type", b"application/json")]
INVOICE_DATA: dict[str, Any] = {
    "invoice_id": "inv_1",
    "amount_cents": 125000,
    "bank_details": {"iban": "DE89370400440532013000"},
    "status": "paid",
}
FULL = frozenset({"invoices:read", "invoices:read_sensitive"})
PLAIN = frozenset({"invoices:read"})


@pytest.fixture(scope="module")
def codec() -> Codec:
    return default_codec()


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return default_catalog()


def avro_event(codec: Codec, **overrides: Any) -> bytes:
    record: dict[str, Any] = {
        "id": "evt_1",
        "type": "invoice.paid",
        "tenant_id": "ten_1",
        "occurred_at": "2024-05-14T16:05:12Z",
        "data": orjson.dumps(INVOICE_DATA).decode(),
        "published_at_ms": 1_715_702_712_000,
    }
    record.update(overrides)
    return codec.encode("Event", record)


def json_event(**overrides: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "id": "evt_2",
        "type": "offer.accepted",
        "tenant_id": "ten_1",
        "occurred_at": "2024-05-14T18:05:12+02:00",
        "data": {"offer_id": "off_1"},
    }
    event.update(overrides)
    return event


def parse(
    value: bytes | None,
    codec: Codec,
    catalog: Catalog,
    headers: list[tuple[str, bytes]] | None = None,
    limit: int = LIMIT,
) -> RoutedEvent:
    return parse_event(value, headers, codec, catalog, limit)


def rejection(
    value: bytes | None,
    codec: Codec,
    catalog: Catalog,
    headers: list[tuple[str, bytes]] | None = None,
    limit: int = LIMIT,
) -> RejectedEvent:
    with pytest.raises(RejectedEvent) as caught:
        parse(value, codec, catalog, headers, limit)
    return caught.value


def invoice_type(catalog: Catalog) -> EventType:
    event_type = catalog.get("invoice.paid")
    assert event_type is not None
    return event_type


def invoice_event() -> RoutedEvent:
    return RoutedEvent(
        id="evt_1",
        type="invoice.paid",
        tenant_id="ten_1",
        occurred_at="2024-05-14T16:05:12Z",
        data=dict(INVOICE_DATA),
        published_at_ms=None,
    )


# --- parsing ---------------------------------------------------------------------------


def test_parses_avro_event(codec: Codec, catalog: Catalog) -> None:
    event = parse(avro_event(codec), codec, catalog)
    assert event == RoutedEvent(
        id="evt_1",
        type="invoice.paid",
        tenant_id="ten_1",
        occurred_at="2024-05-14T16:05:12Z",
        data=INVOICE_DATA,
        published_at_ms=1_715_702_712_000,
    )


def test_parses_json_event_chosen_by_header(codec: Codec, catalog: Catalog) -> None:
    value = orjson.dumps(json_event())
    for headers in (
        JSON_HEADERS,
        [("trace", b"x"), ("content-type", b"application/json; charset=utf-8")],
        [("CONTENT-TYPE", b"Application/JSON")],
    ):
        event = parse(value, codec, catalog, headers)
        assert event == RoutedEvent(
            id="evt_2",
            type="offer.accepted",
            tenant_id="ten_1",
            occurred_at="2024-05-14T16:05:12Z",
            data={"offer_id": "off_1"},
            published_at_ms=None,
        )


def test_without_json_header_the_value_is_read_as_avro(codec: Codec, catalog: Catalog) -> None:
    value = orjson.dumps(json_event())
    assert rejection(value, codec, catalog).reason == "undecodable"
    other = [("content-type", b"application/avro")]
    assert rejection(value, codec, catalog, other).reason == "undecodable"


def test_avro_occurred_at_is_normalised_to_utc(codec: Codec, catalog: Catalog) -> None:
    value = avro_event(codec, occurred_at="2024-05-14T18:05:12.250+02:00")
    assert parse(value, codec, catalog).occurred_at == "2024-05-14T16:05:12.250Z"


def test_tombstone_is_undecodable(codec: Codec, catalog: Catalog) -> None:
    rejected = rejection(None, codec, catalog)
    assert rejected.reason == "undecodable"
    assert "tombstone" in rejected.detail


@pytest.mark.parametrize(
    "value",
    [b"", b"garbage", b"\xc3\x01" + b"\x00" * 8 + b"body"],
    ids=["empty", "not-avro", "unknown-fingerprint"],
)
def test_bad_avro_is_undecodable(codec: Codec, catalog: Catalog, value: bytes) -> None:
    assert rejection(value, codec, catalog).reason == "undecodable"


def test_wrong_avro_record_is_undecodable(codec: Codec, catalog: Catalog) -> None:
    principal = codec.encode("Principal", {"id": "usr_1", "tenant_id": "ten_1", "permissions": []})
    rejected = rejection(principal, codec, catalog)
    assert rejected.reason == "undecodable"
    assert "Principal" in rejected.detail


@pytest.mark.parametrize("value", [b"{not json", b"[1, 2]"], ids=["malformed", "array"])
def test_bad_json_is_undecodable(codec: Codec, catalog: Catalog, value: bytes) -> None:
    assert rejection(value, codec, catalog, JSON_HEADERS).reason == "undecodable"


@pytest.mark.parametrize("field", ["id", "type", "tenant_id", "data"])
def test_json_missing_field(codec: Codec, catalog: Catalog, field: str) -> None:
    event = json_event()
    del event[field]
    rejected = rejection(orjson.dumps(event), codec, catalog, JSON_HEADERS)
    assert rejected.reason == "missing_field"
    assert field in rejected.detail


@pytest.mark.parametrize(
    ("field", "value"),
    [("id", ""), ("tenant_id", 7), ("data", [1]), ("data", "text"), ("occurred_at", "noon")],
)
def test_json_invalid_field(codec: Codec, catalog: Catalog, field: str, value: Any) -> None:
    rejected = rejection(orjson.dumps(json_event(**{field: value})), codec, catalog, JSON_HEADERS)
    assert rejected.reason == "invalid_field"
    assert field in rejected.detail


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("id", ""),
        ("tenant_id", ""),
        ("data", "[1, 2]"),
        ("data", "{broken"),
        ("occurred_at", ""),
        ("occurred_at", "yesterday"),
    ],
)
def test_avro_invalid_field(codec: Codec, catalog: Catalog, field: str, value: str) -> None:
    rejected = rejection(avro_event(codec, **{field: value}), codec, catalog)
    assert rejected.reason == "invalid_field"
    assert field in rejected.detail


def test_unknown_event_type(codec: Codec, catalog: Catalog) -> None:
    rejected = rejection(avro_event(codec, type="invoice.lost"), codec, catalog)
    assert rejected.reason == "unknown_event_type"
    assert "invoice.lost" in rejected.detail
    value = orjson.dumps(json_event(type="nope"))
    assert rejection(value, codec, catalog, JSON_HEADERS).reason == "unknown_event_type"


def test_oversize_is_rejected_before_decoding(codec: Codec, catalog: Catalog) -> None:
    value = avro_event(codec)
    limit = len(value) - 1
    rejected = rejection(value, codec, catalog, limit=limit)
    assert rejected.reason == "payload_too_large"
    assert str(len(value)) in rejected.detail
    assert str(limit) in rejected.detail
    assert str(rejected).startswith("payload_too_large: ")
    # Size comes first: undecodable bytes over the limit still report the size.
    assert rejection(b"x" * (limit + 1), codec, catalog, limit=limit).reason == (
        "payload_too_large"
    )
    # Exactly at the limit is accepted.
    assert parse(value, codec, catalog, limit=len(value)).id == "evt_1"


# --- delivery ids ----------------------------------------------------------------------


def test_delivery_id_is_deterministic_and_distinct() -> None:
    first = delivery_id("evt_1", "wh_1")
    assert first == delivery_id("evt_1", "wh_1")
    assert first.startswith("dlv_")
    assert len(first) == len("dlv_") + 32
    assert first[4:] == first[4:].lower()
    assert first[4:].isalnum()
    others = {
        delivery_id("evt_1", "wh_2"),
        delivery_id("evt_2", "wh_1"),
        # The separator keeps shifted boundaries apart.
        delivery_id("evt_1w", "h_1"),
        delivery_id("evt_1", "wh_1 "),
    }
    assert first not in others
    assert len(others) == 4


def test_delivery_ids_do_not_collide_over_many_pairs() -> None:
    ids = {delivery_id(f"evt_{e}", f"wh_{w}") for e in range(100) for w in range(100)}
    assert len(ids) == 10_000


# --- bodies ----------------------------------------------------------------------------


def test_build_body_exact_bytes_and_key_order() -> None:
    event = RoutedEvent(
        id="evt_1",
        type="offer.accepted",
        tenant_id="ten_1",
        occurred_at="2024-05-14T16:05:12Z",
        data={"z": 1, "a": [True, None]},
        published_at_ms=None,
    )
    body = build_body(event, event.data, "v4")
    assert body == (
        b'{"id":"evt_1","type":"offer.accepted","occurred_at":"2024-05-14T16:05:12Z",'
        b'"api_version":"v4","data":{"z":1,"a":[true,null]}}'
    )
    assert list(orjson.loads(body)) == ["id", "type", "occurred_at", "api_version", "data"]
    assert "tenant_id" not in orjson.loads(body)


def test_full_permissions_get_the_whole_payload(catalog: Catalog) -> None:
    event = invoice_event()
    bodies = EventBodies(event, invoice_type(catalog), "v1")
    body = bodies.body_for(FULL)
    assert body == build_body(event, INVOICE_DATA, "v1")


def test_redaction_removes_bank_details_without_sensitive_permission(catalog: Catalog) -> None:
    event = invoice_event()
    bodies = EventBodies(event, invoice_type(catalog), "v1")
    body = bodies.body_for(PLAIN)
    assert body is not None
    data = orjson.loads(body)["data"]
    assert "bank_details" not in data
    assert data == {k: v for k, v in INVOICE_DATA.items() if k != "bank_details"}
    # The event itself is untouched for the webhooks that may see everything.
    assert "bank_details" in event.data


def test_owner_without_resource_permission_gets_nothing(catalog: Catalog) -> None:
    bodies = EventBodies(invoice_event(), invoice_type(catalog), "v1")
    assert bodies.body_for(frozenset({"offers:read", "invoices:read_sensitive"})) is None
    assert bodies.body_for(frozenset()) is None


def test_unrestricted_webhook_gets_the_full_payload(catalog: Catalog) -> None:
    event = invoice_event()
    bodies = EventBodies(event, invoice_type(catalog), "v1")
    unrestricted = bodies.body_for(None)
    assert unrestricted == build_body(event, INVOICE_DATA, "v1")
    # Same visible fields as a fully permitted owner, hence the same bytes object.
    assert bodies.body_for(FULL) is unrestricted


def test_type_without_permission_is_visible_to_anyone(catalog: Catalog) -> None:
    event_type = catalog.get("webhook.test")
    assert event_type is not None
    event = RoutedEvent("evt_t", "webhook.test", "ten_1", "2024-05-14T16:05:12Z", {"test": True})
    assert EventBodies(event, event_type, "v1").body_for(frozenset()) is not None


def test_identical_visibility_shares_the_same_bytes(catalog: Catalog) -> None:
    bodies = EventBodies(invoice_event(), invoice_type(catalog), "v1")
    plain = bodies.body_for(PLAIN)
    # A different permission set with the same visible fields must not re-serialise.
    wider = bodies.body_for(frozenset({"invoices:read", "offers:read", "milestones:read"}))
    full = bodies.body_for(FULL)
    assert plain is not None and full is not None
    assert wider is plain
    assert bodies.body_for(frozenset(PLAIN)) is plain
    assert full is not plain
    assert bodies.body_for(frozenset({"invoices:read_sensitive", "invoices:read"})) is full


def test_field_absent_from_data_does_not_split_visibility(catalog: Catalog) -> None:
    data = {k: v for k, v in INVOICE_DATA.items() if k != "bank_details"}
    event = RoutedEvent("evt_3", "invoice.paid", "ten_1", "2024-05-14T16:05:12Z", data)
    bodies = EventBodies(event, invoice_type(catalog), "v1")
    assert bodies.body_for(PLAIN) is bodies.body_for(FULL)


def test_body_shaper_shares_bytes_within_one_event(catalog: Catalog) -> None:
    shaper = BodyShaper(catalog, "v4")
    event_type = invoice_type(catalog)
    cache = shaper.bodies(invoice_event(), event_type)
    bodies = [cache.body_for(PLAIN) for _ in range(1000)]
    assert all(body is bodies[0] for body in bodies)
    assert bodies[0] is not None
    assert orjson.loads(bodies[0])["api_version"] == "v4"
    assert cache.body_for(frozenset()) is None

    body = shaper.bodies(invoice_event(), event_type).body_for(PLAIN)
    assert body == bodies[0]
    assert body is not bodies[0]


def test_body_shaper_builds_per_event_caches(catalog: Catalog) -> None:
    shaper = BodyShaper(catalog, "v1")
    bodies = shaper.bodies(invoice_event())
    assert bodies.event_type is invoice_type(catalog)
    assert bodies.body_for(PLAIN) is bodies.body_for(PLAIN)
    unknown = RoutedEvent("evt_x", "nope.nope", "ten_1", "2024-05-14T16:05:12Z", {})
    with pytest.raises(RejectedEvent) as caught:
        shaper.bodies(unknown)
    assert caught.value.reason == "unknown_event_type"


def test_parsed_event_body_round_trips(codec: Codec, catalog: Catalog) -> None:
    event = parse(avro_event(codec), codec, catalog)
    body = BodyShaper(catalog, "v1").bodies(event).body_for(FULL)
    assert body is not None
    assert orjson.loads(body) == {
        "id": "evt_1",
        "type": "invoice.paid",
        "occurred_at": "2024-05-14T16:05:12Z",
        "api_version": "v1",
        "data": INVOICE_DATA,
    }
