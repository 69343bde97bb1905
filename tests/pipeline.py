"""Test helpers that drive hookstream the way a platform does: through Kafka topics, and
running services (a whole pipeline, or an API alone) as processes."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition

from hookstream.core.codec import default_codec
from hookstream.core.kafka import consumer_config, producer_config
from hookstream.core.records import Principal, Webhook, WebhookSecret
from hookstream.core.settings import Settings
from hookstream.core.signing import new_secret
from hookstream.core.topics import Topics
from hookstream.tools import localkafka
from hookstream.tools.topics import create_topics
from tests.helpers import settings_env, settings_for_test, unique_prefix, wait_api_ready, wait_for
from tests.receiver import TestReceiver

CODEC = default_codec()
# What every service logs once its /metrics, /healthz and /readyz listen (port 0: a free one).
PROBE_PORT_LINE = re.compile(r"metrics and probes on port (\d+)")
# The services of a whole pipeline, the API in front.
PIPELINE = ("api", "router", "sender", "log-sink")


def make_webhook(
    tenant_id: str,
    url: str,
    events: list[str],
    *,
    owner_id: str | None = None,
    enabled: bool = True,
    secret: str | None = None,
) -> Webhook:
    now_ms = int(time.time() * 1000)
    return Webhook(
        id=f"wh_{uuid.uuid4().hex[:16]}",
        tenant_id=tenant_id,
        name=f"test {tenant_id}",
        url=url,
        events=tuple(events),
        secrets=(WebhookSecret(secret or new_secret()),),
        enabled=enabled,
        owner_id=owner_id,
        created_at_ms=now_ms,
        updated_at_ms=now_ms,
        version=1,
    )


class Platform:
    """Publishes webhooks, principals and events as the platform (or the api) would."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topics = Topics.from_settings(settings)
        self.producer = Producer(producer_config(settings))

    def webhook(self, webhook: Webhook) -> Webhook:
        value = CODEC.encode("Webhook", webhook.to_record())
        self.producer.produce(self.topics.webhooks, key=webhook.id.encode(), value=value)
        self.flush()
        return webhook

    def delete_webhook(self, webhook_id: str) -> None:
        # Without a version header: deletes whatever version the views hold (core.versions).
        self.producer.produce(self.topics.webhooks, key=webhook_id.encode(), value=None)
        self.flush()

    def principal(self, principal_id: str, tenant_id: str, permissions: list[str]) -> None:
        record = Principal(principal_id, tenant_id, frozenset(permissions)).to_record()
        self.producer.produce(
            self.topics.principals,
            key=principal_id.encode(),
            value=CODEC.encode("Principal", record),
        )
        self.flush()

    def event(
        self,
        tenant_id: str,
        event_type: str,
        data: dict[str, Any] | None = None,
        *,
        event_id: str | None = None,
        as_json: bool = False,
        flush: bool = True,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> str:
        event_id = event_id or f"evt_{uuid.uuid4().hex}"
        record = {
            "id": event_id,
            "type": event_type,
            "tenant_id": tenant_id,
            "occurred_at": "2026-11-27T10:00:00.000Z",
            "data": data if data is not None else {"invoice_id": "inv_1"},
        }
        if as_json:
            value = orjson.dumps(record)
            headers = [("content-type", b"application/json"), *(headers or [])]
        else:
            record["data"] = orjson.dumps(record["data"]).decode()
            record["published_at_ms"] = int(time.time() * 1000)
            value = CODEC.encode("Event", record)
        self.raw(self.topics.events, value, key=tenant_id.encode(), headers=headers, flush=flush)
        return event_id

    def raw(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
        flush: bool = True,
    ) -> None:
        while True:
            try:
                self.producer.produce(topic, key=key, value=value, headers=headers)
                break
            except BufferError:
                self.producer.poll(0.05)
        if flush:
            self.flush()

    def flush(self) -> None:
        assert self.producer.flush(30) == 0, "produce did not complete"


def read_topic(settings: Settings, topic: str, record: str | None) -> list[Any]:
    """Every committed record of `topic` now, decoded as `record` (None: raw messages)."""
    consumer = Consumer(
        consumer_config(
            settings,
            f"reader-{uuid.uuid4().hex[:8]}",
            # A short fetch wait: the broker answers an empty fetch at once, not after 500 ms.
            {"enable.auto.commit": False, "enable.partition.eof": True, "fetch.wait.max.ms": 10},
        )
    )
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        at_end: set[int] = set()
        out: list[Any] = []
        deadline = time.monotonic() + 30
        while len(at_end) < len(partitions) and time.monotonic() < deadline:
            for message in consumer.consume(500, timeout=0.2):
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        at_end.add(message.partition() or 0)
                    continue
                value = message.value()
                if record is None:
                    out.append(message)
                elif value is not None:
                    out.append(CODEC.decode(record, value))
        return out
    finally:
        consumer.close()


class TopicTail:
    """Every record of `topic` from its beginning, read by one consumer kept open.

    Cheaper than `read_topic` when a test polls a growing topic many times: each `poll` reads
    only what arrived since the last one. Records are (message, decoded value or None).
    """

    def __init__(self, settings: Settings, topic: str, record: str) -> None:
        self.topic = topic
        self._record = record
        self._consumer = Consumer(
            consumer_config(
                settings,
                f"tail-{uuid.uuid4().hex[:8]}",
                {"enable.auto.commit": False, "fetch.wait.max.ms": 10},
            )
        )
        partitions = self._consumer.list_topics(topic, timeout=10).topics[topic].partitions
        self._consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        self.records: list[tuple[Any, dict[str, Any] | None]] = []

    def poll(self) -> list[dict[str, Any]]:
        """Every decoded record so far (tombstones left out), oldest first per partition."""
        while True:
            messages = self._consumer.consume(500, timeout=0.05)
            if not messages:
                break
            for message in messages:
                if message.error() is not None:
                    continue
                value = message.value()
                decoded = CODEC.decode(self._record, value) if value is not None else None
                self.records.append((message, decoded))
        return [decoded for _, decoded in self.records if decoded is not None]

    def close(self) -> None:
        self._consumer.close()


class Service:
    """One `hookstream run <name>` process, as an operator would start it."""

    def __init__(
        self,
        settings: Settings,
        name: str,
        log_dir: Path,
        *,
        unset: Sequence[str] = (),
        **env: str,
    ) -> None:
        """`env` adds to the settings' variables; `unset` names variables left at their
        defaults (the service computes them itself)."""
        self.name = name
        self.log_path = log_dir / f"{name}-{uuid.uuid4().hex[:6]}.log"
        self._ops_port: int | None = None
        environment = settings_env(settings)
        environment.update(env)
        for variable in unset:
            environment.pop(variable, None)
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "hookstream", "run", name],
            env=environment,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def kill(self) -> None:
        """SIGKILL: no chance to finish anything."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def terminate(self, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def alive(self) -> bool:
        return self.process.poll() is None

    def ops_port(self, timeout: float = 60) -> int:
        """The probe port the service chose (settings say 0: a free one) and logged."""

        def logged() -> int | None:
            assert self.alive(), f"{self.name} exited:\n{self.log()[-4000:]}"
            match = PROBE_PORT_LINE.search(self.log())
            return int(match.group(1)) if match else None

        if self._ops_port is None:
            self._ops_port = int(
                wait_for(logged, timeout=timeout, what=f"{self.name}'s probe port")
            )
        return self._ops_port

    def ready(self) -> bool:
        """Whether the service answers its readiness probe with 200 now."""
        try:
            url = f"http://127.0.0.1:{self.ops_port()}/readyz"
            with urllib.request.urlopen(url, timeout=5) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def close(self) -> None:
        self.kill()
        self._log.close()


def kill_and_restart_broker(run_dir: Path, port: int) -> None:
    """kill -9 the broker (no clean shutdown), then start it again on the same port."""
    state = localkafka.read_state(run_dir)
    if state is not None:
        os.killpg(state.pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(state.pid, 0)  # our child: reap it
    deadline = time.monotonic() + 60
    while not localkafka.port_is_free(port):
        if time.monotonic() > deadline:
            raise TimeoutError(f"port {port} still busy 60 s after killing the broker")
        time.sleep(0.2)
    localkafka.start(run_dir=run_dir, port=port, ready_timeout=120)


# -- running services -----------------------------------------------------------------------


def api_settings(
    bootstrap: str, store_url: str, api_keys: dict[str, str], **overrides: Any
) -> Settings:
    """Settings for an API with a pipeline behind it, on topics of their own: `api_keys` on a
    free port, loopback receivers allowed, two quick retry tiers, short requests."""
    values: dict[str, Any] = {
        "deliveries_partitions": 2,
        "retry_schedule": (0.2, 0.5),
        "request_timeout": 2.0,
        "store_url": store_url,
        "api_port": localkafka.free_port(),
        "api_keys": api_keys,
        "allow_private_targets": ("127.0.0.0/8",),
        **overrides,
    }
    return settings_for_test(bootstrap, unique_prefix(), **values)


def lone_api_settings(
    bootstrap: str, store_url: str, api_keys: dict[str, str], **overrides: Any
) -> Settings:
    """Settings for an API with nothing behind it, on topics of its own (one partition each):
    `api_keys` on a free port."""
    values: dict[str, Any] = {
        "events_partitions": 1,
        "deliveries_partitions": 1,
        "retry_partitions": 1,
        "delivery_log_partitions": 1,
        "store_url": store_url,
        "api_port": localkafka.free_port(),
        "api_keys": api_keys,
        **overrides,
    }
    return settings_for_test(bootstrap, unique_prefix(), **values)


@dataclass
class PipelineStack:
    """Services of one pipeline running as processes, and the receiver their webhooks use."""

    settings: Settings
    receiver: TestReceiver
    services: dict[str, Service]

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.api_port}"

    def logs(self) -> str:
        return "\n".join(f"--- {n} ---\n{s.log()[-4000:]}" for n, s in self.services.items())


StackT = TypeVar("StackT", bound=PipelineStack)


@contextmanager
def running_stack(
    kind: type[StackT], settings: Settings, directory: Path, names: Sequence[str] = PIPELINE
) -> Iterator[StackT]:
    """The services `names` running on `settings` (their topics created first) and a receiver,
    as a `kind`, once the API (when one of them) is ready. Afterwards each service is stopped,
    then every log printed."""
    create_topics(settings)
    receiver = TestReceiver().start()
    services = {name: Service(settings, name, directory) for name in names}
    stack = kind(settings, receiver, services)
    try:
        if "api" in names:
            wait_api_ready(stack.api_url)
        yield stack
    finally:
        for service in services.values():
            service.terminate(30)
        print(stack.logs())
        for service in services.values():
            service.close()
        receiver.stop()


@contextmanager
def running_api(settings: Settings, directory: Path) -> Iterator[Service]:
    """One `hookstream run api` process (its topics created first, nothing behind it), once it
    is ready. Afterwards it is stopped, then the end of its log printed."""
    create_topics(settings)
    service = Service(settings, "api", directory)
    try:
        wait_api_ready(f"http://127.0.0.1:{settings.api_port}")
        yield service
    finally:
        service.terminate(30)
        print(service.log()[-4000:])
        service.close()
