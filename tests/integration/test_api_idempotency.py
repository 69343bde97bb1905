"""Idempotency-Key across API replicas: two `hookstream run api` processes on one PostgreSQL
store race on one key, repeats go to either replica, and keys expire after their window.

The per-route behaviour (every POST, refusals, 4xx kept, 409/5xx not) is in test_api.py.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from hookstream.api.idempotency import keeps
from hookstream.core.settings import Settings
from hookstream.store.engine import make_engine
from hookstream.store.schema import idempotency_keys
from hookstream.tools import localkafka
from tests.helpers import Reply, fresh_store_url, http_request, sqlite_url, wait_for
from tests.pipeline import lone_api_settings, running_api

pytestmark = pytest.mark.integration

KEY_A = "idem-key-tenant-a-0123456789"
KEY_A2 = "idem-key-tenant-a-second-0123456789"
KEY_B = "idem-key-tenant-b-0123456789"
KEYS = {KEY_A: "tenant_a", KEY_A2: "tenant_a", KEY_B: "tenant_b"}
PUBLIC_URL = "https://93.184.215.14/hooks"


def post(port: int, api_key: str, path: str, body: Any, idempotency_key: str) -> Reply:
    headers = {
        "Authorization": f"Bearer {api_key}",
        "Content-Type": "application/json",
        "Idempotency-Key": idempotency_key,
    }
    return http_request(port, "POST", path, orjson.dumps(body), headers)


def get(port: int, api_key: str, path: str) -> Any:
    reply = http_request(port, "GET", path, headers={"Authorization": f"Bearer {api_key}"})
    assert reply.status == 200, reply.body
    return reply.json


def replayed(reply: Reply) -> bool:
    return reply.headers.get("Idempotent-Replayed") == "true"


@dataclass
class Replicas:
    ports: tuple[int, int]


@pytest.fixture(scope="module")
def replicas(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:
    """Two API processes on the same topics and the same PostgreSQL store."""
    directory = tmp_path_factory.mktemp("idem-replicas")
    with fresh_store_url("postgresql", directory) as store_url:
        first = lone_api_settings(kafka_bootstrap, store_url, KEYS)
        second = first.model_copy(update={"api_port": localkafka.free_port()})
        with running_api(first, directory), running_api(second, directory):
            yield Replicas((first.api_port, second.api_port))


def test_concurrent_duplicates_on_two_replicas_have_one_effect(replicas: Replicas) -> None:
    tenant_key = KEY_B
    key = f"race-{uuid.uuid4().hex}"
    body = {"name": f"race {key}", "url": PUBLIC_URL, "events": ["invoice.paid"]}
    before = {
        w["id"] for w in get(replicas.ports[0], tenant_key, "/v1/webhooks?limit=1000")["data"]
    }
    racers = 16
    start = threading.Barrier(racers)

    def race(i: int) -> Reply:
        start.wait()
        return post(replicas.ports[i % 2], tenant_key, "/v1/webhooks", body, key)

    with ThreadPoolExecutor(racers) as pool:
        replies = list(pool.map(race, range(racers)))

    created = [r for r in replies if r.status == 201]
    in_progress = [r for r in replies if r.status == 409]
    assert len(created) + len(in_progress) == racers, [(r.status, r.body) for r in replies]
    assert all(r.json["error"]["code"] == "idempotency_key_in_progress" for r in in_progress)
    assert all(r.headers["Retry-After"] == "1" for r in in_progress)
    # Exactly one request ran; every other 201 is its kept answer.
    assert [replayed(r) for r in created].count(False) == 1
    assert len({r.body for r in created}) == 1
    webhook_id = created[0].json["id"]
    for port in replicas.ports:

        def new_webhooks(port: int = port) -> set[str]:
            listed = get(port, tenant_key, "/v1/webhooks?limit=1000")["data"]
            return {w["id"] for w in listed} - before

        # Read-your-writes holds per replica: the other one's view applies it a moment later.
        wait_for(new_webhooks, timeout=15, what=f"the webhook on the replica at port {port}")
        assert new_webhooks() == {webhook_id}
        # Once answered, a repeat on either replica gets that answer, secret included.
        again = post(port, tenant_key, "/v1/webhooks", body, key)
        assert again.status == 201 and replayed(again) and again.body == created[0].body


# What a POST /v1/events may carry in the property test: accepted events, and ones refused
# with a 422 (an unknown type), which are kept too.
EVENT_BODIES = [
    {"type": "invoice.paid", "data": {"n": 1}},
    {"type": "invoice.paid", "data": {"n": 2}},
    {"type": "invoice.created", "data": {}},
    {"type": "no.such.type", "data": {}},
]

requests = st.lists(
    st.tuples(
        st.sampled_from(sorted(KEYS)),
        st.integers(0, 2),  # which of three keys
        st.integers(0, len(EVENT_BODIES) - 1),
        st.integers(0, 1),  # which replica
    ),
    min_size=1,
    max_size=10,
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(sequence=requests)
def test_every_repeat_gets_the_first_kept_answer(
    replicas: Replicas, sequence: list[tuple[str, int, int, int]]
) -> None:
    """Any sequence of POSTs with random keys, bodies, API keys and replicas: a key's first
    kept answer is what every later same-request repeat gets, from either replica; another
    API key of the tenant, or another body, is refused 422; another tenant's key is new."""
    run = uuid.uuid4().hex
    # (tenant, key) -> (API key, body index, answer) of the first kept answer.
    first: dict[tuple[str, str], tuple[str, int, tuple[int, Any]]] = {}
    for api_key, key_index, body_index, replica in sequence:
        key = f"prop-{run}-{key_index}"
        reply = post(replicas.ports[replica], api_key, "/v1/events", EVENT_BODIES[body_index], key)
        scope = (KEYS[api_key], key)
        if scope not in first:
            assert not replayed(reply) and reply.status in (202, 422), reply.body
            if keeps(reply.status):
                first[scope] = (api_key, body_index, (reply.status, reply.json))
            continue
        owner, kept_body, answer = first[scope]
        if owner != api_key:
            assert reply.status == 422
            assert reply.json["error"]["details"]["reason"] == "different_api_key"
        elif kept_body != body_index:
            assert reply.status == 422
            assert reply.json["error"]["details"]["reason"] == "different_body"
        else:
            assert replayed(reply) and (reply.status, reply.json) == answer


# -- expiry ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def short_window(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Settings]:
    """One API on SQLite whose keys expire after a second, purged five times a second."""
    directory: Path = tmp_path_factory.mktemp("idem-expiry")
    settings_ = lone_api_settings(
        kafka_bootstrap,
        sqlite_url(directory),
        KEYS,
        idempotency_key_window=1.0,
        maintenance_interval=0.2,
    )
    with running_api(settings_, directory):
        yield settings_


def test_keys_expire_after_the_window_and_are_purged(short_window: Settings) -> None:
    port = short_window.api_port
    key = f"expiry-{uuid.uuid4().hex}"
    body = {"name": "expiring", "url": PUBLIC_URL, "events": ["invoice.paid"]}
    first = post(port, KEY_A, "/v1/webhooks", body, key)
    assert first.status == 201 and not replayed(first)
    engine = make_engine(short_window.store_url)

    def kept() -> int:
        k = idempotency_keys.c
        with engine.connect() as conn:
            query = select(func.count()).where(k.idempotency_key == key)
            return int(conn.execute(query).scalar_one())

    try:
        wait_for(lambda: kept() == 0, timeout=15, what="the API's upkeep to purge the key")
    finally:
        engine.dispose()
    again = post(port, KEY_A, "/v1/webhooks", body, key)
    assert again.status == 201 and not replayed(again)
    assert again.json["id"] != first.json["id"]
