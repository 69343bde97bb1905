"""The steady event load of a chaos run: most events straight to Kafka, some through the API.

Only events the platform acknowledged count as published: a Kafka delivery report without an
error, or a 202 from the API (retried with the same event id while the API is down).
"""

from __future__ import annotations

import queue
import random
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson
from confluent_kafka import KafkaError, Message, Producer

from hookstream.client.http import ApiCallError, ApiClient
from hookstream.core.codec import default_codec
from hookstream.core.kafka import producer_config
from hookstream.core.settings import Settings
from hookstream.core.topics import Topics
from tests.chaos.plan import EVENT_TYPES, ChaosPlan

CODEC = default_codec()
# How long the API publisher keeps retrying one event (the API restarts in a few seconds).
API_RETRY_SECONDS = 120.0
API_CLIENTS = 4


@dataclass(frozen=True)
class PublishedEvent:
    id: str
    tenant_id: str
    type: str
    via: str  # kafka | api


@dataclass
class Load:
    settings: Settings
    plan: ChaosPlan
    tenants: list[str]
    api: ApiClient
    published: dict[str, PublishedEvent] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    # Seconds from the start until each path had every event acknowledged; API retries.
    timings: dict[str, float] = field(default_factory=dict)
    api_retries: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self) -> None:
        """Publish the plan's events at its rate; returns when every one is settled."""
        chooser = random.Random(self.plan.seed)
        topic = Topics.from_settings(self.settings).events
        # Quiet: a broker restart makes librdkafka log every refused reconnect.
        producer = Producer(producer_config(self.settings, extra={"log_level": 2}))
        through_api: queue.Queue[PublishedEvent | None] = queue.Queue()
        # Several clients, as several platform services would be: one at a time cannot keep
        # up with the offered rate while the API shares two cores with everything else.
        api_threads = [
            threading.Thread(target=self._publish_through_api, args=(through_api,), daemon=True)
            for _ in range(API_CLIENTS)
        ]
        for thread in api_threads:
            thread.start()
        began = time.monotonic()
        try:
            for n in range(self.plan.events):
                due = began + n / self.plan.rate
                while (ahead := due - time.monotonic()) > 0:
                    producer.poll(min(ahead, 0.05))
                event = PublishedEvent(
                    id=f"evt_{uuid.uuid4().hex}",
                    tenant_id=chooser.choice(self.tenants),
                    type=chooser.choice(EVENT_TYPES),
                    via="api" if n % self.plan.api_every == 0 else "kafka",
                )
                if event.via == "api":
                    through_api.put(event)
                else:
                    self._produce(producer, topic, event)
            self.timings["offered"] = time.monotonic() - began
        finally:
            for _ in api_threads:
                through_api.put(None)
            # Long enough to ride out a broker restart; librdkafka retries on its own.
            left = producer.flush(180)
            if left:
                self._fail(f"{left} events still unacknowledged by Kafka after 180 s")
            self.timings["kafka_acknowledged"] = time.monotonic() - began
            for thread in api_threads:
                thread.join()
            self.timings["api_acknowledged"] = time.monotonic() - began

    def _produce(self, producer: Producer, topic: str, event: PublishedEvent) -> None:
        value = CODEC.encode("Event", _event_record(event))

        def acknowledged(error: KafkaError | None, _message: Message) -> None:
            if error is not None:
                self._fail(f"{event.id}: Kafka refused it: {error}")
                return
            with self._lock:
                self.published[event.id] = event

        while True:
            try:
                producer.produce(
                    topic, key=event.tenant_id.encode(), value=value, on_delivery=acknowledged
                )
                return
            except BufferError:
                producer.poll(0.1)

    def _publish_through_api(self, events: queue.Queue[PublishedEvent | None]) -> None:
        while (event := events.get()) is not None:
            body = {
                "id": event.id,
                "type": event.type,
                "tenant_id": event.tenant_id,
                "data": {"n": event.id},
            }
            give_up_at = time.monotonic() + API_RETRY_SECONDS
            while True:
                try:
                    self.api.post("/v1/events", body)
                    with self._lock:
                        self.published[event.id] = event
                    break
                except ApiCallError as exc:
                    # 409 event_in_progress: a killed API's claim on the id, until its lease
                    # lapses; as a client would, retry. Any other 4xx would be our own bug.
                    in_progress = exc.code == "event_in_progress"
                    if exc.status is not None and exc.status < 500 and not in_progress:
                        self._fail(f"{event.id}: the API refused it: {exc.one_line()}")
                        break
                    if time.monotonic() > give_up_at:
                        self._fail(f"{event.id}: the API did not accept it: {exc.one_line()}")
                        break
                    with self._lock:
                        self.api_retries += 1
                    # The API is restarting, or says when to come back: retry the same id.
                    time.sleep(1.0 if in_progress else 0.2)

    def _fail(self, reason: str) -> None:
        with self._lock:
            self.failures.append(reason)


def _event_record(event: PublishedEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "type": event.type,
        "tenant_id": event.tenant_id,
        "occurred_at": "2026-11-27T10:00:00.000Z",
        "data": orjson.dumps({"n": event.id}).decode(),
        "published_at_ms": int(time.time() * 1000),
    }
