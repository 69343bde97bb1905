"""POST /v1/events racing on one event id across two API processes publishes it once, on
either store backend."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import orjson
import pytest

from hookstream.core.settings import Settings
from hookstream.core.topics import Topics
from hookstream.tools import localkafka
from tests.helpers import Reply, fresh_store_url, http_request
from tests.pipeline import lone_api_settings, read_topic, running_api

pytestmark = pytest.mark.integration

API_KEY = "event-race-key-0123456789"
RACERS = 16


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def replicas(
    request: pytest.FixtureRequest,
    kafka_bootstrap: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Settings, Settings]]:
    """Two API processes on the same topics and the same store."""
    directory = tmp_path_factory.mktemp(f"event-race-{request.param}")
    with fresh_store_url(request.param, directory) as store_url:
        first = lone_api_settings(kafka_bootstrap, store_url, {API_KEY: "tenant_race"})
        second = first.model_copy(update={"api_port": localkafka.free_port()})
        with running_api(first, directory), running_api(second, directory):
            yield first, second


def publish(port: int, event_id: str) -> Reply:
    body = {"id": event_id, "type": "invoice.paid", "data": {"invoice_id": "inv_1"}}
    headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
    return http_request(port, "POST", "/v1/events", orjson.dumps(body), headers)


def test_concurrent_publishes_of_one_event_id_publish_it_once(
    replicas: tuple[Settings, Settings],
) -> None:
    ports = [settings.api_port for settings in replicas]
    event_ids = [f"evt_race_{uuid.uuid4().hex}" for _ in range(3)]
    for event_id in event_ids:
        start = threading.Barrier(RACERS)

        def race(i: int, event_id: str = event_id, start: threading.Barrier = start) -> Reply:
            start.wait()
            return publish(ports[i % 2], event_id)

        with ThreadPoolExecutor(RACERS) as pool:
            replies = list(pool.map(race, range(RACERS)))
        accepted = [r for r in replies if r.status == 202]
        in_progress = [r for r in replies if r.status == 409]
        assert len(accepted) + len(in_progress) == RACERS, [(r.status, r.body) for r in replies]
        assert [r.json["duplicate"] for r in accepted].count(False) == 1
        assert all(r.json["error"]["code"] == "event_in_progress" for r in in_progress)
        assert all(r.headers["Retry-After"] == "1" for r in in_progress)
        # Settled: a repeat on either replica is a duplicate.
        for port in ports:
            again = publish(port, event_id)
            assert again.status == 202 and again.json == {"id": event_id, "duplicate": True}

    topic = Topics.from_settings(replicas[0]).events
    published = [e["id"] for e in read_topic(replicas[0], topic, "Event")]
    assert sorted(i for i in published if i in event_ids) == sorted(event_ids)
