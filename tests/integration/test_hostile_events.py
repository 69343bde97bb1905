"""Nothing published on `events` stops routing: generated hostile records on the real broker.

A running router and sender get batches of generated hostile records interleaved with good
events on the same partitions. The property: every good event reaches its webhook, every
hostile record is in `dlq` (reason, exception type, original bytes and headers, where it was
read), and no process exits. Hostile records are built to be certainly invalid (one field
made wrong on a valid base, bytes that cannot be Avro, JSON beyond what a decoder takes), so
each one must leave exactly one dead letter.
"""

from __future__ import annotations

import json
import threading
import uuid
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from confluent_kafka import KafkaError, Message, Producer
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from hookstream.core.kafka import producer_config
from hookstream.core.records import Webhook
from hookstream.core.settings import Settings
from hookstream.core.topics import Topics
from hookstream.events.catalog import default_catalog
from tests.conftest import ServiceStarter
from tests.helpers import wait_for
from tests.integration.test_routing import hook, ids_at
from tests.pipeline import CODEC, Platform, Service, read_topic
from tests.receiver import TestReceiver

pytestmark = pytest.mark.integration

TENANTS = ("tenant_a", "tenant_beta")  # keys landing in both partitions of `events`
JSON_HEADERS = [("content-type", b"application/json")]
CATALOG = default_catalog()


@dataclass(frozen=True, slots=True)
class Published:
    value: bytes | None
    headers: list[tuple[str, bytes]] | None
    key: bytes


# --- hostile records -------------------------------------------------------------------------

# Every JSON type, extremes included; none of them is a valid value for a whole event field
# where a non-empty string or an object is required (the strategies below pick per field).
JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
)
JSON_ANY = st.recursive(
    JSON_SCALARS | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)

# Instants no one can carry: outside 1-9999 once in UTC, not ISO 8601, or absurdly long.
BAD_INSTANTS = st.sampled_from(
    [
        "0001-01-01T00:00:00+01:00",
        "9999-12-31T23:59:59-00:01",
        "0000-01-01T00:00:00Z",
        "10000-01-01T00:00:00Z",
        "2026-02-30T00:00:00Z",
        "2026-12-03T24:00:01Z",
        "2026-12-03T10:00:00+24:00",
        "yesterday",
        "",
        "2026-12-03T10:00:00Z" + " " * 100,
        "1" * 300,
    ]
) | st.text(alphabet=st.characters(codec="ascii"), max_size=8).filter(
    lambda text: not text[:1].isdigit()
)

# Text no id may be: empty, control characters (a header cannot carry them), or too long.
BAD_IDS = st.sampled_from(["", "evt\x00nul", "evt\r\nX-Injected: 1", "\x7f", "a" * 257]) | st.text(
    alphabet=st.characters(categories=["Cc", "Zl", "Zp"]), min_size=1, max_size=5
)


def good_fields(tenant: str) -> dict[str, Any]:
    return {
        "id": f"evt_{uuid.uuid4().hex}",
        "type": "invoice.paid",
        "tenant_id": tenant,
        "occurred_at": "2026-12-03T10:00:00.000Z",
        "data": {"invoice_id": "inv_1"},
    }


@st.composite
def json_field_made_wrong(draw: st.DrawFn, tenant: str) -> tuple[bytes, list[tuple[str, bytes]]]:
    """A JSON event with one field of a wrong type or value (or missing)."""
    fields = good_fields(tenant)
    name = draw(st.sampled_from(sorted(fields)))
    wrong: Any
    if name == "occurred_at":
        wrong = draw(
            BAD_INSTANTS
            | JSON_SCALARS.filter(lambda v: v is not None)
            | JSON_ANY.filter(lambda v: not isinstance(v, str) and v is not None)
        )
    elif name == "data":
        wrong = draw(JSON_ANY.filter(lambda v: not isinstance(v, dict)))
    elif name == "type":
        wrong = draw(JSON_ANY.filter(lambda v: not (isinstance(v, str) and CATALOG.get(v))))
    elif name == "tenant_id":
        wrong = draw(JSON_SCALARS | st.just("") | BAD_IDS)
    else:
        wrong = draw(JSON_SCALARS | BAD_IDS)
    if draw(st.booleans()) and name != "occurred_at":
        del fields[name]  # a missing field (occurred_at may be absent: it defaults to now)
    else:
        fields[name] = wrong
    # The standard library writes integers of any size (beyond what orjson reads).
    return json.dumps(fields).encode(), JSON_HEADERS


@st.composite
def avro_field_made_wrong(
    draw: st.DrawFn, tenant: str
) -> tuple[bytes, list[tuple[str, bytes]] | None]:
    """A valid Avro `Event` whose values are wrong for the pipeline (types are right)."""
    fields = good_fields(tenant)
    fields["data"] = orjson.dumps(fields["data"]).decode()
    fields["published_at_ms"] = None
    name = draw(
        st.sampled_from(["id", "type", "tenant_id", "occurred_at", "data", "published_at_ms"])
    )
    if name == "occurred_at":
        fields[name] = draw(BAD_INSTANTS)
    elif name == "data":
        fields[name] = draw(
            st.sampled_from(["", "[]", "null", "{", '{"n": 1e999999}'])
            | st.just("[" * 2000 + "]" * 2000)
        )
    elif name == "published_at_ms":
        fields[name] = draw(st.sampled_from([-1, -(2**63), 2**63 - 1, 253_402_300_800_000]))
    elif name == "type":
        fields[name] = draw(st.sampled_from(["", "invoice.nope", "nope", "*"]) | BAD_IDS)
    else:
        fields[name] = draw(BAD_IDS)
    return CODEC.encode("Event", fields), None


@st.composite
def undecodable(
    draw: st.DrawFn, tenant: str
) -> tuple[bytes | None, list[tuple[str, bytes]] | None]:
    """Bytes that are no event at all, or headers that lie about what they are."""
    good = CODEC.encode(
        "Event", {**good_fields(tenant), "data": '{"invoice_id": "inv_1"}', "published_at_ms": None}
    )
    kind = draw(
        st.sampled_from(
            [
                "bytes",
                "truncated",
                "other-record",
                "json-as-avro",
                "avro-as-json",
                "tombstone",
                "deep",
                "deep-decodable",
                "bad-utf8",
            ]
        )
    )
    if kind == "bytes":
        return draw(st.binary(max_size=64).filter(lambda b: not b.startswith(b"\xc3\x01"))), None
    if kind == "truncated":
        return good[: draw(st.integers(min_value=0, max_value=len(good) - 1))], None
    if kind == "other-record":
        principal = {"id": "usr_1", "tenant_id": tenant, "permissions": []}
        return CODEC.encode("Principal", principal), None
    if kind == "json-as-avro":  # JSON without its content type
        return orjson.dumps(good_fields(tenant)), draw(
            st.sampled_from(
                [None, [("content-type", b"application/avro")], [("content-type", b"\xff\xfe")]]
            )
        )
    if kind == "avro-as-json":  # Avro bytes under a JSON content type
        return good, [("content-type", b"application/json; charset=utf-8")]
    if kind == "tombstone":
        return None, None
    if kind == "deep-decodable":  # read by the decoder, but deeper than a body can be written
        fields = good_fields(tenant)
        fields["data"] = {"x": json.loads("[" * 600 + "]" * 600)}
        return json.dumps(fields).encode(), JSON_HEADERS
    if kind == "deep":  # nested beyond what any JSON decoder takes
        fields = good_fields(tenant)
        return json.dumps(fields)[
            :-1
        ].encode() + b', "x": ' + b"[" * 5000 + b"]" * 5000 + b"}", JSON_HEADERS
    text = json.dumps(good_fields(tenant)).encode()
    return text.replace(b"inv_1", b"inv_\xff\xc0"), JSON_HEADERS


def hostile(tenant: str) -> st.SearchStrategy[tuple[bytes | None, list[tuple[str, bytes]] | None]]:
    return json_field_made_wrong(tenant) | avro_field_made_wrong(tenant) | undecodable(tenant)


@st.composite
def batches(draw: st.DrawFn) -> list[tuple[str, bytes | None, list[tuple[str, bytes]] | None]]:
    """A batch of hostile records, each tagged with the tenant key it is published under."""
    out = []
    for _ in range(draw(st.integers(min_value=1, max_value=6))):
        tenant = draw(st.sampled_from(TENANTS))
        value, headers = draw(hostile(tenant))
        out.append((tenant, value, headers))
    return out


# --- publishing with the offsets known --------------------------------------------------------


class Publisher:
    """Produces records and remembers where each landed, to find its dead letter again."""

    def __init__(self, settings: Settings) -> None:
        self._producer = Producer(producer_config(settings))
        self._lock = threading.Lock()
        self.landed: dict[tuple[int, int], Published] = {}

    def send(self, topic: str, record: Published) -> None:
        def acknowledged(error: KafkaError | None, message: Message) -> None:
            assert error is None, error
            with self._lock:
                self.landed[(message.partition() or 0, message.offset() or 0)] = record

        self._producer.produce(
            topic,
            key=record.key,
            value=record.value,
            headers=record.headers,
            on_delivery=acknowledged,
        )

    def flush(self) -> None:
        assert self._producer.flush(30) == 0


# --- the properties ----------------------------------------------------------------------------


@dataclass
class Stage:
    settings: Settings
    topics: Topics
    receiver: TestReceiver
    webhooks: dict[str, Webhook]
    router: Service
    sender: Service
    publisher: Publisher

    def good_event(self, tenant: str) -> tuple[str, Published]:
        fields = good_fields(tenant)
        return fields["id"], Published(orjson.dumps(fields), JSON_HEADERS, tenant.encode())

    def run_batch(
        self, batch: list[tuple[str, bytes | None, list[tuple[str, bytes]] | None]]
    ) -> None:
        before = set(self.publisher.landed)
        expected: dict[str, set[str]] = {tenant: set() for tenant in TENANTS}
        hostile_records = []
        for tenant, value, headers in batch:
            # A good event before and after each hostile one, on the same partition.
            event_id, good = self.good_event(tenant)
            expected[tenant].add(event_id)
            self.publisher.send(self.topics.events, good)
            record = Published(value, headers, tenant.encode())
            hostile_records.append(record)
            self.publisher.send(self.topics.events, record)
        for tenant in TENANTS:
            event_id, good = self.good_event(tenant)
            expected[tenant].add(event_id)
            self.publisher.send(self.topics.events, good)
        self.publisher.flush()
        wait_for(
            lambda: all(
                ids <= ids_at(self.receiver, self.webhooks[t]) for t, ids in expected.items()
            ),
            timeout=60,
            interval=0.1,
            what="every good event published around the hostile ones",
        )
        hostile_at = {
            at: record
            for at, record in self.publisher.landed.items()
            if at not in before and any(record is h for h in hostile_records)
        }
        assert len(hostile_at) == len(batch)
        letters = wait_for(
            lambda: _letters_for(self.settings, self.topics, hostile_at),
            timeout=30,
            interval=0.2,
            what=f"dead letters for {len(hostile_at)} hostile records",
        )
        for at, record in hostile_at.items():
            letter = letters[at]
            assert letter["reason"] and letter["detail"] and letter["error_type"]
            # Every kind of bad input has a specific reason; internal_error would be a bug.
            assert letter["reason"] != "internal_error", letter["detail"]
            assert letter["service"] == "router"
            assert letter["value"] == (record.value or b"")
            assert letter["key"] == record.key
            assert [(h["key"], h["value"]) for h in letter["headers"]] == (record.headers or [])
        assert self.router.alive(), self.router.log()
        assert self.sender.alive(), self.sender.log()


def _letters_for(
    settings: Settings, topics: Topics, hostile_at: dict[tuple[int, int], Published]
) -> dict[tuple[int, int], dict[str, Any]] | None:
    found = {
        (letter["source_partition"], letter["source_offset"]): letter
        for letter in read_topic(settings, topics.dlq, "DeadLetter")
        if letter["source_topic"] == topics.events
    }
    return found if set(hostile_at) <= set(found) else None


@pytest.fixture
def stage(
    platform: Platform,
    pipeline_settings: Settings,
    receiver: TestReceiver,
    services: ServiceStarter,
) -> Stage:
    webhooks = {tenant: hook(platform, receiver, tenant, ["*"]) for tenant in TENANTS}
    router = services("router")
    sender = services("sender")
    return Stage(
        pipeline_settings,
        platform.topics,
        receiver,
        webhooks,
        router,
        sender,
        Publisher(pipeline_settings),
    )


HOSTILE = settings(
    max_examples=15,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def test_generated_hostile_events_are_dead_lettered_and_routing_goes_on(stage: Stage) -> None:
    @HOSTILE
    @given(batches())
    # The record that stopped all routing: valid ISO 8601 whose UTC value is before year 1.
    @example(
        [
            (
                "tenant_a",
                orjson.dumps(
                    {**good_fields("tenant_a"), "occurred_at": "0001-01-01T00:00:00+01:00"}
                ),
                JSON_HEADERS,
            )
        ]
    )
    @example(
        [
            (
                "tenant_beta",
                CODEC.encode(
                    "Event",
                    {
                        **good_fields("tenant_beta"),
                        "occurred_at": "0001-01-01T00:00:00+01:00",
                        "data": "{}",
                        "published_at_ms": None,
                    },
                ),
                None,
            )
        ]
    )
    # Read by the JSON decoder (depth 600 < 1024) but deeper than orjson writes: was a crash.
    @example(
        [
            (
                "tenant_a",
                json.dumps(
                    {**good_fields("tenant_a"), "data": {"x": json.loads("[" * 600 + "]" * 600)}}
                ).encode(),
                JSON_HEADERS,
            )
        ]
    )
    def check(batch: list[tuple[str, bytes | None, list[tuple[str, bytes]] | None]]) -> None:
        stage.run_batch(batch)

    check()
