"""Avro single-object codec and JSON event decoding."""

from __future__ import annotations

import contextlib
import json
import random
from io import BytesIO
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastavro import parse_schema, schemaless_writer

from hookstream.core import resources
from hookstream.core.codec import (
    HEADER_SIZE,
    MAGIC,
    Codec,
    DecodeError,
    default_codec,
    schema_fingerprint,
)
from hookstream.core.records import Event, Webhook
from hookstream.core.resources import schemas_dir
from hookstream.router.json_events import decode_json_event

SCHEMAS = schemas_dir()

ATTEMPT: dict[str, Any] = {
    "attempt_id": "att_1",
    "delivery_id": "dlv_1",
    "event_id": "evt_1",
    "webhook_id": "wh_1",
    "tenant_id": "ten_1",
    "event_type": "invoice.paid",
    "attempt_number": 2,
    "trigger": "scheduled",
    "url": "https://example.com/hooks",
    "started_at_ms": 1_714_000_000_000,
    "duration_ms": 153,
    "status_code": 503,
    "outcome": "temporary_failure",
    "error": "HTTP 503",
    "response_body": "unavailable",
    "next_attempt_at_ms": 1_714_000_300_000,
    "webhook_disabled": False,
    "body": None,
}

DELIVERY: dict[str, Any] = {
    "delivery_id": "dlv_1",
    "event_id": "evt_1",
    "event_type": "invoice.paid",
    "tenant_id": "ten_1",
    "webhook_id": "wh_1",
    "body": b'{"id":"evt_1","type":"invoice.paid"}',
    "attempt": 1,
    "trigger": "scheduled",
    "due_at_ms": 0,
    "created_at_ms": 1_714_000_000_000,
    "first_attempt_at_ms": None,
}

RECORDS: list[tuple[str, dict[str, Any]]] = [
    (
        "Event",
        {
            "id": "evt_1",
            "type": "invoice.paid",
            "tenant_id": "ten_1",
            "occurred_at": "2024-05-01T12:00:00Z",
            "data": '{"invoice_id":"inv_1","amount_cents":1200}',
            "published_at_ms": None,
        },
    ),
    (
        "Event",
        {
            "id": "evt_2",
            "type": "offer.accepted",
            "tenant_id": "ten_1",
            "occurred_at": "2024-05-01T12:00:00.250Z",
            "data": "{}",
            "published_at_ms": 1_714_564_800_250,
        },
    ),
    (
        "Webhook",
        {
            "id": "wh_1",
            "tenant_id": "ten_1",
            "name": "Accounting",
            "url": "https://example.com/hooks",
            "description": None,
            "events": ["invoice.*", "offer.accepted"],
            "enabled": True,
            "owner_id": None,
            "secrets": [{"value": "enc:abc", "not_after_ms": None}],
            "disabled_reason": None,
            "created_at_ms": 1,
            "updated_at_ms": 2,
            "version": 1,
            "max_concurrency": None,
            "rate_limit": None,
            "timeout_seconds": None,
            "headers": [],
        },
    ),
    (
        "Webhook",
        {
            "id": "wh_2",
            "tenant_id": "ten_1",
            "name": "Gone",
            "url": "https://example.org/x",
            "description": "was rotated",
            "events": [],
            "enabled": False,
            "owner_id": "usr_1",
            "secrets": [
                {"value": "enc:new", "not_after_ms": None},
                {"value": "enc:old", "not_after_ms": 1_714_000_000_000},
            ],
            "disabled_reason": "endpoint returned 410 Gone",
            "created_at_ms": 1,
            "updated_at_ms": 3,
            "version": 7,
            "max_concurrency": 64,
            "rate_limit": 12.5,
            "timeout_seconds": 5,
            "headers": [
                {"name": "X-Tenant", "value": "acme", "sensitive": False},
                {"name": "Authorization", "value": "enc:v1:k:abc", "sensitive": True},
            ],
        },
    ),
    ("Principal", {"id": "usr_1", "tenant_id": "ten_1", "permissions": ["invoices:read"]}),
    ("Principal", {"id": "usr_2", "tenant_id": "ten_1", "permissions": []}),
    ("Delivery", DELIVERY),
    ("Delivery", {**DELIVERY, "attempt": 3, "trigger": "manual", "first_attempt_at_ms": 5}),
    (
        "Retry",
        {
            **DELIVERY,
            "attempt": 2,
            "due_at_ms": 1_714_000_005_000,
            "first_attempt_at_ms": 1_714_000_000_100,
            "tier": "5s",
            "previous_status_code": 503,
            "previous_error": "HTTP 503",
        },
    ),
    (
        "Retry",
        {
            **DELIVERY,
            "attempt": 3,
            "tier": "5m",
            "previous_status_code": None,
            "previous_error": "connection refused",
        },
    ),
    (
        "DeadLetter",
        {
            "reason": "undecodable",
            "detail": "not Avro single-object encoding",
            "source_topic": "hookstream.events",
            "source_partition": 3,
            "source_offset": 1_234_567,
            "key": None,
            "value": b"\x00\xffgarbage",
            "webhook_id": None,
            "delivery_id": None,
            "event_id": None,
            "failed_at_ms": 1_714_000_000_000,
            "error_type": "DecodeError",
            "service": "router",
            "headers": [
                {"key": "content-type", "value": b"application/json"},
                {"key": "trace", "value": None},
            ],
        },
    ),
    (
        "DeadLetter",
        {
            "reason": "exhausted",
            "detail": "10 attempts failed",
            "source_topic": "hookstream.retry.24h",
            "source_partition": 0,
            "source_offset": 7,
            "key": b"wh_1",
            "value": b"\xc3\x01...",
            "webhook_id": "wh_1",
            "delivery_id": "dlv_1",
            "event_id": "evt_1",
            "failed_at_ms": 1_714_000_000_000,
            "error_type": None,
            "service": "sender",
            "headers": [],
        },
    ),
    ("Attempt", ATTEMPT),
    (
        "Attempt",
        {
            **ATTEMPT,
            "status_code": None,
            "outcome": "permanent_failure",
            "error": None,
            "response_body": None,
            "next_attempt_at_ms": None,
            "webhook_disabled": True,
            "body": b'{"id": "evt_1"}',
        },
    ),
]


@pytest.fixture(scope="module")
def codec() -> Codec:
    return Codec.load()


def _load(relative: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((SCHEMAS / relative).read_text())
    return loaded


def _event_bytes(codec: Codec) -> bytes:
    return codec.encode("Event", RECORDS[0][1])


@pytest.mark.parametrize(
    ("name", "record"), RECORDS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(RECORDS)]
)
def test_every_record_type_round_trips(codec: Codec, name: str, record: dict[str, Any]) -> None:
    assert codec.decode(name, codec.encode(name, record)) == record


def test_codec_knows_every_record_type(codec: Codec) -> None:
    expected = {"Event", "Webhook", "Principal", "Delivery", "Retry", "DeadLetter", "Attempt"}
    assert codec.names == expected
    assert {name for name, _ in RECORDS} == expected


def test_header_is_magic_and_fingerprint(codec: Codec) -> None:
    encoded = _event_bytes(codec)
    assert encoded[:2] == b"\xc3\x01" == MAGIC
    assert encoded[2:HEADER_SIZE] == codec.fingerprint("Event")
    assert codec.fingerprint("Event") == schema_fingerprint(_load("event.avsc"))
    assert _event_bytes(codec) == encoded
    assert Codec.load().encode("Event", RECORDS[0][1]) == encoded


def test_fingerprint_is_little_endian_crc64_avro() -> None:
    # The Avro reference implementations give 0x7275d51a3f395c8f for the schema "int".
    assert schema_fingerprint("int") == (0x7275D51A3F395C8F).to_bytes(8, "little")


def test_fingerprints_are_distinct_across_versions(codec: Codec) -> None:
    current = [codec.fingerprint(name) for name in codec.names]
    history = schema_fingerprint(_load("history/attempt.v1.avsc"))
    assert len(set(current)) == len(current)
    assert history not in current


def test_old_attempt_decodes_with_current_reader(codec: Codec) -> None:
    old_schema = _load("history/attempt.v1.avsc")
    old_record = {
        key: value
        for key, value in ATTEMPT.items()
        if key not in ("next_attempt_at_ms", "webhook_disabled", "body")
    }
    body = BytesIO()
    schemaless_writer(body, parse_schema(old_schema), old_record)
    old_bytes = MAGIC + schema_fingerprint(old_schema) + body.getvalue()

    decoded = codec.decode("Attempt", old_bytes)

    assert decoded == {
        **old_record,
        "next_attempt_at_ms": None,
        "webhook_disabled": False,
        "body": None,
    }
    assert codec.identify(old_bytes) == "Attempt"


# Fields each older webhook schema lacks, with the value the current reader gives them.
_SETTINGS_DEFAULTS = {
    "max_concurrency": None,
    "rate_limit": None,
    "timeout_seconds": None,
    "headers": [],
}
_WEBHOOK_HISTORY = [
    ("history/webhook.v1.avsc", {"version": 0, **_SETTINGS_DEFAULTS}),
    ("history/webhook.v2.avsc", _SETTINGS_DEFAULTS),
]


@pytest.mark.parametrize(("schema_file", "defaults"), _WEBHOOK_HISTORY)
def test_old_webhook_decodes_with_the_defaults_of_newer_fields(
    codec: Codec, schema_file: str, defaults: dict[str, Any]
) -> None:
    """A webhook written before versions (v1) reads as version 0 (core.versions); one written
    before delivery settings (v2) as adaptive, unlimited, the global timeout, no headers."""
    old_schema = _load(schema_file)
    [old_record] = [
        {key: value for key, value in record.items() if key not in defaults}
        for name, record in RECORDS
        if name == "Webhook" and record["id"] == "wh_2"
    ]
    body = BytesIO()
    schemaless_writer(body, parse_schema(old_schema), old_record)
    old_bytes = MAGIC + schema_fingerprint(old_schema) + body.getvalue()

    assert codec.decode("Webhook", old_bytes) == {**old_record, **defaults}
    webhook = codec.read(Webhook, old_bytes)
    assert webhook.version == old_record.get("version", 0)
    assert (webhook.max_concurrency, webhook.headers) == (None, ())


def test_old_dead_letter_decodes_with_current_reader(codec: Codec) -> None:
    old_schema = _load("history/dead_letter.v1.avsc")
    old_record = {
        "reason": "undecodable",
        "detail": "not Avro",
        "source_topic": "hookstream.events",
        "source_partition": 1,
        "source_offset": 9,
        "key": None,
        "value": b"garbage",
        "webhook_id": None,
        "delivery_id": None,
        "event_id": None,
        "failed_at_ms": 1_714_000_000_000,
    }
    body = BytesIO()
    schemaless_writer(body, parse_schema(old_schema), old_record)
    old_bytes = MAGIC + schema_fingerprint(old_schema) + body.getvalue()

    decoded = codec.decode("DeadLetter", old_bytes)

    assert decoded == {**old_record, "error_type": None, "service": None, "headers": []}


def _bad_values(codec: Codec) -> dict[str, bytes]:
    event = _event_bytes(codec)
    return {
        "garbage": b"this is not avro at all",
        "empty": b"",
        "short header": MAGIC + b"\x01\x02",
        "unknown fingerprint": MAGIC + b"\x00" * 8 + event[HEADER_SIZE:],
        "truncated body": event[:-5],
        "trailing bytes": event + b"\x00",
        "header only": event[:HEADER_SIZE],
    }


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("garbage", "not Avro single-object encoding"),
        ("empty", "shorter than"),
        ("short header", "shorter than"),
        ("unknown fingerprint", "unknown writer schema fingerprint 0000000000000000"),
        ("truncated body", "malformed Event body"),
        ("trailing bytes", "trailing bytes"),
        ("header only", "malformed Event body"),
    ],
)
def test_bad_bytes_raise_decode_error(codec: Codec, case: str, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        codec.decode("Event", _bad_values(codec)[case])


def test_record_of_another_type_raises_decode_error(codec: Codec) -> None:
    with pytest.raises(DecodeError, match="expected a Attempt record, got a Event record"):
        codec.decode("Attempt", _event_bytes(codec))


def test_invalid_utf8_in_a_string_raises_decode_error(codec: Codec) -> None:
    header = MAGIC + codec.fingerprint("Principal")
    # id: length 2 (zigzag 4) followed by bytes that are not UTF-8.
    with pytest.raises(DecodeError, match="malformed Principal body"):
        codec.decode("Principal", header + b"\x04\xff\xfe\x00\x00")


def test_encode_missing_field_is_value_error_naming_it(codec: Codec) -> None:
    record = {key: value for key, value in DELIVERY.items() if key != "body"}
    with pytest.raises(ValueError, match=r"missing field.*body") as caught:
        codec.encode("Delivery", record)
    assert not isinstance(caught.value, DecodeError)


def test_encode_wrong_type_is_value_error(codec: Codec) -> None:
    with pytest.raises(ValueError, match="cannot encode Delivery"):
        codec.encode("Delivery", {**DELIVERY, "attempt": "one"})


def test_unknown_record_name_is_value_error(codec: Codec) -> None:
    with pytest.raises(ValueError, match="unknown record type 'Nope'"):
        codec.encode("Nope", {})


def test_default_codec_is_shared() -> None:
    assert default_codec() is default_codec()


def test_schema_folder_override(tmp_path: Path) -> None:
    (tmp_path / "principal.avsc").write_text((SCHEMAS / "principal.avsc").read_text())
    codec = Codec.load(tmp_path)
    assert codec.names == {"Principal"}


def test_missing_schema_folder_is_reported(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="schema folder not found"):
        Codec.load(tmp_path / "absent")


def test_history_without_current_schema_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "history").mkdir()
    (tmp_path / "history" / "attempt.v1.avsc").write_text(
        (SCHEMAS / "history" / "attempt.v1.avsc").read_text()
    )
    with pytest.raises(ValueError, match="no current version"):
        Codec.load(tmp_path)


# --- JSON events ---------------------------------------------------------------------------

JSON_EVENT: dict[str, Any] = {
    "id": "evt_1",
    "type": "invoice.paid",
    "tenant_id": "ten_1",
    "occurred_at": "2024-05-01T14:00:00.250+02:00",
    "data": {"invoice_id": "inv_1", "amount_cents": 1200, "customer": {"name": "Acme"}},
}


def test_json_event_has_the_avro_event_shape(codec: Codec) -> None:
    event = decode_json_event(orjson.dumps(JSON_EVENT))
    assert event.to_record() == {
        "id": "evt_1",
        "type": "invoice.paid",
        "tenant_id": "ten_1",
        "occurred_at": "2024-05-01T12:00:00.250Z",
        "data": '{"invoice_id":"inv_1","amount_cents":1200,"customer":{"name":"Acme"}}',
        "published_at_ms": None,
    }
    assert codec.read(Event, codec.write(event)) == event


def test_json_event_without_occurred_at_gets_now() -> None:
    event = decode_json_event(
        orjson.dumps({k: v for k, v in JSON_EVENT.items() if k != "occurred_at"})
    )
    occurred_at = event.occurred_at
    assert occurred_at.endswith("Z")
    assert len(occurred_at) == len("2024-05-01T12:00:00.250Z")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b"", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object, got an array"),
        (
            orjson.dumps({k: v for k, v in JSON_EVENT.items() if k != "type"}),
            "missing field 'type'",
        ),
        (orjson.dumps({**JSON_EVENT, "tenant_id": 7}), "'tenant_id' must be a non-empty string"),
        (orjson.dumps({**JSON_EVENT, "id": ""}), "'id' must be a non-empty string"),
        (
            orjson.dumps({k: v for k, v in JSON_EVENT.items() if k != "data"}),
            "missing field 'data'",
        ),
        (orjson.dumps({**JSON_EVENT, "data": [1]}), "'data' must be a JSON object, got an array"),
        (orjson.dumps({**JSON_EVENT, "data": None}), "'data' must be a JSON object, got null"),
        (orjson.dumps({**JSON_EVENT, "occurred_at": 5}), "'occurred_at' must be an ISO 8601"),
        (orjson.dumps({**JSON_EVENT, "occurred_at": "yesterday"}), "'occurred_at' is not ISO 8601"),
    ],
)
def test_bad_json_events_raise_decode_error(data: bytes, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        decode_json_event(data)


def test_random_bodies_only_ever_raise_decode_error(codec: Codec) -> None:
    rng = random.Random(1234)
    for name, record in RECORDS:
        valid = codec.encode(name, record)
        header = valid[:HEADER_SIZE]
        candidates = [valid[:cut] for cut in range(len(valid))]
        candidates += [header + rng.randbytes(rng.randrange(0, 64)) for _ in range(200)]
        for candidate in candidates:
            with contextlib.suppress(DecodeError):
                codec.decode(name, candidate)


def test_packaged_schema_folder_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "_schemas").mkdir()
    monkeypatch.setattr(resources, "files", lambda package: tmp_path)
    assert resources.schemas_dir() == tmp_path / "_schemas"


def test_repo_schema_folder_is_the_fallback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(resources, "files", lambda package: tmp_path)
    assert resources.schemas_dir() == Path(__file__).resolve().parents[2] / "schemas"
