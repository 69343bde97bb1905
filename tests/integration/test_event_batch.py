"""POST /v1/events/batch on two real API processes, a real broker and both store backends:
every event gets its own result, a bad one refuses nothing else, and an id is published once
however batches and single requests race on it."""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hookstream.api.models import MAX_BATCH_EVENTS
from hookstream.core.settings import Settings
from hookstream.core.topics import Topics
from hookstream.tools import localkafka
from tests.helpers import Reply, fresh_store_url, http_request
from tests.pipeline import lone_api_settings, read_topic, running_api

pytestmark = pytest.mark.integration

ADMIN_KEY = "batch-admin-key-0123456789"
TENANT_KEY = "batch-tenant-key-0123456789"
TENANT = "tenant_batch"


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def replicas(
    request: pytest.FixtureRequest,
    kafka_bootstrap: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Settings, Settings]]:
    """Two API processes on the same topics and the same store."""
    directory = tmp_path_factory.mktemp(f"event-batch-{request.param}")
    keys = {ADMIN_KEY: "*", TENANT_KEY: TENANT}
    with fresh_store_url(request.param, directory) as store_url:
        first = lone_api_settings(kafka_bootstrap, store_url, keys)
        second = first.model_copy(update={"api_port": localkafka.free_port()})
        with running_api(first, directory), running_api(second, directory):
            yield first, second


def post(port: int, path: str, body: Any, key: str = TENANT_KEY) -> Reply:
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    return http_request(port, "POST", path, raw, headers)


def event(event_id: str | None = None, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"type": "invoice.paid", "data": {"invoice_id": "inv_1"}}
    if event_id is not None:
        body["id"] = event_id
    return body | fields


def published_ids(settings: Settings) -> Counter[str]:
    return Counter(
        e["id"] for e in read_topic(settings, Topics.from_settings(settings).events, "Event")
    )


def test_each_event_gets_its_own_result_and_a_bad_one_refuses_nothing_else(
    replicas: tuple[Settings, Settings],
) -> None:
    port = replicas[0].api_port
    run = uuid.uuid4().hex[:8]
    earlier = f"evt_{run}_earlier"
    assert post(port, "/v1/events", event(earlier)).status == 202
    items: list[Any] = [
        event(f"evt_{run}_a"),
        event(),  # the API names it
        event(f"evt_{run}_b", type="no.such_type"),
        {"id": f"evt_{run}_c", "type": "invoice.paid"},  # no data
        event(f"evt_{run}_d", tenant_id="someone_else"),  # not this key's tenant
        {"id": f"evt_{run}_f", "type": "invoice.paid", "data": {}, "colour": "red"},
        event(f"evt_{run}_a"),  # again, in the same batch
        event(earlier),  # published by an earlier request
    ]
    reply = post(port, "/v1/events/batch", {"events": items})
    assert reply.status == 200, reply.body
    results = reply.json["results"]
    assert [r["index"] for r in results] == list(range(len(items)))
    statuses = [r["status"] for r in results]
    assert statuses == [
        "accepted",
        "accepted",
        "rejected",
        "rejected",
        "rejected",
        "rejected",
        "duplicate",
        "duplicate",
    ], results
    codes = [r["error"]["code"] if r["error"] else None for r in results]
    assert codes[2:6] == [
        "unknown_event_type",
        "validation_error",
        "validation_error",
        "validation_error",
    ]
    assert results[0]["id"] == f"evt_{run}_a" and results[1]["id"].startswith("evt_")
    assert (reply.json["accepted"], reply.json["duplicates"], reply.json["rejected"]) == (2, 2, 4)

    published = published_ids(replicas[0])
    assert published[f"evt_{run}_a"] == 1
    assert published[results[1]["id"]] == 1
    assert published[earlier] == 1  # not again
    for refused in ("b", "c", "d", "f"):
        assert published[f"evt_{run}_{refused}"] == 0


def test_a_request_that_is_not_a_batch_is_refused_whole(
    replicas: tuple[Settings, Settings],
) -> None:
    port = replicas[1].api_port
    too_many = {"events": [event() for _ in range(MAX_BATCH_EVENTS + 1)]}
    for body, status, code in [
        (b"{not json", 400, "invalid_json"),
        ([event()], 400, "invalid_body"),
        ({"events": []}, 400, "invalid_body"),
        ({"events": event()}, 400, "invalid_body"),
        ({"events": [event()], "extra": 1}, 400, "invalid_body"),
        ({"events": [event(), "not an event"]}, 400, "invalid_body"),
        (too_many, 422, "batch_too_large"),
        # Above the request size limit (1 MiB) whatever its events.
        ({"events": [event(data={"x": "y" * 1_100_000})]}, 413, "payload_too_large"),
    ]:
        reply = post(port, "/v1/events/batch", body)
        assert (reply.status, reply.json["error"]["code"]) == (status, code), reply.body


def test_batches_and_single_requests_racing_on_ids_publish_each_once(
    replicas: tuple[Settings, Settings],
) -> None:
    ports = [s.api_port for s in replicas]
    run = uuid.uuid4().hex[:8]
    ids = [f"evt_{run}_{n}" for n in range(40)]
    racers = 8
    start = threading.Barrier(racers)

    def race(i: int) -> list[tuple[str, str]]:
        # Overlapping slices, in different orders; every other racer also sends singles.
        mine = ids[i * 4 : i * 4 + 20] or ids[:20]
        if i % 2:
            mine = list(reversed(mine))
        start.wait()
        if i % 4 == 3:
            answers = []
            for event_id in mine:
                reply = post(ports[i % 2], "/v1/events", event(event_id))
                status = (
                    "in_progress"
                    if reply.status == 409
                    else ("duplicate" if reply.json["duplicate"] else "accepted")
                )
                answers.append((event_id, status))
            return answers
        reply = post(ports[i % 2], "/v1/events/batch", {"events": [event(e) for e in mine]})
        assert reply.status == 200, reply.body
        return [(r["id"], r["status"]) for r in reply.json["results"]]

    with ThreadPoolExecutor(racers) as pool:
        answered = [pair for answers in pool.map(race, range(racers)) for pair in answers]
    accepted = Counter(event_id for event_id, status in answered if status == "accepted")
    asked = {event_id for event_id, _ in answered}
    assert accepted == dict.fromkeys(asked, 1), accepted
    assert {status for _, status in answered} <= {"accepted", "duplicate", "in_progress"}
    published = published_ids(replicas[0])
    assert {event_id: published[event_id] for event_id in asked} == dict.fromkeys(asked, 1)


_ITEM = st.one_of(
    st.builds(lambda n: event(f"evt_gen_{n}"), st.integers(0, 15)),
    st.just(event()),
    st.builds(lambda n: event(f"evt_gen_{n}", type="no.such_type"), st.integers(0, 15)),
    st.builds(lambda n: {"id": f"evt_gen_{n}", "type": "invoice.paid"}, st.integers(0, 15)),
    st.dictionaries(st.text(max_size=5), st.integers(-1000, 1000), max_size=3),
)


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(items=st.lists(_ITEM, min_size=1, max_size=30))
def test_generated_batches_publish_exactly_their_accepted_events(
    replicas: tuple[Settings, Settings], items: list[Any]
) -> None:
    # Fresh ids per example, so that examples do not see each other's events.
    run = uuid.uuid4().hex[:8]
    renamed = [
        {**item, "id": item["id"].replace("evt_gen_", f"evt_{run}_")}
        if isinstance(item, dict) and isinstance(item.get("id"), str)
        else item
        for item in items
    ]
    reply = post(replicas[0].api_port, "/v1/events/batch", {"events": renamed})
    assert reply.status == 200, reply.body
    results = reply.json["results"]
    assert [r["index"] for r in results] == list(range(len(renamed)))
    assert all((r["status"] == "rejected") == (r["error"] is not None) for r in results)
    accepted = Counter(r["id"] for r in results if r["status"] == "accepted")
    assert all(n == 1 for n in accepted.values())
    published = published_ids(replicas[0])
    ours = {i: n for i, n in published.items() if i.startswith(f"evt_{run}_")}
    named = {i: n for i, n in accepted.items() if i.startswith(f"evt_{run}_")}
    assert ours == named
    for r in results:
        if r["status"] == "accepted" and not r["id"].startswith(f"evt_{run}_"):
            assert published[r["id"]] == 1  # an id the API named
