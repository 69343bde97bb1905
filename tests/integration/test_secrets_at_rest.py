"""Signing secrets at rest: encrypted on every topic and in the store, rotatable without downtime.

Webhooks are created through the running API; the router and sender deliver events that verify
with the plaintext secrets the API returned once. Then the raw bytes of every topic (all
partitions from the beginning: keys, values, headers) and of every store table (the SQLite file
and a SELECT of every table, on SQLite and PostgreSQL) are searched for each plaintext secret,
its base64 body and its raw key bytes: none may appear.
"""

from __future__ import annotations

import base64
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import MetaData, create_engine, select

from hookstream.core.keys import generate_key, parse_keys
from hookstream.core.records import Webhook
from hookstream.core.settings import Settings
from hookstream.core.signing import new_secret
from hookstream.core.topics import Topics
from hookstream.endpoints.secrets import Keyring, key_id_of, load_keyring
from hookstream.store.engine import normalize_url
from hookstream.tools import reencrypt as reencrypt_module
from hookstream.tools.topics import admin_client, create_topics
from tests.helpers import (
    STORE_BACKENDS,
    TEST_ENCRYPTION_KEY,
    api_call,
    fresh_store_url,
    settings_env,
    sqlite_url,
    wait_api_ready,
    wait_for,
)
from tests.pipeline import CODEC, Platform, Service, api_settings, make_webhook, read_topic
from tests.receiver import Received, TestReceiver

pytestmark = pytest.mark.integration

KEY = "key-secrets-at-rest-0123456789"
TENANT = "tenant_sar"
# The other services' views apply a webhook change a moment after the API's own view.
PROPAGATION = 0.5


@dataclass
class Api:
    port: int

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        return api_call(self.port, KEY, method, path, body)


@dataclass
class Stack:
    settings: Settings
    directory: Path
    receiver: TestReceiver
    services: dict[str, Service] = field(default_factory=dict)
    paths: Iterator[int] = field(default_factory=lambda: iter(range(1, 1_000_000)))

    @property
    def api(self) -> Api:
        return Api(self.settings.api_port)

    def start(self, *names: str, settings: Settings | None = None) -> None:
        for name in names:
            self.services[name] = Service(settings or self.settings, name, self.directory)
        if "api" in names:
            wait_api_ready(f"http://127.0.0.1:{self.settings.api_port}")

    def restart(self, settings: Settings, *names: str) -> None:
        for name in names:
            self.stop(name)
        self.start(*names, settings=settings)

    def stop(self, name: str) -> None:
        service = self.services.pop(name)
        assert service.terminate(30) == 0, service.log()[-3000:]
        service.close()

    def logs(self) -> str:
        return "\n".join(f"--- {n} ---\n{s.log()[-3000:]}" for n, s in self.services.items())

    def create(self, **fields: Any) -> tuple[dict[str, Any], str]:
        path = f"/hook{next(self.paths)}"
        status, created = self.api.call(
            "POST",
            "/v1/webhooks",
            {
                "name": f"secret test {path}",
                "url": self.receiver.url(path),
                "events": ["invoice.paid"],
                **fields,
            },
        )
        assert status == 201, created
        self.receiver.expect(path, [created["secret"]])
        return created, path

    def event(self, marker: str = "") -> str:
        data = {"marker": marker or uuid.uuid4().hex}
        status, reply = self.api.call("POST", "/v1/events", {"type": "invoice.paid", "data": data})
        assert status == 202, reply
        event_id: str = reply["id"]
        return event_id

    def delivered(self, paths: list[str], event_id: str) -> None:
        """Every path received `event_id`, and every request for it verified."""

        def arrived() -> bool:
            return all(
                any(r.headers["webhook-id"] == event_id for r in self.receiver.received(path))
                for path in paths
            )

        wait_for(arrived, timeout=60, what=f"{event_id} at {paths}\n{self.logs()}")
        for path in paths:
            requests = self.requests(path, event_id)
            assert requests and all(r.verified for r in requests), path

    def requests(self, path: str, event_id: str) -> list[Received]:
        return [r for r in self.receiver.received(path) if r.headers["webhook-id"] == event_id]


def _settings(bootstrap: str, store_url: str, **overrides: Any) -> Settings:
    return api_settings(bootstrap, store_url, {KEY: TENANT}, **overrides)


@pytest.fixture
def stack(kafka_bootstrap: str, tmp_path: Path) -> Iterator[Stack]:
    receiver = TestReceiver().start()
    settings = _settings(kafka_bootstrap, sqlite_url(tmp_path))
    built = Stack(settings, tmp_path, receiver)
    try:
        yield built
    finally:
        for service in built.services.values():
            service.close()
        receiver.stop()


def needles(secret: str) -> dict[str, bytes]:
    """Every form of a secret that must not be stored: as given, its base64 body, raw key."""
    body = secret.removeprefix("whsec_")
    return {
        "plaintext": secret.encode(),
        "base64 body": body.encode(),
        "raw key bytes": base64.b64decode(body),
    }


def topic_bytes(settings: Settings) -> dict[str, bytes]:
    """Every record of every one of this test's topics: keys, values and headers, raw."""
    metadata = admin_client(settings).list_topics(timeout=10)
    names = sorted(t for t in metadata.topics if t.startswith(settings.topic_prefix))
    assert Topics.from_settings(settings).webhooks in names
    dumps: dict[str, bytes] = {}
    for name in names:
        parts: list[bytes] = []
        for message in read_topic(settings, name, None):
            parts.append(message.key() or b"")
            parts.append(message.value() or b"")
            for header, value in message.headers() or []:
                parts.append(header.encode())
                parts.append(value or b"")
        dumps[name] = b"\x00".join(parts)
    return dumps


def store_bytes(store_url: str) -> dict[str, bytes]:
    """Every row of every table (SELECT *), and for SQLite the database files themselves."""
    engine = create_engine(normalize_url(store_url))
    dumps: dict[str, bytes] = {}
    try:
        metadata = MetaData()
        metadata.reflect(engine)
        assert {"attempts", "deliveries"} <= set(metadata.tables), sorted(metadata.tables)
        with engine.connect() as conn:
            for name, table in sorted(metadata.tables.items()):
                parts: list[bytes] = []
                for row in conn.execute(select(table)):
                    for value in row:
                        if isinstance(value, bytes | bytearray | memoryview):
                            parts.append(bytes(value))
                        else:
                            parts.append(str(value).encode())
                dumps[f"table {name}"] = b"\x00".join(parts)
    finally:
        engine.dispose()
    if store_url.startswith("sqlite:///"):
        database = Path(store_url.removeprefix("sqlite:///"))
        for file in database.parent.glob(database.name + "*"):
            dumps[f"file {file.name}"] = file.read_bytes()
    return dumps


def find(haystacks: dict[str, bytes], secrets: list[str]) -> list[str]:
    return [
        f"{form} of secret #{number} in {where}"
        for number, secret in enumerate(secrets)
        for form, needle in needles(secret).items()
        for where, data in haystacks.items()
        if needle in data
    ]


@pytest.mark.parametrize("backend", STORE_BACKENDS)
def test_no_plaintext_secret_on_any_topic_or_store_table(
    kafka_bootstrap: str, tmp_path: Path, backend: str
) -> None:
    with fresh_store_url(backend, tmp_path) as store_url:
        settings = _settings(kafka_bootstrap, store_url)
        create_topics(settings)
        receiver = TestReceiver().start()
        stack = Stack(settings, tmp_path, receiver)
        try:
            stack.start("api", "router", "sender", "log-sink")
            created = [stack.create() for _ in range(3)]
            secrets = [webhook["secret"] for webhook, _ in created]
            paths = [path for _, path in created]

            # A rotation with a grace period: the record then holds two (encrypted) secrets.
            rotated_id = created[0][0]["id"]
            status, rotated = stack.api.call(
                "POST", f"/v1/webhooks/{rotated_id}/rotate-secret", {"grace_period_seconds": 3600}
            )
            assert status == 200, rotated
            secrets.append(rotated["secret"])
            receiver.expect(paths[0], [rotated["secret"]])
            # A change that rewrites the record without touching its secrets.
            status, _ = stack.api.call(
                "PATCH", f"/v1/webhooks/{created[1][0]['id']}", {"name": "renamed"}
            )
            assert status == 200
            time.sleep(PROPAGATION)

            marker = f"marker-{uuid.uuid4().hex}"
            event_id = stack.event(marker)
            stack.delivered(paths, event_id)
            [first] = stack.requests(paths[0], event_id)
            # Signed with both the new secret and, during the grace period, the old one.
            assert len(first.headers["webhook-signature"].split(" ")) == 2

            for (webhook, _), secret in zip(created, [secrets[3], *secrets[1:3]], strict=True):
                status, shown = stack.api.call("GET", f"/v1/webhooks/{webhook['id']}")
                assert status == 200 and "secret" not in shown
                assert shown["secret_hint"] == "…" + secret[-4:]

            def logged() -> bool:
                for webhook, _ in created:
                    query = f"/v1/deliveries?webhook_id={webhook['id']}&status=succeeded"
                    status, page = stack.api.call("GET", query)
                    assert status == 200, page
                    if not any(row["event_id"] == event_id for row in page["data"]):
                        return False
                return True

            wait_for(logged, timeout=60, what="the log-sink to store the deliveries")
            for name in list(stack.services):
                stack.stop(name)

            topics = topic_bytes(settings)
            stored = store_bytes(store_url)
            logs = {p.name: p.read_bytes() for p in tmp_path.glob("*.log")}
        finally:
            for service in stack.services.values():
                service.close()
            receiver.stop()

    # The scan sees the data: the encrypted secrets, the webhooks, the event and its attempts.
    webhooks_topic = topics[Topics.from_settings(settings).webhooks]
    assert webhooks_topic.count(b"enc:v1:test:") >= 3 + 2 + 1  # creates, rotation, patch
    assert all(webhook["id"].encode() in webhooks_topic for webhook, _ in created)
    assert any(marker.encode() in data for data in topics.values())
    assert event_id.encode() in stored["table attempts"]
    if backend == "sqlite":
        assert any(event_id.encode() in data for name, data in stored.items() if "file" in name)

    assert find(topics, secrets) == []
    assert find(stored, secrets) == []
    assert find(logs, secrets) == []


def with_key(settings: Settings, key: str) -> Settings:
    return settings.model_copy(update={"encryption_key": SecretStr(key)})


def kid_of(latest: dict[str, Webhook | None], webhook_id: str) -> str | None:
    webhook = latest[webhook_id]
    assert webhook is not None
    return key_id_of(webhook.secrets[0].value)


def latest_webhooks(settings: Settings) -> dict[str, Webhook | None]:
    latest: dict[str, Webhook | None] = {}
    for message in read_topic(settings, Topics.from_settings(settings).webhooks, None):
        value = message.value()
        latest[message.key().decode()] = (
            None if value is None else Webhook.from_record(CODEC.decode("Webhook", value))
        )
    return latest


def run_reencrypt(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hookstream", "secrets", "reencrypt", *args],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_key_rotation_with_reencrypt_keeps_deliveries_verified(stack: Stack) -> None:
    settings = stack.settings
    create_topics(settings)
    stack.start("api", "router", "sender")
    old_kid = settings.encryption_key.get_secret_value().split(":")[0]
    by_api = [stack.create() for _ in range(2)]
    # Written straight to the topic in plaintext, as a platform (or an older hookstream) may
    # have done: the sender uses it as it is, and reencrypt encrypts it.
    legacy_secret = new_secret()
    legacy_url = stack.receiver.expect("/legacy", [legacy_secret])
    legacy = Platform(settings).webhook(
        make_webhook(TENANT, legacy_url, ["invoice.paid"], secret=legacy_secret)
    )
    paths = [path for _, path in by_api] + ["/legacy"]
    stack.delivered(paths, stack.event())
    # The scan used by the at-rest test finds a plaintext secret when there is one.
    found = find(topic_bytes(settings), [legacy_secret])
    assert found == [
        f"{form} of secret #0 in {Topics.from_settings(settings).webhooks}"
        for form in ("plaintext", "base64 body")
    ]
    assert find(topic_bytes(settings), [webhook["secret"] for webhook, _ in by_api]) == []

    # 1. The new key first, the old one still listed: both decrypt, the new one encrypts.
    new_key = generate_key("k2")
    both = with_key(settings, f"{new_key},{TEST_ENCRYPTION_KEY}")
    stack.restart(both, "api", "sender")
    created_after, path_after = stack.create()
    paths.append(path_after)
    stack.delivered(paths, stack.event())
    before = latest_webhooks(settings)
    assert kid_of(before, created_after["id"]) == "k2"
    assert {kid_of(before, webhook["id"]) for webhook, _ in by_api} == {old_kid}
    assert kid_of(before, legacy.id) is None

    # 2. Re-encrypt: what is not under k2 (two API webhooks, the plaintext one) is rewritten.
    dry = run_reencrypt(both, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would re-encrypt under key 'k2': 3" in dry.stdout
    done = run_reencrypt(both)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "re-encrypted under key 'k2': 3" in done.stdout
    assert "already under key 'k2': 1" in done.stdout
    latest = latest_webhooks(settings)
    values = [s.value for w in latest.values() if w is not None for s in w.secrets]
    assert len(values) == 4 and {key_id_of(v) for v in values} == {"k2"}, values
    assert legacy_secret not in str(values)
    # Only how the secrets are stored changed, as the next version of each rewritten one.
    for webhook_id, webhook in latest.items():
        previous = before[webhook_id]
        assert webhook is not None and previous is not None
        rewritten = webhook.secrets != previous.secrets
        assert webhook.version == previous.version + rewritten
        assert replace(webhook, secrets=previous.secrets, version=previous.version) == previous

    # 3. The old key dropped: every webhook still delivers, verified with the same secrets.
    only_new = with_key(settings, new_key)
    stack.restart(only_new, "api", "sender")
    stack.delivered(paths, stack.event())
    for webhook, _ in by_api:
        status, shown = stack.api.call("GET", f"/v1/webhooks/{webhook['id']}")
        assert status == 200 and shown["secret_hint"] == "…" + webhook["secret"][-4:]
    again = run_reencrypt(only_new)
    assert again.returncode == 0 and "re-encrypted under key 'k2': 0" in again.stdout


def test_a_secret_under_a_missing_key_is_retried_never_sent_unsigned(stack: Stack) -> None:
    """The sender lacks the key: a temporary failure naming it; once the key is deployed, the
    scheduled retry delivers, verified."""
    settings = stack.settings.model_copy(update={"retry_schedule": (6.0, 12.0)})
    stack.settings = settings
    create_topics(settings)
    missing = generate_key("missing")
    secret = new_secret()
    target = stack.receiver.expect("/missing", [secret])
    plain = make_webhook(TENANT, target, ["invoice.paid"], secret=secret)
    hook = Platform(settings).webhook(Keyring(parse_keys(missing)).reencrypted(plain))
    stack.start("router", "sender")
    event_id = Platform(settings).event(TENANT, "invoice.paid")
    log_topic = Topics.from_settings(settings).delivery_log

    def attempts() -> list[Any]:
        records = read_topic(settings, log_topic, "Attempt")
        return sorted(
            (r for r in records if r["webhook_id"] == hook.id), key=lambda r: r["attempt_number"]
        )

    [first] = wait_for(attempts, timeout=60, what=f"the first attempt\n{stack.logs()}")
    assert first["event_id"] == event_id and first["outcome"] == "temporary_failure"
    assert first["status_code"] is None and first["next_attempt_at_ms"] is not None
    assert first["error"].startswith(f"not sent: signing secret of webhook {hook.id} ")
    assert "key id 'missing'" in first["error"] and "HOOKSTREAM_ENCRYPTION_KEY" in first["error"]
    assert secret not in first["error"]
    assert stack.receiver.received("/missing") == []

    stack.restart(with_key(settings, f"{TEST_ENCRYPTION_KEY},{missing}"), "sender")
    stack.delivered(["/missing"], event_id)
    done = wait_for(lambda: len(found := attempts()) == 2 and found, timeout=30, what="retry")
    assert done[1]["outcome"] == "success" and done[1]["attempt_number"] == 2


def test_reencrypt_reports_secrets_it_cannot_read(stack: Stack) -> None:
    settings = stack.settings
    create_topics(settings)
    foreign = Keyring([("gone", bytes(32))])
    hook = make_webhook(TENANT, "https://93.184.215.14/h", ["invoice.paid"])
    sealed = foreign.reencrypted(hook)
    Platform(settings).webhook(sealed)
    result = run_reencrypt(settings)
    assert result.returncode == 1
    assert f"FAILED {hook.id}: " in result.stdout and "'gone'" in result.stdout
    assert latest_webhooks(settings)[hook.id] == sealed  # left as it was


def test_reencrypt_reapplies_changes_made_while_it_runs(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A change landing between reencrypt's read and its write is written again after it."""
    settings = stack.settings
    create_topics(settings)
    platform = Platform(settings)
    old = load_keyring(settings)
    renamed_hook = old.reencrypted(make_webhook(TENANT, "https://93.184.215.14/a", ["*"]))
    deleted_hook = old.reencrypted(make_webhook(TENANT, "https://93.184.215.14/b", ["*"]))
    platform.webhook(renamed_hook)
    platform.webhook(deleted_hook)
    new = Keyring(parse_keys(f"{generate_key('k2')},{TEST_ENCRYPTION_KEY}"))
    # The API's change: the next version, its secrets already under the new key.
    renamed = new.reencrypted(
        Webhook.from_record(
            {
                **renamed_hook.to_record(),
                "name": "changed meanwhile",
                "version": renamed_hook.version + 1,
            }
        )
    )

    real_produce = reencrypt_module._produce
    calls: list[int] = []

    def produce_after_a_concurrent_change(
        producer: Any, topic: str, records: dict[bytes, bytes | None]
    ) -> Any:
        if not calls:
            # The API renames one webhook and deletes the other just before our write.
            platform.webhook(renamed)
            platform.delete_webhook(deleted_hook.id)
        calls.append(len(records))
        return real_produce(producer, topic, records)

    monkeypatch.setattr(reencrypt_module, "_produce", produce_after_a_concurrent_change)
    report = reencrypt_module.reencrypt_webhooks(settings, new)
    assert sorted(report.reencrypted) == sorted([renamed_hook.id, deleted_hook.id])
    assert report.reapplied == 2 and calls == [2, 2]
    latest = latest_webhooks(settings)
    assert latest[deleted_hook.id] is None
    assert latest[renamed_hook.id] == renamed
    assert new.decrypt(renamed_hook.id, renamed.secrets[0].value) == old.decrypt(
        renamed_hook.id, renamed_hook.secrets[0].value
    )


def test_reencrypt_starts_from_what_the_views_hold_not_a_refused_record(stack: Stack) -> None:
    """The last record of a key may be a stale copy the views refused (not settled yet):
    re-encrypting that one would bring the stale state back as the next version."""
    settings = stack.settings
    create_topics(settings)
    platform = Platform(settings)
    old = load_keyring(settings)
    first = old.reencrypted(make_webhook(TENANT, "https://93.184.215.14/s", ["*"]))
    platform.webhook(first)
    current = replace(first, name="renamed by its owner", version=first.version + 1)
    platform.webhook(current)
    # A machine writer's copy based on the first version: refused by every view.
    platform.webhook(first.disabled("endpoint answered 410", first.updated_at_ms + 1))
    new = Keyring(parse_keys(f"{generate_key('k3')},{TEST_ENCRYPTION_KEY}"))
    report = reencrypt_module.reencrypt_webhooks(settings, new)
    assert first.id in report.reencrypted
    written = latest_webhooks(settings)[first.id]
    assert written is not None
    assert (written.name, written.enabled, written.version) == (
        "renamed by its owner",
        True,
        current.version + 1,
    )
    assert key_id_of(written.secrets[0].value) == "k3"


@pytest.mark.parametrize("service", ["api", "sender"])
def test_production_without_a_key_does_not_start(
    kafka_bootstrap: str, tmp_path: Path, service: str
) -> None:
    settings = _settings(kafka_bootstrap, sqlite_url(tmp_path))
    env = settings_env(settings)
    env.update(HOOKSTREAM_ENV="production", HOOKSTREAM_ENCRYPTION_KEY="")
    result = subprocess.run(
        [sys.executable, "-m", "hookstream", "run", service],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "HOOKSTREAM_ENCRYPTION_KEY is required when HOOKSTREAM_ENV=production" in result.stderr
