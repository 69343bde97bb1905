"""What each intake refuses and why: the rules behind the per-record boundary's reasons."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hookstream.core import signing
from hookstream.core.codec import DecodeError, default_codec
from hookstream.core.deadletter import (
    INTERNAL_ERROR,
    MAX_ID_LENGTH,
    Refusal,
    RejectedRecord,
    require_ids,
    require_unix_ms,
)
from hookstream.core.records import MAX_UNIX_MS, Delivery
from hookstream.events.envelope import EventHead, build_body
from hookstream.logsink.intake import decode_attempt
from hookstream.sender.intake import decode_delivery
from tests.unit.test_codec import ATTEMPT, DELIVERY

CODEC = default_codec()


@given(st.text(max_size=MAX_ID_LENGTH + 5))
def test_an_id_is_accepted_exactly_when_it_can_travel_as_a_header(text: str) -> None:
    fits = (
        0 < len(text) <= MAX_ID_LENGTH
        and text.isprintable()
        and not text.startswith(" ")
        and not text.endswith(" ")
    )
    try:
        require_ids({"id": text}, ("id",), "invalid_field")
    except RejectedRecord as exc:
        assert not fits and exc.reason == "invalid_field" and "'id'" in exc.detail
    else:
        assert fits


@pytest.mark.parametrize("value", [None, 7, b"evt_1"])
def test_an_id_that_is_no_text_is_refused(value: object) -> None:
    with pytest.raises(RejectedRecord):
        require_ids({"id": value}, ("id",), "invalid_field")


@pytest.mark.parametrize(
    ("moment", "ok"),
    [(None, True), (0, True), (MAX_UNIX_MS, True), (-1, False), (MAX_UNIX_MS + 1, False)],
)
def test_unix_milliseconds_stay_within_what_a_timestamp_can_show(
    moment: int | None, ok: bool
) -> None:
    if ok:
        require_unix_ms({"at": moment}, ("at",), "r")
    else:
        with pytest.raises(RejectedRecord, match="'at' is out of range"):
            require_unix_ms({"at": moment}, ("at",), "r")


@pytest.mark.parametrize(
    ("change", "detail"),
    [
        ({"attempt": 0}, "attempt 0 is not 1 or more"),
        ({"trigger": "cron"}, "trigger 'cron'"),
        ({"event_id": " evt_1"}, "'event_id'"),
        ({"webhook_id": "wh\x00"}, "'webhook_id'"),
        ({"created_at_ms": -5}, "'created_at_ms' is out of range"),
    ],
)
def test_a_delivery_no_attempt_can_carry_is_refused(change: dict[str, Any], detail: str) -> None:
    value = CODEC.encode("Delivery", {**DELIVERY, **change})
    with pytest.raises(RejectedRecord, match=detail) as refused:
        decode_delivery(CODEC, Delivery, value)
    assert refused.value.reason == "invalid_delivery"


def test_a_good_delivery_and_a_replay_beyond_the_schedule_are_taken() -> None:
    assert decode_delivery(CODEC, Delivery, CODEC.encode("Delivery", DELIVERY)).attempt >= 1
    replay = CODEC.encode("Delivery", {**DELIVERY, "attempt": 99, "trigger": "manual"})
    assert decode_delivery(CODEC, Delivery, replay).attempt == 99


def test_tombstones_and_garbage_are_undecodable() -> None:
    with pytest.raises(RejectedRecord) as tombstone:
        decode_delivery(CODEC, Delivery, None)
    assert tombstone.value.reason == "undecodable"
    with pytest.raises(DecodeError):
        decode_attempt(CODEC, b"garbage")


@pytest.mark.parametrize(
    "change",
    [{"attempt_number": 0}, {"duration_ms": -1}, {"attempt_id": ""}, {"started_at_ms": -1}],
)
def test_an_attempt_no_row_can_carry_is_refused(change: dict[str, Any]) -> None:
    with pytest.raises(RejectedRecord) as refused:
        decode_attempt(CODEC, CODEC.encode("Attempt", {**ATTEMPT, **change}))
    assert refused.value.reason == "invalid_attempt"


def test_a_stored_attempt_holds_no_nul() -> None:
    value = CODEC.encode("Attempt", {**ATTEMPT, "response_body": "a\x00b"})
    assert decode_attempt(CODEC, value).response_body == "a\ufffdb"


def test_a_body_that_is_not_utf8_cannot_be_signed() -> None:
    with pytest.raises(RejectedRecord) as refused:
        signing.headers(
            [signing.signer(signing.new_secret())], "evt_1", 1_700_000_000, b"\xff\xfe", "ua"
        )
    assert refused.value.reason == "invalid_delivery"


def test_data_deeper_than_a_body_can_be_written_is_refused() -> None:
    data: dict[str, Any] = {}
    inner = data
    for _ in range(300):
        inner["a"] = {}
        inner = inner["a"]
    with pytest.raises(RejectedRecord) as refused:
        build_body(EventHead("evt_1", "invoice.paid", "2026-12-03T10:00:00Z"), data, "v1")
    assert refused.value.reason == "invalid_field"


def test_an_unexpected_error_is_an_internal_error_that_says_where() -> None:
    try:
        {}["missing"]
    except KeyError as exc:
        refusal = Refusal.of(exc)
    assert refusal.reason == INTERNAL_ERROR and refusal.error_type == "KeyError"
    assert "test_refusals.py" in refusal.detail
    assert Refusal.of(DecodeError("bad bytes")).reason == "undecodable"
