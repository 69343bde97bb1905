"""`occurred_at` normalisation in the router stays exact with its cache of seen values."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest

from hookstream.core.codec import default_codec
from hookstream.events.catalog import default_catalog
from hookstream.events.instants import utc_iso
from hookstream.router.envelope import RejectedEvent, parse_event

CODEC = default_codec()
CATALOG = default_catalog()


def occurred_at_of(text: str) -> str:
    value = CODEC.encode(
        "Event",
        {
            "id": "evt_1",
            "type": "invoice.paid",
            "tenant_id": "ten_1",
            "occurred_at": text,
            "data": orjson.dumps({"invoice_id": "inv_1"}).decode(),
            "published_at_ms": None,
        },
    )
    return parse_event(value, None, CODEC, CATALOG, 1 << 20).occurred_at


@pytest.mark.parametrize(
    ("text", "normalised"),
    [
        ("2024-05-14T16:05:12.000Z", "2024-05-14T16:05:12Z"),
        ("2024-05-14T18:05:12.250+02:00", "2024-05-14T16:05:12.250Z"),
        ("2024-05-14T16:05:12.123456", "2024-05-14T16:05:12.123456Z"),
    ],
)
def test_repeated_timestamps_normalise_the_same_every_time(text: str, normalised: str) -> None:
    assert [occurred_at_of(text) for _ in range(3)] == [normalised] * 3


def test_more_distinct_timestamps_than_the_cache_holds_stay_exact() -> None:
    start = datetime(2024, 5, 14, tzinfo=UTC)
    moments = [start + timedelta(milliseconds=n) for n in range(2500)]
    for moment in moments + moments[:10]:
        text = moment.isoformat()
        assert occurred_at_of(text) == utc_iso(moment)


def test_a_bad_timestamp_is_rejected_every_time() -> None:
    for _ in range(2):
        with pytest.raises(RejectedEvent) as caught:
            occurred_at_of("yesterday")
        assert caught.value.reason == "invalid_field"
        assert "not ISO 8601" in caught.value.detail
