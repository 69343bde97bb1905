"""The router end to end: real router (and sender) processes, real receivers, a real broker.

Absence is never asserted after a sleep. The router handles an `events` partition in order and
commits each batch's deliveries in one transaction, so once a later event of the same
partition (same tenant key) has reached some webhook, every earlier event of that partition
has been routed and its deliveries are committed. At that point the `deliveries` topic, read
with read_committed, is the exact routing decision, and "not routed" is a fact, not a hope.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import orjson
import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from hookstream.core.kafka import admin_client, consumer_config
from hookstream.core.records import Webhook
from hookstream.core.settings import Settings
from hookstream.core.signing import new_secret
from hookstream.core.topics import Topics
from hookstream.tools import localkafka
from hookstream.tools.topics import create_topics
from tests.conftest import ServiceStarter, SettingsFactory
from tests.helpers import settings_for_test, unique_prefix, wait_for
from tests.pipeline import (
    CODEC,
    Platform,
    Service,
    kill_and_restart_broker,
    make_webhook,
    read_topic,
)
from tests.receiver import Received, TestReceiver

pytestmark = pytest.mark.integration

# Two tenants whose keys land in different partitions of the two-partition `events` topic
# (librdkafka's default partitioner: CRC32 of the key), so both partitions carry traffic.
A = "tenant_a"
B = "tenant_beta"
SENSITIVE_INVOICE = {
    "invoice_id": "inv_1",
    "amount_cents": 125000,
    "bank_details": {"iban": "DE89370400440532013000", "bic": "COBADEFFXXX"},
}


# --- helpers --------------------------------------------------------------------------------


def hook(
    platform: Platform,
    receiver: TestReceiver,
    tenant: str,
    events: list[str],
    *,
    owner_id: str | None = None,
    enabled: bool = True,
) -> Webhook:
    """Publish a webhook whose URL is a fresh receiver endpoint verifying with its secret."""
    secret = new_secret()
    url = receiver.expect(f"/{uuid.uuid4().hex[:10]}", [secret])
    webhook = make_webhook(tenant, url, events, owner_id=owner_id, enabled=enabled, secret=secret)
    return platform.webhook(webhook)


def requests_to(receiver: TestReceiver, webhook: Webhook) -> list[Received]:
    return receiver.received(urlparse(webhook.url).path)


def ids_at(receiver: TestReceiver, webhook: Webhook) -> set[str]:
    return {request.headers["webhook-id"] for request in requests_to(receiver, webhook)}


def bodies_at(receiver: TestReceiver, webhook: Webhook) -> dict[str, dict[str, Any]]:
    """Each received event's body by webhook-id (retries carry identical bytes)."""
    return {r.headers["webhook-id"]: orjson.loads(r.body) for r in requests_to(receiver, webhook)}


def wait_delivered(
    receiver: TestReceiver, expected: dict[str, tuple[Webhook, set[str]]], timeout: float = 60
) -> None:
    """Wait until every webhook has received (at least) its expected event ids."""
    wait_for(
        lambda: all(ids <= ids_at(receiver, webhook) for webhook, ids in expected.values()),
        timeout=timeout,
        interval=0.1,
        what=f"deliveries to {', '.join(expected)}",
    )


def routed(settings: Settings) -> Counter[tuple[str, str]]:
    """Every committed (event_id, webhook_id) routing decision in `deliveries`, counted."""
    records = read_topic(settings, Topics.from_settings(settings).deliveries, "Delivery")
    return Counter((record["event_id"], record["webhook_id"]) for record in records)


def routed_to(decisions: Counter[tuple[str, str]], webhook: Webhook) -> set[str]:
    return {event_id for event_id, webhook_id in decisions if webhook_id == webhook.id}


def dead_letters(settings: Settings, count: int) -> list[dict[str, Any]]:
    """The `dlq` records, once there are at least `count`, oldest first per partition."""
    dlq = Topics.from_settings(settings).dlq
    return list(
        wait_for(
            lambda: (
                (found := read_topic(settings, dlq, "DeadLetter")) and len(found) >= count and found
            ),
            timeout=30,
            what=f"{count} dead letters",
        )
    )


def assert_verified(receiver: TestReceiver, webhook: Webhook) -> None:
    requests = requests_to(receiver, webhook)
    assert requests and all(r.verified for r in requests), "a request failed verification"
    for request in requests:
        assert request.headers["webhook-id"] == orjson.loads(request.body)["id"]


def publish_until(
    platform: Platform,
    done: Callable[[list[str]], bool],
    *,
    tenant: str,
    event_type: str,
    data: dict[str, Any],
    what: str,
) -> list[str]:
    """Publish fresh events (in order) until `done(published ids)` holds; return the ids.

    Used after a change to the `webhooks` or `principals` topic: those topics are not ordered
    against `events`, so no event can be named in advance as the first one the change applies
    to. Instead the tests observe the first event routed with the change and reason from the
    router's in-order processing about every event after it.
    """
    published: list[str] = []

    def step() -> bool:
        if published and done(published):
            return True
        published.append(platform.event(tenant, event_type, data))
        return False

    wait_for(step, timeout=30, interval=0.2, what=what)
    return published


def first_index(ids: list[str], reached: set[str]) -> int:
    return next(i for i, event_id in enumerate(ids) if event_id in reached)


@contextmanager
def watermarks(
    settings: Settings, topic: str, isolation: str = "read_uncommitted"
) -> Iterator[Callable[[], list[int]]]:
    """A function giving each partition's end offset as a consumer at `isolation` sees it.

    read_uncommitted: the high watermark, records of open transactions included;
    read_committed: the last stable offset, before the first still-open transaction.
    """
    consumer = Consumer(
        consumer_config(settings, f"watermarks-{uuid.uuid4().hex[:8]}")
        | {"isolation.level": isolation}
    )
    try:
        partitions = sorted(consumer.list_topics(topic, timeout=10).topics[topic].partitions)

        def ends() -> list[int]:
            return [
                consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                for p in partitions
            ]

        yield ends
    finally:
        consumer.close()


def partition_ends(settings: Settings, topic: str) -> list[int]:
    with watermarks(settings, topic) as ends:
        return ends()


def high_watermarks(settings: Settings, topic: str) -> int:
    return sum(partition_ends(settings, topic))


COORDINATOR_NOT_READY = frozenset(
    {
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
    }
)


def router_members(settings: Settings) -> list[int]:
    """How many partitions each member of the router group owns, sorted."""
    group = f"{settings.consumer_group_prefix}router"
    admin = admin_client(settings)  # kept referenced until the future completes
    [future] = admin.describe_consumer_groups([group], request_timeout=10).values()
    try:
        description = future.result()
    except KafkaException as exc:
        # A group coordinator still being found or loaded knows no members yet.
        if exc.args[0].code() in COORDINATOR_NOT_READY:
            return []
        raise
    return sorted(len(member.assignment.topic_partitions) for member in description.members)


def event_value(event_id: str, event_type: str, tenant: str, data: dict[str, Any]) -> bytes:
    return CODEC.encode(
        "Event",
        {
            "id": event_id,
            "type": event_type,
            "tenant_id": tenant,
            "occurred_at": "2026-11-27T10:00:00Z",
            "data": orjson.dumps(data).decode(),
        },
    )


def publish_many(platform: Platform, events: Iterable[tuple[str, str]]) -> list[str]:
    """Publish (tenant, type) events quickly, flushing once; returns their ids in order."""
    ids = [platform.event(tenant, kind, flush=False) for tenant, kind in events]
    platform.flush()
    return ids


# --- fan-out, tenants, subscriptions --------------------------------------------------------


MIXED_TYPES = (
    "invoice.created",
    "invoice.paid",
    "invoice.voided",
    "offer.accepted",
    "offer.declined",
    "milestone.approved",
    "webhook.disabled",
)


def test_thousand_events_fan_out_to_exactly_the_subscribed_webhooks(
    platform: Platform,
    pipeline_settings: Settings,
    receiver: TestReceiver,
    services: ServiceStarter,
) -> None:
    invoices = hook(platform, receiver, A, ["invoice.*"])
    paid_or_accepted = hook(platform, receiver, A, ["invoice.paid", "offer.accepted"])
    everything_b = hook(platform, receiver, B, ["*"])
    services("router")
    services("sender")

    # 7 types x 2 tenants are coprime cycles, so every (tenant, type) pair occurs. Each tenant
    # ends with an invoice.paid that both tenants have subscribers for: the barrier after which
    # the deliveries topic is complete for that tenant's partition.
    events = [(A if i % 2 else B, MIXED_TYPES[i % len(MIXED_TYPES)]) for i in range(1000)]
    events += [(A, "invoice.paid"), (B, "invoice.paid")]
    ids = publish_many(platform, events)
    published = list(zip(ids, events, strict=True))
    expected = {
        "invoice.*": (
            invoices,
            {e for e, (t, kind) in published if t == A and kind.startswith("invoice.")},
        ),
        "paid/accepted": (
            paid_or_accepted,
            {
                e
                for e, (t, kind) in published
                if t == A and kind in ("invoice.paid", "offer.accepted")
            },
        ),
        "B *": (everything_b, {e for e, (t, _kind) in published if t == B}),
    }
    wait_delivered(receiver, expected, timeout=60)

    decisions = routed(pipeline_settings)
    assert max(decisions.values()) == 1, "an event was routed twice to one webhook"
    for name, (webhook, wanted) in expected.items():
        assert ids_at(receiver, webhook) == wanted, name
        assert routed_to(decisions, webhook) == wanted, name
        assert_verified(receiver, webhook)
    kinds = dict(zip(ids, (kind for _tenant, kind in events), strict=True))
    for request in requests_to(receiver, everything_b):
        body = orjson.loads(request.body)
        assert body["type"] == kinds[body["id"]]


def test_tenant_isolation_and_category_and_wildcard_subscriptions(
    platform: Platform,
    pipeline_settings: Settings,
    receiver: TestReceiver,
    services: ServiceStarter,
) -> None:
    exact_a = hook(platform, receiver, A, ["invoice.paid"])
    offers_a = hook(platform, receiver, A, ["offer.*"])
    all_a = hook(platform, receiver, A, ["*"])
    exact_b = hook(platform, receiver, B, ["invoice.paid"])
    services("router")
    services("sender")

    # B's invoice.paid matches A's exact and wildcard subscriptions by type, but is B's; its
    # delivery to exact_b is its own barrier (one event is routed in one transaction).
    b_paid = platform.event(B, "invoice.paid")
    a_paid = platform.event(A, "invoice.paid")
    a_offer = platform.event(A, "offer.declined")
    a_milestone = platform.event(A, "milestone.rejected")  # only the wildcard; A's barrier
    wait_delivered(
        receiver,
        {
            "exact_a": (exact_a, {a_paid}),
            "offers_a": (offers_a, {a_offer}),
            "all_a": (all_a, {a_paid, a_offer, a_milestone}),
            "exact_b": (exact_b, {b_paid}),
        },
    )
    assert routed(pipeline_settings) == Counter(
        {
            (b_paid, exact_b.id): 1,
            (a_paid, exact_a.id): 1,
            (a_paid, all_a.id): 1,
            (a_offer, offers_a.id): 1,
            (a_offer, all_a.id): 1,
            (a_milestone, all_a.id): 1,
        }
    )
    for webhook in (exact_a, offers_a, all_a, exact_b):
        assert_verified(receiver, webhook)


# --- owner permissions ----------------------------------------------------------------------


def test_owner_permissions_filter_and_shape_and_revocation_applies_to_later_events(
    platform: Platform,
    pipeline_settings: Settings,
    receiver: TestReceiver,
    services: ServiceStarter,
) -> None:
    # The revocation reasoning below relies on the principals topic keeping its order.
    assert pipeline_settings.compacted_partitions == 1
    platform.principal("usr_offers", A, ["offers:read"])
    platform.principal("usr_basic", A, ["invoices:read"])
    platform.principal("usr_full", A, ["invoices:read", "invoices:read_sensitive"])
    platform.principal("usr_revoked", A, ["invoices:read", "invoices:read_sensitive"])
    platform.principal("usr_of_b", B, ["invoices:read", "invoices:read_sensitive"])
    no_invoices = hook(platform, receiver, A, ["invoice.*"], owner_id="usr_offers")
    basic = hook(platform, receiver, A, ["invoice.*"], owner_id="usr_basic")
    full = hook(platform, receiver, A, ["invoice.*"], owner_id="usr_full")
    revoked = hook(platform, receiver, A, ["invoice.*"], owner_id="usr_revoked")
    unknown = hook(platform, receiver, A, ["invoice.*"], owner_id="usr_nobody")
    foreign = hook(platform, receiver, A, ["invoice.*"], owner_id="usr_of_b")
    # Unknown owner at first; its principal is published later as a marker (see below).
    sentinel = hook(platform, receiver, A, ["invoice.*"], owner_id="usr_sentinel")
    services("router")
    services("sender")

    first = [platform.event(A, "invoice.paid", SENSITIVE_INVOICE) for _ in range(3)]
    wait_delivered(
        receiver,
        {"basic": (basic, set(first)), "full": (full, set(first)), "rev": (revoked, set(first))},
    )
    decisions = routed(pipeline_settings)
    for webhook in (no_invoices, unknown, foreign, sentinel):
        assert routed_to(decisions, webhook) == set()
        assert ids_at(receiver, webhook) == set()
    for event_id, body in bodies_at(receiver, basic).items():
        assert body["data"] == {k: v for k, v in SENSITIVE_INVOICE.items() if k != "bank_details"}
        assert body["id"] == event_id
    for webhook in (full, revoked):
        assert all(b["data"] == SENSITIVE_INVOICE for b in bodies_at(receiver, webhook).values())
    for webhook in (basic, full, revoked):
        assert_verified(receiver, webhook)

    # Partial revocation. The principals topic is not ordered against events, so we publish
    # fresh events until one reaches `revoked` without bank_details. The router applies view
    # updates in topic order and routes an events partition in order, so from that event on
    # every later event must be shaped without the field: the flags in publish order must be
    # some "with" followed only by "without", never back.
    platform.principal("usr_revoked", A, ["invoices:read"])

    def shaped_without(published: list[str]) -> bool:
        bodies = bodies_at(receiver, revoked)
        return any("bank_details" not in bodies[e]["data"] for e in published if e in bodies)

    probes = publish_until(
        platform,
        shaped_without,
        tenant=A,
        event_type="invoice.paid",
        data=SENSITIVE_INVOICE,
        what="the revocation of invoices:read_sensitive to take effect",
    )
    later = [platform.event(A, "invoice.paid", SENSITIVE_INVOICE) for _ in range(3)]
    ordered = probes + later
    wait_delivered(receiver, {"rev": (revoked, set(ordered)), "basic": (basic, set(ordered))})
    bodies = bodies_at(receiver, revoked)
    flags = ["bank_details" in bodies[e]["data"] for e in ordered]
    cut = flags.index(False)
    assert not any(flags[cut:]), f"a field came back after its permission was revoked: {flags}"
    assert all("bank_details" not in b["data"] for b in bodies_at(receiver, basic).values())

    # Full revocation, observed through a marker: the principals topic has one partition, so
    # the view applies usr_revoked's loss of invoices:read before usr_sentinel appears. The
    # first event that reaches `sentinel` was routed with both changes applied (the router
    # routes a batch against one snapshot of the views), and so was every event after it.
    platform.principal("usr_revoked", A, [])
    platform.principal("usr_sentinel", A, ["invoices:read"])
    markers = publish_until(
        platform,
        lambda published: bool(ids_at(receiver, sentinel) & set(published)),
        tenant=A,
        event_type="invoice.paid",
        data=SENSITIVE_INVOICE,
        what="the sentinel owner to become known",
    )
    after = markers[first_index(markers, ids_at(receiver, sentinel)) :]
    after += [platform.event(A, "invoice.paid", SENSITIVE_INVOICE) for _ in range(2)]
    wait_delivered(receiver, {"sentinel": (sentinel, set(after))})
    decisions = routed(pipeline_settings)
    assert not routed_to(decisions, revoked) & set(after)
    assert not ids_at(receiver, revoked) & set(after)
    for webhook in (no_invoices, unknown, foreign):
        assert routed_to(decisions, webhook) == set()


# --- enabled flag ---------------------------------------------------------------------------


def test_disabled_webhook_receives_nothing_and_re_enabling_resumes(
    platform: Platform,
    pipeline_settings: Settings,
    receiver: TestReceiver,
    services: ServiceStarter,
) -> None:
    assert pipeline_settings.compacted_partitions == 1  # webhook updates apply in order
    live = hook(platform, receiver, A, ["invoice.paid"])
    doomed = hook(platform, receiver, A, ["invoice.paid"])
    dormant = hook(platform, receiver, A, ["invoice.paid"], enabled=False)
    services("router")
    services("sender")

    first = [platform.event(A, "invoice.paid") for _ in range(3)]
    wait_delivered(receiver, {"live": (live, set(first)), "doomed": (doomed, set(first))})
    assert routed_to(routed(pipeline_settings), dormant) == set()
    assert ids_at(receiver, dormant) == set()

    # Disable `live`, delete `doomed`, then re-enable `dormant`, in this order on the one
    # webhooks partition: the first event reaching `dormant` was routed after all three.
    platform.webhook(
        live.next_version(int(time.time() * 1000), enabled=False, disabled_reason="by test")
    )
    platform.delete_webhook(doomed.id)
    platform.webhook(dormant.next_version(int(time.time() * 1000), enabled=True))
    probes = publish_until(
        platform,
        lambda published: bool(ids_at(receiver, dormant) & set(published)),
        tenant=A,
        event_type="invoice.paid",
        data={"invoice_id": "inv_2"},
        what="the re-enabled webhook to receive",
    )
    after = probes[first_index(probes, ids_at(receiver, dormant)) :]
    after += [platform.event(A, "invoice.paid") for _ in range(3)]
    wait_delivered(receiver, {"dormant": (dormant, set(after))})
    decisions = routed(pipeline_settings)
    for webhook in (live, doomed):
        assert not routed_to(decisions, webhook) & set(after)
        assert not ids_at(receiver, webhook) & set(after)
    assert_verified(receiver, dormant)


# --- JSON events ----------------------------------------------------------------------------


def test_json_events_are_routed_like_avro_events(
    platform: Platform, receiver: TestReceiver, services: ServiceStarter
) -> None:
    webhook = hook(platform, receiver, A, ["*"])
    services("router")
    services("sender")

    data = {"invoice_id": "inv_json", "amount_cents": 10, "nested": {"a": [1, 2]}}
    as_json = platform.event(A, "invoice.created", data, as_json=True)
    with_charset = f"evt_{uuid.uuid4().hex}"
    platform.raw(
        platform.topics.events,
        orjson.dumps(
            {
                "id": with_charset,
                "type": "offer.accepted",
                "tenant_id": A,
                "occurred_at": "2026-11-27T11:00:00+01:00",
                "data": data,
            }
        ),
        key=A.encode(),
        headers=[("Content-Type", b"application/json; charset=utf-8")],
    )
    as_avro = platform.event(A, "invoice.created", data)
    wait_delivered(receiver, {"json": (webhook, {as_json, with_charset, as_avro})})

    bodies = bodies_at(receiver, webhook)
    assert bodies[as_json]["type"] == "invoice.created"
    assert bodies[with_charset]["type"] == "offer.accepted"
    assert bodies[with_charset]["occurred_at"] == "2026-11-27T10:00:00Z"
    for event_id in (as_json, with_charset, as_avro):
        assert bodies[event_id]["data"] == data
        assert list(bodies[event_id]) == ["id", "type", "occurred_at", "api_version", "data"]
    # Both encodings of the same event give the same body apart from the id.
    assert {**bodies[as_json], "id": ""} == {**bodies[as_avro], "id": ""}
    assert_verified(receiver, webhook)


# --- poison input ---------------------------------------------------------------------------


def test_poison_events_are_dead_lettered_and_routing_continues(
    settings_factory: SettingsFactory, receiver: TestReceiver, services: ServiceStarter
) -> None:
    settings = settings_factory(
        allow_private_targets=("127.0.0.0/8",), request_timeout=2.0, max_payload_bytes=2048
    )
    create_topics(settings)
    platform = Platform(settings)
    topics = Topics.from_settings(settings)
    webhook = hook(platform, receiver, A, ["*"])
    router = services("router", settings)
    services("sender", settings)

    json_header = [("content-type", b"application/json")]
    garbage = b"\x00\x01 not avro at all"
    bad_body = b"\xc3\x01" + CODEC.fingerprint("Event") + b"\xff\xff\xff"
    unknown_type = event_value("evt_unknown", "invoice.refunded", A, {"invoice_id": "i"})
    no_type = orjson.dumps(
        {"id": "evt_no_type", "tenant_id": A, "occurred_at": "2026-11-27T10:00:00Z", "data": {}}
    )
    oversize = event_value("evt_big", "invoice.paid", A, {"blob": "x" * 3000})
    assert len(oversize) > settings.max_payload_bytes
    poison: list[tuple[bytes | None, list[tuple[str, bytes]] | None, str]] = [
        (garbage, None, "undecodable"),
        (bad_body, None, "undecodable"),
        (None, None, "undecodable"),  # a tombstone
        (unknown_type, None, "unknown_event_type"),
        (no_type, json_header, "missing_field"),
        (oversize, None, "payload_too_large"),
    ]
    for value, headers, _reason in poison:
        platform.raw(topics.events, value, key=A.encode(), headers=headers, flush=False)
    platform.flush()
    # Same tenant key, so same partition: routed after every poison record above.
    valid = platform.event(A, "invoice.paid", {"invoice_id": "inv_ok"})
    wait_delivered(receiver, {"valid": (webhook, {valid})})
    assert_verified(receiver, webhook)
    assert router.alive()

    # The dead letters were produced in the routing transactions, committed by now.
    letters = read_topic(settings, topics.dlq, "DeadLetter")
    assert len(letters) == len(poison)
    letters.sort(key=lambda letter: letter["source_offset"])
    for letter, (value, _headers, reason) in zip(letters, poison, strict=True):
        assert letter["reason"] == reason, letter["detail"]
        assert letter["value"] == (value or b"")
        assert letter["key"] == A.encode()
        assert letter["source_topic"] == topics.events
        assert letter["detail"]
    # Each names its own record: consecutive offsets in the tenant's partition.
    assert len({letter["source_partition"] for letter in letters}) == 1
    offsets = [letter["source_offset"] for letter in letters]
    assert offsets == list(range(offsets[0], offsets[0] + len(poison)))
    # Dead letters travel in the routing transaction: nothing was routed for the poison.
    assert set(routed(settings)) == {(valid, webhook.id)}


def test_poison_on_the_view_topics_is_dead_lettered_and_routing_continues(
    platform: Platform,
    pipeline_settings: Settings,
    receiver: TestReceiver,
    services: ServiceStarter,
) -> None:
    assert pipeline_settings.compacted_partitions == 1  # records after the poison come later
    topics = platform.topics
    before = hook(platform, receiver, A, ["invoice.paid"])
    owned = hook(platform, receiver, A, ["invoice.paid"], owner_id="usr_after")
    platform.raw(topics.webhooks, b"not a webhook", key=b"wh_garbage")
    services("router")
    services("sender")
    first = platform.event(A, "invoice.paid")
    wait_delivered(receiver, {"before": (before, {first})})

    # Poison arriving while the router runs: a Principal record on the webhooks topic and
    # garbage on the principals topic. A webhook and a principal published after them (same
    # partitions) must still take effect: both views went past the poison.
    principal_bytes = CODEC.encode("Principal", {"id": "usr_x", "tenant_id": A, "permissions": []})
    platform.raw(topics.webhooks, principal_bytes, key=b"wh_wrong_record")
    platform.raw(topics.principals, b"\xc3\x01garbage", key=b"usr_garbage")
    after = hook(platform, receiver, A, ["invoice.paid"])
    platform.principal("usr_after", A, ["invoices:read"])
    publish_until(
        platform,
        lambda published: all(ids_at(receiver, w) & set(published) for w in (after, owned)),
        tenant=A,
        event_type="invoice.paid",
        data={"invoice_id": "inv_3"},
        what="the webhook and the owner published after the poison to take effect",
    )

    # The views dead-letter through a plain producer, so these may still be on their way.
    # Every service's view reports what it skipped: the router's three, and the sender's two
    # on the webhooks topic (it has no principals view).
    found = dead_letters(pipeline_settings, 5)
    letters = [letter for letter in found if letter["service"] == "router"]
    sender_keys = {letter["key"] for letter in found if letter["service"] == "sender"}
    assert sender_keys == {b"wh_garbage", b"wh_wrong_record"}
    by_key = {letter["key"]: letter for letter in letters}
    assert len(letters) == 3 and set(by_key) == {b"wh_garbage", b"wh_wrong_record", b"usr_garbage"}
    assert by_key[b"wh_garbage"]["value"] == b"not a webhook"
    assert by_key[b"wh_wrong_record"]["value"] == principal_bytes
    assert by_key[b"usr_garbage"]["value"] == b"\xc3\x01garbage"
    assert by_key[b"usr_garbage"]["source_topic"] == topics.principals
    for key in (b"wh_garbage", b"wh_wrong_record"):
        assert by_key[key]["source_topic"] == topics.webhooks
    assert all(letter["reason"] == "undecodable" for letter in letters)
    assert all(letter["error_type"] == "DecodeError" for letter in letters)
    assert_verified(receiver, before)
    assert_verified(receiver, after)


# --- exactly once across crashes and scaling ------------------------------------------------


def four_webhooks(platform: Platform) -> list[Webhook]:
    """Two webhooks per tenant that nobody serves: these tests run the router alone."""
    url = "http://127.0.0.1:9/unused"
    return [platform.webhook(make_webhook(tenant, url, ["*"])) for tenant in (A, A, B, B)]


def assert_routed_exactly_once(
    settings: Settings, webhooks: list[Webhook], ids_by_tenant: dict[str, list[str]]
) -> None:
    expected = {
        (event_id, webhook.id)
        for webhook in webhooks
        for event_id in ids_by_tenant[webhook.tenant_id]
    }
    decisions = wait_for(
        lambda: (found := routed(settings)) and sum(found.values()) >= len(expected) and found,
        timeout=60,
        interval=0.5,
        what=f"{len(expected)} deliveries",
    )
    duplicates = {pair: n for pair, n in decisions.items() if n > 1}
    assert not duplicates, f"{len(duplicates)} deliveries were routed more than once"
    assert set(decisions) == expected


def test_router_killed_mid_transaction_and_restarted_routes_exactly_once(
    platform: Platform, pipeline_settings: Settings, services: ServiceStarter
) -> None:
    topics = platform.topics
    webhooks = four_webhooks(platform)
    count = 3000
    events = [(A if i % 2 else B, MIXED_TYPES[i % len(MIXED_TYPES)]) for i in range(count)]
    ids = publish_many(platform, events)
    ids_by_tenant = {
        tenant: [e for e, (t, _kind) in zip(ids, events, strict=True) if t == tenant]
        for tenant in (A, B)
    }
    assert all(end > 0 for end in partition_ends(pipeline_settings, topics.events))
    total = 2 * count

    # Small batches make many transactions. Freeze the router (SIGSTOP) at a moment when a
    # transaction has records in `deliveries` but is not committed: the read_uncommitted end
    # offset is then ahead of the read_committed one (the last stable offset). If the freeze
    # came just after a commit, let it run on and try again. Then SIGKILL it, frozen mid-way.
    # A commit request already on its way to the broker still completes after the kill; then
    # the transaction closes within moments (an abandoned one stays open for the 15 s
    # transaction timeout), and the next router gets frozen and killed the same way.
    with (
        watermarks(pipeline_settings, topics.deliveries, "read_uncommitted") as written,
        watermarks(pipeline_settings, topics.deliveries, "read_committed") as stable,
    ):

        def open_transaction() -> bool:
            ends = written()  # first: a commit in between then only hides an open transaction
            return sum(ends) >= total // 4 and stable() != ends

        def killed_mid_transaction() -> bool:
            router = services("router", HOOKSTREAM_ROUTER_BATCH_SIZE="50")
            pid = router.process.pid

            def frozen_mid_transaction() -> bool:
                if not open_transaction():
                    return False
                os.kill(pid, signal.SIGSTOP)
                if open_transaction():
                    return True
                os.kill(pid, signal.SIGCONT)
                return False

            wait_for(frozen_mid_transaction, timeout=60, interval=0.002, what="an open transaction")
            router.kill()
            settles_by = time.monotonic() + 3
            while time.monotonic() < settles_by:
                if not open_transaction():
                    return False
                time.sleep(0.05)
            return True

        wait_for(killed_mid_transaction, timeout=240, interval=0, what="a kill mid-transaction")
        assert open_transaction(), "the killed router's transaction was not left open"
    committed = sum(routed(pipeline_settings).values())
    assert 0 < committed < total

    # Same instance id (the default: the hostname), so the same transactional.id: the new
    # router fences the killed one and aborts its open transaction.
    second = services("router", HOOKSTREAM_ROUTER_BATCH_SIZE="50")
    assert_routed_exactly_once(pipeline_settings, webhooks, ids_by_tenant)
    assert second.alive()


def test_routers_outlive_a_broker_killed_and_restarted_and_route_everything_once(
    tmp_path: Path,
) -> None:
    # A broker of this test's own: it is killed -9 and restarted, which the session's
    # broker must not be.
    run_dir = tmp_path / "kafka"
    port = localkafka.free_port()
    state = localkafka.start(run_dir=run_dir, port=port)
    routers: list[Service] = []
    try:
        settings = settings_for_test(state.bootstrap, unique_prefix())
        create_topics(settings)
        platform = Platform(settings)
        webhooks = four_webhooks(platform)
        ids_by_tenant: dict[str, list[str]] = {A: [], B: []}

        def publish(count: int) -> None:
            events = [(A if i % 2 else B, MIXED_TYPES[i % len(MIXED_TYPES)]) for i in range(count)]
            for event_id, (tenant, _kind) in zip(
                publish_many(platform, events), events, strict=True
            ):
                ids_by_tenant[tenant].append(event_id)

        first = Service(settings, "router", tmp_path, HOOKSTREAM_ROUTER_BATCH_SIZE="50")
        routers = [first]
        publish(300)
        wait_for(
            lambda: sum(routed(settings).values()) >= 2 * 300,
            timeout=60,
            interval=0.2,
            what="the first events routed",
        )
        # The broker dies under the router mid-stream and comes back after longer than the
        # router's transaction timeout: its open transaction is aborted and its producer
        # fenced. The same router must carry on, and a router started meanwhile too.
        publish(300)
        os.killpg(state.pid, signal.SIGKILL)
        os.waitpid(state.pid, 0)
        second = Service(
            settings,
            "router",
            tmp_path,
            HOOKSTREAM_ROUTER_BATCH_SIZE="50",
            HOOKSTREAM_INSTANCE_ID="router-two",
        )
        routers.append(second)
        kill_and_restart_broker(run_dir, port)
        publish(300)
        assert_routed_exactly_once(settings, webhooks, ids_by_tenant)
        assert first.alive(), first.log()[-4000:]
        assert second.alive(), second.log()[-4000:]
    finally:
        for router in routers:
            router.close()
        localkafka.stop(run_dir, wipe=True)


def test_two_routers_in_one_group_route_everything_exactly_once(
    platform: Platform, pipeline_settings: Settings, services: ServiceStarter
) -> None:
    topics = platform.topics
    webhooks = four_webhooks(platform)
    ids_by_tenant: dict[str, list[str]] = {A: [], B: []}

    def publish(count: int) -> None:
        events = [(A if i % 2 else B, MIXED_TYPES[i % len(MIXED_TYPES)]) for i in range(count)]
        for event_id, (tenant, _kind) in zip(publish_many(platform, events), events, strict=True):
            ids_by_tenant[tenant].append(event_id)

    publish(1000)
    first = services("router", HOOKSTREAM_INSTANCE_ID="r1", HOOKSTREAM_ROUTER_BATCH_SIZE="50")
    wait_for(
        lambda: high_watermarks(pipeline_settings, topics.deliveries) > 0,
        timeout=60,
        what="the first router to start routing",
    )
    # A second member joins while events keep arriving: the partitions are rebalanced.
    second = services("router", HOOKSTREAM_INSTANCE_ID="r2", HOOKSTREAM_ROUTER_BATCH_SIZE="50")
    publish(1000)
    # Both members own a partition of `events` (each tenant key lands in its own partition).
    assert all(end > 0 for end in partition_ends(pipeline_settings, topics.events))
    wait_for(
        lambda: router_members(pipeline_settings) == [1, 1],
        timeout=30,
        interval=0.2,
        what="both routers to own one events partition each",
    )
    wait_for(
        lambda: sum(routed(pipeline_settings).values()) >= 2 * 2000,
        timeout=60,
        interval=0.5,
        what="the deliveries of the first half of the events",
    )
    # One member leaves gracefully; the other takes over its partitions.
    assert first.terminate() == 0
    wait_for(
        lambda: router_members(pipeline_settings) == [2],
        timeout=30,
        interval=0.2,
        what="the remaining router to own both partitions",
    )
    publish(1000)
    assert_routed_exactly_once(pipeline_settings, webhooks, ids_by_tenant)
    assert second.alive()


def test_two_routers_on_one_host_without_an_instance_id_do_not_fence_each_other(
    platform: Platform, pipeline_settings: Settings, services: ServiceStarter
) -> None:
    # Neither is given HOOKSTREAM_INSTANCE_ID: with the host name alone as the default, both
    # took the same transactional id and fenced each other in turn.
    webhooks = four_webhooks(platform)
    ids_by_tenant: dict[str, list[str]] = {A: [], B: []}
    events = [(A if i % 2 else B, MIXED_TYPES[i % len(MIXED_TYPES)]) for i in range(600)]
    first = services("router", unset=["HOOKSTREAM_INSTANCE_ID"])
    second = services("router", unset=["HOOKSTREAM_INSTANCE_ID"])
    wait_for(
        lambda: router_members(pipeline_settings) == [1, 1],
        timeout=60,
        interval=0.2,
        what="both routers to own one events partition each",
    )
    for event_id, (tenant, _kind) in zip(publish_many(platform, events), events, strict=True):
        ids_by_tenant[tenant].append(event_id)
    assert_routed_exactly_once(pipeline_settings, webhooks, ids_by_tenant)
    for router in (first, second):
        assert router.alive(), router.log()[-4000:]
        assert "starting over" not in router.log(), router.log()[-4000:]


def test_a_partition_revoked_while_a_batch_gathers_is_routed_by_its_new_owner_alone(
    platform: Platform, pipeline_settings: Settings, services: ServiceStarter
) -> None:
    webhooks = four_webhooks(platform)
    ids_by_tenant: dict[str, list[str]] = {A: [], B: []}

    def publish(count: int) -> None:
        events = [(A if i % 2 else B, MIXED_TYPES[i % len(MIXED_TYPES)]) for i in range(count)]
        for event_id, (tenant, _kind) in zip(publish_many(platform, events), events, strict=True):
            ids_by_tenant[tenant].append(event_id)

    # Long gathers: after a transaction, the next batch takes its first record and then waits
    # in a second consume() for more, until 20 s after that transaction began.
    slow = {"HOOKSTREAM_ROUTER_BATCH_SECONDS": "20"}
    services("router", HOOKSTREAM_INSTANCE_ID="r1", **slow)
    wait_for(
        lambda: router_members(pipeline_settings) == [2],
        timeout=30,
        interval=0.2,
        what="the router to own both partitions",
    )
    ids_by_tenant[A].append(platform.event(A, MIXED_TYPES[0]))
    wait_for(
        lambda: sum(routed(pipeline_settings).values()) >= 2,
        timeout=30,
        interval=0.2,
        what="the first transaction",
    )
    # The next batch starts gathering; a second member joins meanwhile, and the rebalance
    # comes during the first router's second consume(): the partition it loses goes to the
    # new member, which reads it from the committed offset.
    publish(40)
    second = services("router", HOOKSTREAM_INSTANCE_ID="r2", **slow)
    wait_for(
        lambda: router_members(pipeline_settings) == [1, 1],
        timeout=30,
        interval=0.2,
        what="both routers to own one events partition each",
    )
    assert_routed_exactly_once(pipeline_settings, webhooks, ids_by_tenant)
    assert second.alive()
