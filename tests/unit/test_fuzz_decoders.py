"""Property tests: every decoder of untrusted input fails only with its own, specific error.

Arbitrary bytes, text and JSON go into each decoder; the only acceptable outcomes are a value
or the decoder's documented error type. Anything else (KeyError, UnicodeDecodeError,
RecursionError, ...) would crash the service reading the record, so the test fails on it.
Random bytes alone rarely get past a magic number or a key id, so each decoder is also fed
valid input with bytes flipped, cut or appended.
"""

from __future__ import annotations

import base64
import contextlib
import json
import time
from typing import Any

import pytest
import standardwebhooks
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from hookstream.api import models
from hookstream.api.bodies import validated
from hookstream.api.errors import ApiError
from hookstream.core import signing
from hookstream.core.codec import MAGIC, Codec, DecodeError, default_codec
from hookstream.core.keys import parse_keys
from hookstream.core.records import (
    DUE_AT_HEADER,
    Event,
    Principal,
    Webhook,
    WebhookSecret,
    due_at_from_headers,
)
from hookstream.endpoints.secrets import Keyring, SecretError
from hookstream.events.catalog import default_catalog
from hookstream.router.envelope import RejectedEvent, parse_event
from hookstream.router.json_events import decode_json_event
from hookstream.store.cursor import decode_cursor, encode_cursor
from hookstream.store.errors import InvalidCursorError

# Modest example counts keep the whole file within seconds; CI runs it on every push.
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

CODEC: Codec = default_codec()
CATALOG = default_catalog()
KEY = bytes(range(32))
KEYRING = Keyring([("k1", KEY), ("k2", bytes(32))])
WEBHOOK_ID = "wh_fuzz"

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=20,
)


def _dumps(value: Any) -> bytes:
    # The standard library writes integers of any size, which is hostile input in itself.
    return json.dumps(value).encode()


def _webhook_record() -> dict[str, Any]:
    return Webhook(
        id="wh_1",
        tenant_id="ten_1",
        name="fuzz",
        url="https://example.com/hook",
        events=("invoice.*",),
        secrets=(WebhookSecret(signing.new_secret(), 1_700_000_000_000),),
        created_at_ms=1,
        updated_at_ms=2,
    ).to_record()


VALID = {
    "Webhook": CODEC.encode("Webhook", _webhook_record()),
    "Principal": CODEC.encode(
        "Principal", Principal("usr_1", "ten_1", frozenset({"invoices:read"})).to_record()
    ),
    "Event": CODEC.encode(
        "Event",
        {
            "id": "evt_1",
            "type": "invoice.paid",
            "tenant_id": "ten_1",
            "occurred_at": "2024-05-14T16:05:12Z",
            "data": '{"invoice_id": "inv_1"}',
            "published_at_ms": 1_715_702_712_000,
        },
    ),
}


@st.composite
def mutated(draw: st.DrawFn, original: bytes) -> bytes:
    """`original` with a few bytes overwritten, then perhaps cut short or extended."""
    data = bytearray(original)
    for _ in range(draw(st.integers(1, 4))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    cut = draw(st.integers(0, len(data)))
    return bytes(data[:cut]) + draw(st.binary(max_size=16))


def avro_like(name: str) -> st.SearchStrategy[bytes]:
    """Bytes that reach the Avro body decoder: a valid header of `name`, or a mutated record."""
    header = MAGIC + CODEC.fingerprint(name)
    return st.binary(max_size=256).map(lambda body: header + body) | mutated(VALID[name])


# -- Avro single-object codec ----------------------------------------------------------------


@FUZZ
@given(name=st.sampled_from(sorted(CODEC.names)), data=st.binary(max_size=512))
def test_codec_decode_of_arbitrary_bytes_raises_only_decode_error(name: str, data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        CODEC.decode(name, data)


@FUZZ
@given(name=st.sampled_from(sorted(VALID)), data=st.data())
def test_codec_decode_of_damaged_records_raises_only_decode_error(
    name: str, data: st.DataObject
) -> None:
    try:
        record = CODEC.decode(name, data.draw(avro_like(name)))
    except DecodeError:
        return
    assert isinstance(record, dict)


@FUZZ
@given(data=st.binary(max_size=64))
def test_codec_identify_raises_only_decode_error(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        assert CODEC.identify(data) in CODEC.names


# -- events, as the router reads them -----------------------------------------------------------


@FUZZ
@given(data=st.binary(max_size=512) | JSON.map(_dumps))
def test_decode_json_event_raises_only_decode_error(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        assert isinstance(decode_json_event(data), Event)


def _json_events() -> st.SearchStrategy[bytes]:
    """JSON events with each field either sensible or arbitrary."""
    fields = st.fixed_dictionaries(
        {},
        optional={
            "id": st.just("evt_1") | JSON,
            "type": st.sampled_from(["invoice.paid", "nope.nope"]) | JSON,
            "tenant_id": st.just("ten_1") | JSON,
            "occurred_at": st.just("2024-05-14T16:05:12Z") | st.text(max_size=40) | JSON,
            "data": st.dictionaries(st.text(max_size=8), JSON, max_size=4) | JSON,
            "published_at_ms": st.integers() | JSON,
        },
    )
    return fields.map(_dumps)


@FUZZ
@given(
    value=st.none() | st.binary(max_size=512) | _json_events() | avro_like("Event"),
    as_json=st.booleans(),
)
def test_parse_event_raises_only_rejected_event(value: bytes | None, as_json: bool) -> None:
    headers = [("content-type", b"application/json")] if as_json else None
    try:
        event = parse_event(value, headers, CODEC, CATALOG, max_payload_bytes=64 * 1024)
    except RejectedEvent as exc:
        assert exc.reason
        return
    assert CATALOG.get(event.type) is not None


# -- compacted views: webhooks and principals ---------------------------------------------------

# What CompactedView._apply treats as a poison record (skipped, logged, dead-lettered).
VIEW_ERRORS = (DecodeError, KeyError, TypeError, ValueError)


@FUZZ
@given(data=st.binary(max_size=256) | avro_like("Webhook"))
def test_webhook_view_decoding_raises_only_view_errors(data: bytes) -> None:
    with contextlib.suppress(VIEW_ERRORS):
        Webhook.from_record(CODEC.decode("Webhook", data))


@FUZZ
@given(data=st.binary(max_size=256) | avro_like("Principal"))
def test_principal_view_decoding_raises_only_view_errors(data: bytes) -> None:
    with contextlib.suppress(VIEW_ERRORS):
        Principal.from_record(CODEC.decode("Principal", data))


# -- retry records' headers in the sender -------------------------------------------------------


@FUZZ
@given(
    headers=st.lists(
        st.tuples(st.sampled_from([DUE_AT_HEADER, "other"]), st.none() | st.binary(max_size=40)),
        max_size=4,
    )
)
def test_due_at_header_parsing_never_raises(headers: list[tuple[str, bytes | None]]) -> None:
    due = due_at_from_headers(headers)
    if any(name == DUE_AT_HEADER for name, _ in headers):
        assert isinstance(due, int)
    else:
        assert due is None


@pytest.mark.parametrize(
    ("value", "due"),
    [(b"1700000000000", 1700000000000), (b"\xff\xfe", 0), (b"9" * 5000, 0), (b"", 0)],
)
def test_due_at_header_examples(value: bytes, due: int) -> None:
    assert due_at_from_headers([(DUE_AT_HEADER, value)]) == due


# -- secrets at rest ----------------------------------------------------------------------------

SEALED = KEYRING.encrypt(WEBHOOK_ID, signing.new_secret())


@st.composite
def damaged_secret(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["text", "prefixed", "mutated"]))
    if kind == "text":
        return draw(st.text(max_size=80))
    if kind == "prefixed":
        kid = draw(st.sampled_from(["k1", "k2", "nope"]) | st.text(max_size=5))
        return f"enc:v1:{kid}:" + draw(st.text(max_size=80))
    raw = draw(mutated(SEALED.encode()))
    return raw.decode("utf-8", "replace")


@FUZZ
@given(value=damaged_secret())
def test_secret_decryption_raises_only_secret_error(value: str) -> None:
    with contextlib.suppress(SecretError):
        assert isinstance(KEYRING.decrypt(WEBHOOK_ID, value), str)


@FUZZ
@given(text=st.text(max_size=120))
def test_key_list_parsing_raises_only_value_error(text: str) -> None:
    try:
        keys = parse_keys(text)
    except ValueError:
        return
    assert all(len(key) == 32 for _, key in keys)


# -- signing ------------------------------------------------------------------------------------


@FUZZ
@given(
    raw=st.binary(min_size=24, max_size=64),
    msg_id=st.text(st.characters(codec="ascii", exclude_categories=["Cc"]), min_size=1),
    body=JSON.map(_dumps),
)
def test_every_signature_verifies_with_the_reference_package(
    raw: bytes, msg_id: str, body: bytes
) -> None:
    secret = "whsec_" + base64.b64encode(raw).decode()
    # The reference verifier rejects timestamps far from now, so sign "now".
    now = int(time.time())
    headers = signing.headers([signing.signer(secret)], msg_id, now, body, "fuzz/1.0")
    standardwebhooks.Webhook(secret).verify(body, headers)


@FUZZ
@given(timestamp=st.integers(0, 2**33), body=JSON.map(_dumps))
def test_signing_any_timestamp_and_body_never_raises(timestamp: int, body: bytes) -> None:
    header = signing.signature_header(
        [signing.signer(signing.new_secret())], "evt_1", timestamp, body
    )
    assert header.startswith("v1,")


# -- API cursors --------------------------------------------------------------------------------


@FUZZ
@given(
    cursor=st.text(max_size=600)
    | st.binary(max_size=300).map(lambda b: base64.urlsafe_b64encode(b).decode())
    | JSON.map(lambda v: base64.urlsafe_b64encode(_dumps(v)).decode().rstrip("="))
)
def test_cursor_decoding_raises_only_invalid_cursor(cursor: str) -> None:
    try:
        created, delivery = decode_cursor(cursor)
    except InvalidCursorError:
        return
    assert encode_cursor(created, delivery)


@FUZZ
@given(created=st.integers(-(2**63), 2**63 - 1), delivery=st.text(max_size=40))
def test_cursor_round_trip(created: int, delivery: str) -> None:
    assert decode_cursor(encode_cursor(created, delivery)) == (created, delivery)


# -- API request bodies (the model boundary; tests/integration/test_fuzz_api.py goes over HTTP) --

BODY_MODELS = sorted(
    (m for m in vars(models).values() if isinstance(m, type) and issubclass(m, models.Body)),
    key=lambda m: m.__name__,
)
BODY_MODELS = [m for m in BODY_MODELS if m is not models.Body]


def _body_like(model: type[BaseModel]) -> st.SearchStrategy[dict[str, Any]]:
    """Objects using the model's own field names (so validation goes deep) or any names."""
    names = [*sorted(model.model_fields), "unknown"]
    return st.dictionaries(st.sampled_from(names), JSON, max_size=len(names)) | st.dictionaries(
        st.text(max_size=10), JSON, max_size=4
    )


def test_every_body_model_is_fuzzed() -> None:
    assert {m.__name__ for m in BODY_MODELS} >= {
        "WebhookCreate",
        "WebhookUpdate",
        "RotateSecret",
        "Recover",
        "EventPublish",
        "PrincipalPut",
    }


@pytest.mark.parametrize("model", BODY_MODELS, ids=lambda m: m.__name__)
def test_body_models_raise_only_a_422(model: type[BaseModel]) -> None:
    @settings(FUZZ, max_examples=100)
    @given(data=_body_like(model))
    def check(data: dict[str, Any]) -> None:
        try:
            assert isinstance(validated(model, data), model)
        except ApiError as exc:
            assert exc.status == 422

    check()
