"""Concurrent writers of the webhooks topic never lose a change (issue 15, part 1).

Two API replicas (processes) change one webhook at the same moment; a machine writer's copy
lands after a delete; a 410 answers while the webhook is being deleted. Every replica, and a
view read afresh from the topic, ends in the same state with every change in it.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from hookstream.core.codec import default_codec
from hookstream.core.records import Webhook
from hookstream.core.settings import Settings
from hookstream.core.topics import Topics
from hookstream.core.view import webhook_view
from hookstream.tools import localkafka
from tests.helpers import fresh_store_url, http_request, wait_for
from tests.pipeline import (
    PipelineStack,
    Platform,
    api_settings,
    lone_api_settings,
    read_topic,
    running_api,
    running_stack,
)
from tests.receiver import Behaviour

pytestmark = pytest.mark.integration

KEY = "concurrency-key-tenant-a-0123456789"
KEYS = {KEY: "tenant_a"}
PUBLIC_URL = "https://93.184.215.14/hooks"
ROUNDS = 8


@dataclass
class Answer:
    status: int
    json: Any
    headers: dict[str, str]


def call(
    port: int, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
) -> Answer:
    sent = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    sent.update(headers or {})
    payload = None if body is None else orjson.dumps(body)
    reply = http_request(port, method, path, payload, sent)
    parsed = orjson.loads(reply.body) if reply.body else None
    return Answer(reply.status, parsed, {k.lower(): v for k, v in reply.headers.items()})


@dataclass
class Replicas:
    settings: Settings
    ports: tuple[int, int]


@pytest.fixture(scope="module")
def replicas(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:
    """Two API processes on one store and one set of topics, as a deployment runs them."""
    directory: Path = tmp_path_factory.mktemp("concurrency")
    with fresh_store_url("postgresql", directory) as store_url:
        first = lone_api_settings(kafka_bootstrap, store_url, KEYS)
        second = first.model_copy(update={"api_port": localkafka.free_port()})
        with running_api(first, directory), running_api(second, directory):
            yield Replicas(first, (first.api_port, second.api_port))


def create(port: int) -> dict[str, Any]:
    body = {"name": f"race {uuid.uuid4().hex[:8]}", "url": PUBLIC_URL, "events": ["*"]}
    answer = call(port, "POST", "/v1/webhooks", body)
    assert answer.status == 201, answer.json
    created: dict[str, Any] = answer.json
    return created


def fresh_view_of(settings: Settings, webhook_id: str) -> Webhook | None:
    """What a view read from the start of the topic now holds for `webhook_id`."""
    codec = default_codec()
    view = webhook_view(settings, codec, Topics.from_settings(settings).webhooks, None).start()
    try:
        view.wait_ready(30)
        return view.get(webhook_id)
    finally:
        view.stop()


def converged(replicas: Replicas, webhook_id: str) -> dict[str, Any]:
    """The webhook once both replicas answer the same version of it."""

    def same() -> dict[str, Any] | None:
        answers = [call(port, "GET", f"/v1/webhooks/{webhook_id}") for port in replicas.ports]
        tags = {answer.headers.get("etag") for answer in answers}
        if any(answer.status != 200 for answer in answers) or len(tags) != 1:
            return None
        got: dict[str, Any] = answers[0].json
        return got

    return wait_for(same, timeout=20, what="both replicas on one version")


def race(*requests: tuple[str, int, str, str, Any]) -> dict[str, Answer]:
    """Send `requests` (name, port, method, path, body) at the same moment, one thread each."""
    start = threading.Barrier(len(requests))
    results: dict[str, Answer] = {}

    def send(name: str, port: int, method: str, path: str, body: Any) -> None:
        start.wait()
        results[name] = call(port, method, path, body)

    threads = [threading.Thread(target=send, args=request) for request in requests]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results


def test_rename_and_rotation_on_two_replicas_both_land(replicas: Replicas) -> None:
    port_a, port_b = replicas.ports
    webhook = create(port_a)
    path = f"/v1/webhooks/{webhook['id']}"
    converged(replicas, webhook["id"])
    for round_ in range(ROUNDS):
        results = race(
            ("rotate", port_a, "POST", f"{path}/rotate-secret", {}),
            ("rename", port_b, "PATCH", path, {"name": f"round {round_}"}),
        )
        assert results["rotate"].status == 200, results["rotate"].json
        assert results["rename"].status == 200, results["rename"].json
        now = converged(replicas, webhook["id"])
        # Neither change undid the other: the name B set and the secret A showed.
        assert now["name"] == f"round {round_}", f"round {round_}: the rename was lost"
        secret = results["rotate"].json["secret"]
        assert now["secret_hint"].endswith(secret[-4:]), f"round {round_}: the rotation was lost"
    # Every change was applied once, on the one before it.
    final = call(port_a, "GET", path)
    assert final.headers["etag"] == f'"v{1 + 2 * ROUNDS}"'
    fresh = fresh_view_of(replicas.settings, webhook["id"])
    assert fresh is not None and fresh.name == f"round {ROUNDS - 1}"
    assert fresh.version == 1 + 2 * ROUNDS


def test_if_match_is_honoured_across_replicas(replicas: Replicas) -> None:
    port_a, port_b = replicas.ports
    webhook = create(port_a)
    path = f"/v1/webhooks/{webhook['id']}"
    converged(replicas, webhook["id"])
    read = call(port_a, "GET", path)
    tag = read.headers["etag"]
    assert tag == '"v1"'

    # A client changes it through replica B; a client holding the old tag is refused on A,
    # whether or not A has read B's write yet, and is told the current version.
    changed = call(port_b, "PATCH", path, {"name": "by B"}, {"If-Match": tag})
    assert changed.status == 200, changed.json
    assert changed.headers["etag"] == '"v2"'
    stale = call(port_a, "PATCH", path, {"name": "by A"}, {"If-Match": tag})
    assert stale.status == 412, stale.json
    assert stale.json["error"]["code"] == "precondition_failed"
    assert stale.json["error"]["details"] == {"etag": '"v2"'}
    assert stale.headers["etag"] == '"v2"'
    for method, target, body in (
        ("DELETE", path, None),
        ("POST", f"{path}/rotate-secret", {}),
    ):
        refused = call(port_a, method, target, body, {"If-Match": tag})
        assert refused.status == 412, (method, refused.json)
    # A weak tag never matches (If-Match compares strongly); a list may name the current one.
    weak = call(port_a, "PATCH", path, {"name": "weak"}, {"If-Match": 'W/"v2"'})
    assert weak.status == 412
    listed = call(port_a, "PATCH", path, {"name": "listed"}, {"If-Match": '"v1", "v2"'})
    assert listed.status == 200, listed.json
    assert converged(replicas, webhook["id"])["name"] == "listed"
    anything = call(port_b, "POST", f"{path}/rotate-secret", {}, {"If-Match": "*"})
    assert anything.status == 200, anything.json
    deleted = call(port_b, "DELETE", path, headers={"If-Match": anything.headers["etag"]})
    assert deleted.status == 204
    assert call(port_b, "PATCH", path, {"name": "gone"}, {"If-Match": "*"}).status == 404


def test_a_stale_disabled_copy_after_a_delete_does_not_resurrect_it(replicas: Replicas) -> None:
    """A machine writer (the sender on 410, the log-sink's auto-disable) whose view had not
    read the tombstone yet writes its disabled copy after it, as both did before versions."""
    port_a, port_b = replicas.ports
    webhook = create(port_a)
    path = f"/v1/webhooks/{webhook['id']}"
    converged(replicas, webhook["id"])
    held = fresh_view_of(replicas.settings, webhook["id"])
    assert held is not None
    assert call(port_a, "DELETE", path).status == 204
    Platform(replicas.settings).webhook(held.disabled("endpoint answered 410 Gone", 1))

    def listed(port: int) -> set[str]:
        answer = call(port, "GET", "/v1/webhooks?limit=100")
        return {w["id"] for w in answer.json["data"]}

    # Written after the stale copy: once a replica has it, it has read the copy too.
    barrier = create(port_b)
    for port in replicas.ports:
        wait_for(lambda p=port: barrier["id"] in listed(p), timeout=20, what="the barrier")
        assert webhook["id"] not in listed(port), "the deleted webhook came back"
        assert call(port, "GET", path).status == 404
    assert fresh_view_of(replicas.settings, webhook["id"]) is None

    # The refused copy is settled: the topic's last record of the key is a tombstone again,
    # which is what compaction keeps.
    topic = Topics.from_settings(replicas.settings).webhooks

    def last_is_tombstone() -> bool:
        values = [
            message.value()
            for message in read_topic(replicas.settings, topic, None)
            if message.key() == webhook["id"].encode()
        ]
        return bool(values) and values[-1] is None

    wait_for(last_is_tombstone, timeout=30, interval=0.5, what="the refused copy settled")


class Pipeline(PipelineStack):
    pass


def test_a_delete_while_a_410_is_in_flight_stays_deleted(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    with (
        fresh_store_url("sqlite", tmp_path) as store_url,
        running_stack(
            Pipeline,
            api_settings(kafka_bootstrap, store_url, KEYS, request_timeout=3.0),
            tmp_path,
            ("api", "router", "sender"),
        ) as stack,
    ):
        port = stack.settings.api_port
        body = {"name": "gone", "url": stack.receiver.url("/gone"), "events": ["invoice.paid"]}
        created = call(port, "POST", "/v1/webhooks", body)
        assert created.status == 201
        webhook_id = created.json["id"]
        stack.receiver.expect("/gone", [created.json["secret"]], Behaviour(410, delay=1.0))
        event = {"type": "invoice.paid", "data": {"n": 1}}

        def in_flight() -> bool:
            call(port, "POST", "/v1/events", event)
            return bool(stack.receiver.received("/gone"))

        wait_for(in_flight, timeout=30, interval=0.5, what="a request in flight")
        assert call(port, "DELETE", f"/v1/webhooks/{webhook_id}").status == 204
        topic = Topics.from_settings(stack.settings).webhooks

        def values() -> list[bytes | None]:
            return [
                message.value()
                for message in read_topic(stack.settings, topic, None)
                if message.key() == webhook_id.encode()
            ]

        # The request answers 410 after the delete; whatever the sender writes then, the
        # webhook stays deleted everywhere, and the topic ends on a tombstone.
        wait_for(
            lambda: (got := values()) and got[-1] is None,
            timeout=30,
            what="the topic ending on a tombstone",
        )
        assert call(port, "GET", f"/v1/webhooks/{webhook_id}").status == 404
        assert fresh_view_of(stack.settings, webhook_id) is None
