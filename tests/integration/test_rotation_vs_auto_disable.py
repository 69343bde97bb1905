"""The log-sink's auto-disable racing an owner's change never reverts that change (issue 15).

The log-sink read a webhook at version N; the owner rotates its secret (or renames it and
moves its url) through the API, which writes N+1; the log-sink, whose view has not applied
that yet, auto-disables its copy of N. Its record (N+1 based on N) loses, and it disables the
current state instead (N+2): the webhook ends disabled *with* the owner's change, in the API,
in a view read afresh from the topic, and in the topic's last record of the key (what
compaction keeps).

The race is made deterministic by holding the log-sink view's lock: its thread cannot apply
what it fetched meanwhile, exactly a view that lags. The upkeep's own wait for its record
(`wait_for_offset`, a condition wait) releases the lock, so the view then catches up.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer

from hookstream.core.codec import default_codec
from hookstream.core.kafka import producer_config
from hookstream.core.records import Attempt, Webhook
from hookstream.core.settings import Settings
from hookstream.core.topics import Topics
from hookstream.core.view import CompactedView, webhook_view
from hookstream.endpoints.secrets import Keyring, load_keyring
from hookstream.logsink.upkeep import DISABLED_EVENT_TYPE, Upkeep
from hookstream.store import Store
from tests.helpers import attempt_record, http_request, sqlite_url, wait_for
from tests.pipeline import lone_api_settings, read_topic, running_api

pytestmark = pytest.mark.integration

CODEC = default_codec()
KEY = "rotation-vs-disable-key-tenant-a-0123"
TENANT = "tenant_a"
PUBLIC_URL = "https://93.184.215.14/hooks"
MOVED_URL = "https://93.184.215.14/moved"
# Short, so an attempt that failed a few seconds ago is a streak due for auto-disable.
AUTO_DISABLE_AFTER = 1.0


@dataclass
class Answer:
    status: int
    json: Any
    etag: str | None


def call(port: int, method: str, path: str, body: Any = None) -> Answer:
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    payload = None if body is None else orjson.dumps(body)
    reply = http_request(port, method, path, payload, headers)
    parsed = orjson.loads(reply.body) if reply.body else None
    return Answer(reply.status, parsed, reply.headers.get("ETag"))


def version_of(answer: Answer) -> int:
    assert answer.etag is not None and answer.etag.startswith('"v'), answer.etag
    return int(answer.etag.strip('"v'))


@pytest.fixture(scope="module")
def api(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """One API process on a SQLite store and topics of its own; the settings are the
    log-sink's too."""
    directory: Path = tmp_path_factory.mktemp("rotation-vs-disable")
    settings = lone_api_settings(
        kafka_bootstrap,
        sqlite_url(directory),
        {KEY: TENANT},
        auto_disable_after=AUTO_DISABLE_AFTER,
    )
    with running_api(settings, directory):
        yield settings


@dataclass
class LogSink:
    """The log-sink's upkeep as the service builds it: its own store, view and producer."""

    settings: Settings
    store: Store
    view: CompactedView[Webhook]
    upkeep: Upkeep
    keyring: Keyring


@pytest.fixture
def sink(api: Settings) -> Iterator[LogSink]:
    store = Store.open(api.store_url)
    view = webhook_view(api, CODEC, Topics.from_settings(api).webhooks, None).start()
    producer = Producer(producer_config(api))
    try:
        view.wait_ready(30)
        upkeep = Upkeep(api, store, view, producer, CODEC)
        yield LogSink(api, store, view, upkeep, load_keyring(api))
    finally:
        view.stop()
        producer.flush(10)
        store.close()


@contextmanager
def lagging(view: CompactedView[Webhook]) -> Iterator[None]:
    """While open, the view applies nothing new: its thread waits for the lock with whatever
    it fetched. A condition wait on the view (a writer waiting for its own record) lets it
    go on, as it does when a lagging log-sink view catches up."""
    with view.lock:
        yield


def create(port: int) -> dict[str, Any]:
    body = {"name": f"race {uuid.uuid4().hex[:8]}", "url": PUBLIC_URL, "events": ["*"]}
    answer = call(port, "POST", "/v1/webhooks", body)
    assert answer.status == 201, answer.json
    assert version_of(answer) == 1
    created: dict[str, Any] = answer.json
    return created


def failing_for_a_while(sink: LogSink, webhook_id: str) -> None:
    """Every attempt failed since 5 s ago: due for auto-disable (the period is 1 s)."""
    now = int(time.time() * 1000)
    record = attempt_record(
        f"dlv_{uuid.uuid4().hex[:12]}",
        webhook_id=webhook_id,
        tenant_id=TENANT,
        outcome="temporary_failure",
        status_code=500,
        started_at_ms=now - 5000,
        next_attempt_at_ms=now + 60_000,
    )
    sink.store.record_attempts([Attempt.from_record(record)])


def held_by_sink(sink: LogSink, webhook_id: str) -> Webhook:
    """The log-sink's copy, once its view has read everything written so far."""
    assert sink.view.sync(10), "the log-sink's view did not catch up"
    held = sink.view.get(webhook_id)
    assert held is not None and held.enabled
    return held


def records_of(settings: Settings, webhook_id: str) -> list[Webhook]:
    """Every record of the webhook on the topic, in log order (one partition)."""
    topic = Topics.from_settings(settings).webhooks
    return [
        Webhook.from_record(record)
        for record in read_topic(settings, topic, "Webhook")
        if record["id"] == webhook_id
    ]


def fresh_view_of(settings: Settings, webhook_id: str) -> Webhook | None:
    """What a view read from the start of the topic now holds for `webhook_id`."""
    view = webhook_view(settings, CODEC, Topics.from_settings(settings).webhooks, None).start()
    try:
        view.wait_ready(30)
        return view.get(webhook_id)
    finally:
        view.stop()


def assert_disabled_on_top(
    webhook: Webhook | None,
    where: str,
    keyring: Keyring,
    *,
    secret: str,
    based_on: int,
    **changed: Any,
) -> None:
    """`webhook` is the owner's change (version `based_on`: `secret` current, `changed`
    fields) with the auto-disable on top, on the next version."""
    assert webhook is not None, f"{where}: the webhook is gone"
    current = keyring.decrypt(webhook.id, webhook.secrets[0].value)
    assert current == secret, f"{where}: the owner's secret was reverted by the auto-disable"
    for name, value in changed.items():
        assert getattr(webhook, name) == value, f"{where}: the owner's {name} was reverted"
    assert not webhook.enabled, f"{where}: not disabled"
    assert webhook.disabled_reason is not None, where
    assert webhook.disabled_reason.startswith("auto-disabled"), (where, webhook.disabled_reason)
    assert webhook.version == based_on + 1, f"{where}: not on the version after the owner's"


def assert_lost_then_won(
    records: list[Webhook], stale: Webhook, owners_version: int, keyring: Keyring, secret: str
) -> None:
    """The race took place: the log-sink's first record, a disabled copy of the stale read,
    came after the owner's change on the same version (refused), and its retry after it."""
    versions = [record.version for record in records]
    assert versions[-3:] == [owners_version, owners_version, owners_version + 1], versions
    owners, refused, won = records[-3:]
    assert owners.enabled and keyring.decrypt(owners.id, owners.secrets[0].value) == secret
    assert refused == stale.disabled(refused.disabled_reason or "", refused.updated_at_ms), (
        "the log-sink's first record was not its stale copy disabled"
    )
    assert not won.enabled


def api_state(port: int, webhook_id: str, version: int) -> Answer:
    """The API's answer once its view has the webhook at `version`."""

    def at_version() -> Answer | None:
        answer = call(port, "GET", f"/v1/webhooks/{webhook_id}")
        assert answer.status == 200, answer.json
        return answer if answer.etag == f'"v{version}"' else None

    found: Answer = wait_for(at_version, timeout=20, what=f"the API at v{version}")
    return found


def notices_for(settings: Settings, webhook_id: str) -> list[dict[str, Any]]:
    topic = Topics.from_settings(settings).events
    return [
        event
        for event in read_topic(settings, topic, "Event")
        if event["type"] == DISABLED_EVENT_TYPE
        and orjson.loads(event["data"])["webhook_id"] == webhook_id
    ]


def test_auto_disable_racing_a_rotation_keeps_the_rotated_secret(
    api: Settings, sink: LogSink
) -> None:
    port = api.api_port
    created = create(port)
    webhook_id = created["id"]
    failing_for_a_while(sink, webhook_id)
    stale = held_by_sink(sink, webhook_id)
    assert stale.version == 1

    with lagging(sink.view):
        rotated = call(port, "POST", f"/v1/webhooks/{webhook_id}/rotate-secret", {})
        assert rotated.status == 200, rotated.json
        rotation = version_of(rotated)
        assert rotation == stale.version + 1
        new_secret = rotated.json["secret"]
        assert new_secret != created["secret"]
        # The log-sink still holds version N: its auto-disable acts on that.
        held = sink.view.get(webhook_id)
        assert held is not None and held.version == stale.version, "the view did not lag"
        assert sink.upkeep.auto_disable() == 1

    # The topic's last record of the key, what compaction keeps and any reader ends on.
    records = records_of(api, webhook_id)
    assert_disabled_on_top(
        records[-1], "the topic's last record", sink.keyring, secret=new_secret, based_on=rotation
    )
    assert_lost_then_won(records, stale, rotation, sink.keyring, new_secret)
    assert_disabled_on_top(
        fresh_view_of(api, webhook_id),
        "a fresh view",
        sink.keyring,
        secret=new_secret,
        based_on=rotation,
    )
    assert_disabled_on_top(
        sink.view.get(webhook_id),
        "the log-sink's view",
        sink.keyring,
        secret=new_secret,
        based_on=rotation,
    )

    answer = api_state(port, webhook_id, rotation + 1)
    assert answer.json["secret_hint"].endswith(new_secret[-4:]), "the API lost the rotation"
    assert answer.json["enabled"] is False
    assert answer.json["disabled_reason"].startswith("auto-disabled")

    # Announced once, for the disable that won; and the streak is marked: no second try.
    assert len(notices_for(api, webhook_id)) == 1
    assert sink.upkeep.auto_disable() == 0


def test_auto_disable_racing_an_update_keeps_the_update(api: Settings, sink: LogSink) -> None:
    port = api.api_port
    created = create(port)
    webhook_id = created["id"]
    failing_for_a_while(sink, webhook_id)
    stale = held_by_sink(sink, webhook_id)
    new_name = f"renamed {uuid.uuid4().hex[:8]}"

    with lagging(sink.view):
        patched = call(
            port, "PATCH", f"/v1/webhooks/{webhook_id}", {"name": new_name, "url": MOVED_URL}
        )
        assert patched.status == 200, patched.json
        update = version_of(patched)
        assert update == stale.version + 1
        held = sink.view.get(webhook_id)
        assert held is not None and held.version == stale.version, "the view did not lag"
        assert sink.upkeep.auto_disable() == 1

    secret = created["secret"]  # unchanged by the update
    records = records_of(api, webhook_id)
    assert_disabled_on_top(
        records[-1],
        "the topic's last record",
        sink.keyring,
        secret=secret,
        based_on=update,
        name=new_name,
        url=MOVED_URL,
    )
    assert_lost_then_won(records, stale, update, sink.keyring, secret)
    assert_disabled_on_top(
        fresh_view_of(api, webhook_id),
        "a fresh view",
        sink.keyring,
        secret=secret,
        based_on=update,
        name=new_name,
        url=MOVED_URL,
    )

    answer = api_state(port, webhook_id, update + 1)
    assert answer.json["name"] == new_name, "the API lost the rename"
    assert answer.json["url"] == MOVED_URL, "the API lost the url change"
    assert answer.json["enabled"] is False
    assert answer.json["disabled_reason"].startswith("auto-disabled")
    (notice,) = notices_for(api, webhook_id)
    # The tenant is told about the webhook as it is now, not the copy the sink read first.
    told = orjson.loads(notice["data"])
    assert (told["name"], told["url"]) == (new_name, MOVED_URL), told
