"""The management API over real HTTP, against a running pipeline (real broker and store).

One pipeline (api, router, sender, log-sink and a receiver) serves the whole module; each
test works on its own webhooks, and on its own tenants where it lists things.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from standardwebhooks.webhooks import Webhook as Verifier
from standardwebhooks.webhooks import WebhookVerificationError

from hookstream.api.app import create_app
from hookstream.api.openapi import documented_routes
from hookstream.core.settings import Settings
from hookstream.core.topics import Topics
from hookstream.tools import localkafka
from tests.helpers import fresh_store_url, http_request, sqlite_url, wait_for
from tests.pipeline import PipelineStack, Service, api_settings, read_topic, running_stack
from tests.receiver import Behaviour, Received, received

pytestmark = pytest.mark.integration

KEY_A = "key-tenant-a-0123456789"
# A second key of tenant A: Idempotency-Keys belong to the API key that first used them.
KEY_A2 = "key-tenant-a-second-0123456789"
KEY_B = "key-tenant-b-0123456789"
ADMIN = "key-admin-0123456789"
TENANT_A = "tenant_a"
TENANT_B = "tenant_b"
# A public address as a literal: URL checks need no DNS, and nothing is ever sent there.
PUBLIC_URL = "https://93.184.215.14/hooks"
# The API answers a webhook write once its own view has it; the router's and the sender's
# views apply it within tens of milliseconds, but a delivery sent through them at once can
# overtake it (the sender then logs "webhook deleted"). Tests that send right after a
# change give the other views this long first; the product race is reported separately.
PROPAGATION = 0.5


# -- a small synchronous HTTP client ------------------------------------------------------


@dataclass
class Reply:
    status: int
    body: bytes
    headers: dict[str, str]

    @property
    def json(self) -> Any:
        return orjson.loads(self.body)

    @property
    def error(self) -> dict[str, Any]:
        error: dict[str, Any] = self.json["error"]
        assert set(error) == {"code", "message", "details"}
        return error


@dataclass
class Client:
    port: int
    key: str | None = KEY_A

    def as_(self, key: str | None) -> Client:
        return Client(self.port, key)

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        sent = dict(headers or {})
        if self.key is not None:
            sent.setdefault("Authorization", f"Bearer {self.key}")
        payload = raw if raw is not None else (None if body is None else orjson.dumps(body))
        if payload is not None:
            sent.setdefault("Content-Type", "application/json")
        reply = http_request(self.port, method, path, payload, sent)
        return Reply(reply.status, reply.body, {k.lower(): v for k, v in reply.headers.items()})

    def get(self, path: str, **kw: Any) -> Reply:
        return self.call("GET", path, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> Reply:
        return self.call("POST", path, body, **kw)

    def patch(self, path: str, body: Any = None, **kw: Any) -> Reply:
        return self.call("PATCH", path, body, **kw)

    def put(self, path: str, body: Any = None, **kw: Any) -> Reply:
        return self.call("PUT", path, body, **kw)

    def delete(self, path: str, **kw: Any) -> Reply:
        return self.call("DELETE", path, **kw)


# -- the shared pipeline ------------------------------------------------------------------


@dataclass
class Stack(PipelineStack):
    paths: Iterator[int] = field(default_factory=lambda: iter(range(1, 1_000_000)))

    @property
    def api(self) -> Client:
        return Client(self.settings.api_port)

    def webhook(
        self,
        events: list[str] | None = None,
        behaviour: Behaviour | None = None,
        client: Client | None = None,
        **fields: Any,
    ) -> tuple[dict[str, Any], str]:
        """A webhook pointing at a fresh receiver path; returns it (with secret) and the path."""
        path = f"/hook{next(self.paths)}"
        reply = (client or self.api).post(
            "/v1/webhooks",
            {
                "name": f"test {path}",
                "url": self.receiver.url(path),
                "events": events or ["invoice.paid"],
                **fields,
            },
        )
        assert reply.status == 201, reply.body
        created: dict[str, Any] = reply.json
        self.receiver.expect(path, [created["secret"]], behaviour)
        return created, path


def settle() -> None:
    time.sleep(PROPAGATION)


def _settings(bootstrap: str, store_url: str, **overrides: Any) -> Settings:
    return api_settings(
        bootstrap,
        store_url,
        {KEY_A: TENANT_A, KEY_A2: TENANT_A, KEY_B: TENANT_B, ADMIN: "*"},
        **overrides,
    )


@pytest.fixture(scope="module")
def stack(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    directory = tmp_path_factory.mktemp("api")
    # PostgreSQL, the store of deployments with several API replicas; the generated-requests
    # test runs its API on SQLite.
    with (
        fresh_store_url("postgresql", directory) as store_url,
        running_stack(Stack, _settings(kafka_bootstrap, store_url), directory) as built,
    ):
        yield built


@pytest.fixture
def api(stack: Stack) -> Client:
    return stack.api


def logged(
    api: Client, delivery_id: str, ready: Callable[[dict[str, Any]], bool], timeout: float = 30
) -> dict[str, Any]:
    """The delivery from the API once the log-sink has stored what `ready` expects."""

    def fetch() -> dict[str, Any] | None:
        reply = api.get(f"/v1/deliveries/{delivery_id}")
        if reply.status == 200 and ready(reply.json):
            return dict(reply.json)
        return None

    found: dict[str, Any] = wait_for(fetch, timeout=timeout, what=f"delivery {delivery_id}")
    return found


def signatures(request: Received) -> list[str]:
    return request.headers["webhook-signature"].split(" ")


def verifies(secret: str, request: Received, signature: str | None = None) -> bool:
    headers = dict(request.headers)
    if signature is not None:
        headers["webhook-signature"] = signature
    try:
        Verifier(secret).verify(request.body, headers)
    except WebhookVerificationError:
        return False
    return True


def fresh_tenant() -> str:
    """A tenant no other test publishes to, so routed events reach only this test's webhooks."""
    return f"tenant_{uuid.uuid4().hex[:8]}"


def failing_events(
    stack: Stack, admin: Client, count: int
) -> tuple[dict[str, Any], str, list[dict[str, Any]]]:
    """A webhook answering 400 and `count` events it failed on, as logged deliveries."""
    tenant = fresh_tenant()
    webhook, path = stack.webhook(behaviour=Behaviour(status=400), client=admin, tenant_id=tenant)
    event_ids = []
    for _ in range(count):
        reply = admin.post(
            "/v1/events", {"type": "invoice.paid", "tenant_id": tenant, "data": {"n": 1}}
        )
        assert reply.status == 202, reply.body
        event_ids.append(reply.json["id"])

    def all_failed() -> list[dict[str, Any]] | None:
        page = admin.get(f"/v1/deliveries?webhook_id={webhook['id']}&status=failed").json
        return page["data"] if len(page["data"]) == count else None

    rows: list[dict[str, Any]] = wait_for(all_failed, timeout=45, what="failed deliveries")
    assert sorted(row["event_id"] for row in rows) == sorted(event_ids)
    return webhook, path, rows


# -- probes, metrics, OpenAPI ------------------------------------------------------------


def test_probes_and_metrics_need_no_key(api: Client) -> None:
    anonymous = api.as_(None)
    assert anonymous.get("/healthz").json == {"status": "ok"}
    assert anonymous.get("/readyz").json == {"status": "ready"}
    metrics = anonymous.get("/metrics")
    assert metrics.status == 200 and metrics.headers["content-type"].startswith("text/plain")
    text = metrics.body.decode()
    assert 'hookstream_api_requests_total{method="GET",route="/readyz",status="200"}' in text
    assert "hookstream_api_request_duration_seconds_bucket" in text


def test_openapi_documents_exactly_the_routes(stack: Stack, api: Client) -> None:
    document = api.as_(None).get("/openapi.json").json
    assert document["openapi"].startswith("3.1")
    documented = {
        (method.upper(), path) for path, item in document["paths"].items() for method in item
    }
    app = create_app(stack.settings)
    served = {(method, path) for method, path, _ in documented_routes(app)}
    undocumented = [(m, p) for m, p, op in documented_routes(app) if op is None]
    assert undocumented == []
    assert documented == served
    assert ("POST", "/v1/webhooks/{id}/rotate-secret") in served
    assert ("POST", "/v1/events/batch") in served
    assert len(served) == 20
    for path, item in document["paths"].items():
        for method, op in item.items():
            assert op["responses"], f"{method} {path} documents no response"
            if path.startswith("/v1/"):
                assert "401" in op["responses"], f"{method} {path} omits 401"
            headers = [p["name"] for p in op["parameters"] if p["in"] == "header"]
            # Every POST of the API, and only those, takes an Idempotency-Key; the changes of
            # one webhook take If-Match (and answer 412 when it no longer matches).
            expected = ["Idempotency-Key"] if method == "post" and path.startswith("/v1/") else []
            if (method, path) in CONDITIONAL_WRITES:
                expected.append("If-Match")
                assert "412" in op["responses"], (method, path)
            assert headers == expected, (method, path)
    get_webhook = document["paths"]["/v1/webhooks/{id}"]["get"]
    assert "ETag" in get_webhook["responses"]["200"]["headers"]


CONDITIONAL_WRITES = {
    ("patch", "/v1/webhooks/{id}"),
    ("delete", "/v1/webhooks/{id}"),
    ("post", "/v1/webhooks/{id}/rotate-secret"),
}


# -- error codes --------------------------------------------------------------------------


def test_every_v1_route_refuses_missing_or_wrong_keys(stack: Stack, api: Client) -> None:
    app = create_app(stack.settings)
    routes = [(m, p.replace("{id}", "x")) for m, p, _ in documented_routes(app)]
    for method, path in routes:
        if not path.startswith("/v1/"):
            continue
        for client, headers in (
            (api.as_(None), {}),
            (api.as_("not-a-key"), {}),
            (api.as_(None), {"Authorization": f"Basic {KEY_A}"}),
        ):
            reply = client.call(method, path, {}, headers=headers)
            assert reply.status == 401, (method, path, reply.body)
            assert reply.error["code"] == "unauthorized"
            assert reply.headers["www-authenticate"] == "Bearer"


def test_event_types_report_the_api_version_bodies_carry(stack: Stack, api: Client) -> None:
    reply = api.get("/v1/event-types")
    assert reply.status == 200
    assert reply.json["api_version"] == stack.settings.api_version == "v1"
    assert any(group["category"] == "invoice" for group in reply.json["categories"])


def test_unknown_routes_and_methods(api: Client) -> None:
    for client in (api, api.as_(None)):
        reply = client.get("/nope")
        assert reply.status == 404 and reply.error["code"] == "not_found"
    assert api.get("/v1/nope").status == 404
    reply = api.delete("/v1/event-types")
    assert reply.status == 405 and reply.error["code"] == "method_not_allowed"


def test_invalid_json_and_non_object_bodies_are_400(api: Client) -> None:
    reply = api.post("/v1/webhooks", raw=b'{"name": ')
    assert reply.status == 400 and reply.error["code"] == "invalid_json"
    reply = api.post("/v1/events", raw=b"[1, 2]")
    assert reply.status == 400 and reply.error["code"] == "invalid_body"


def test_oversize_bodies_are_413(api: Client) -> None:
    reply = api.post("/v1/webhooks", raw=b'{"name": "' + b"x" * (1024 * 1024 + 10) + b'"}')
    assert reply.status == 413 and reply.error["code"] == "payload_too_large"
    # Below the request limit but above the events' payload limit (256 KiB).
    big = {"type": "invoice.paid", "data": {"blob": "x" * (300 * 1024)}}
    reply = api.post("/v1/events", big)
    assert reply.status == 413 and "limit" in reply.error["message"]


def test_bad_fields_are_422_naming_them(stack: Stack, api: Client) -> None:
    good = {"name": "n", "url": PUBLIC_URL, "events": ["invoice.paid"]}

    def fields_of(reply: Reply) -> set[str]:
        assert reply.status == 422, reply.body
        return {detail["field"] for detail in reply.error["details"]}

    assert fields_of(api.post("/v1/webhooks", {"url": good["url"]})) == {"name", "events"}
    assert fields_of(api.post("/v1/webhooks", {**good, "enabled": "yes"})) == {"enabled"}
    assert fields_of(api.post("/v1/webhooks", {**good, "color": "red"})) == {"color"}
    reply = api.post("/v1/webhooks", {**good, "events": ["invoice.paid", "invoice.nope", "x.*"]})
    assert fields_of(reply) == {"events"}
    assert reply.error["details"][0]["unknown"] == ["invoice.nope", "x.*"]
    # Private, loopback outside the allow-list, and plain http to a public host.
    for url, reason in (
        ("https://10.1.2.3/h", "private"),
        ("https://[::ffff:192.168.1.1]/h", "private"),
        (PUBLIC_URL.replace("https", "http"), "http"),
        (PUBLIC_URL.replace("https", "ftp"), "scheme"),
    ):
        reply = api.post("/v1/webhooks", {**good, "url": url})
        assert fields_of(reply) == {"url"} and reason in reply.error["message"], url
    admin = api.as_(ADMIN)
    assert fields_of(admin.post("/v1/webhooks", good)) == {"tenant_id"}
    assert fields_of(api.post("/v1/webhooks", {**good, "tenant_id": TENANT_B})) == {"tenant_id"}
    assert fields_of(api.post("/v1/events", {"type": "invoice.nope", "data": {}})) == {"type"}
    assert fields_of(api.post("/v1/events", {"type": "invoice.paid"})) == {"data"}
    reply = api.post("/v1/events", {"type": "invoice.paid", "occurred_at": "soon", "data": {}})
    assert fields_of(reply) == {"occurred_at"}
    assert fields_of(admin.put("/v1/principals/p1", {"permissions": []})) == {"tenant_id"}

    webhook, _ = stack.webhook()
    path = f"/v1/webhooks/{webhook['id']}"
    assert fields_of(api.patch(path, {"name": None})) == {"body"}
    assert fields_of(api.patch(path, {"events": []})) == {"events"}
    for grace in (-1, 604801, "60"):
        reply = api.post(f"{path}/rotate-secret", {"grace_period_seconds": grace})
        assert fields_of(reply) == {"grace_period_seconds"}
    assert fields_of(api.post(f"{path}/recover", {})) == {"since"}
    assert fields_of(api.post(f"{path}/recover", {"since": "yesterday"})) == {"since"}
    reply = api.post(f"{path}/recover", {"since": 2000, "until": 1000})
    assert fields_of(reply) == {"until"}
    for query, field_name in (
        ("status=lost", "status"),
        ("limit=0", "limit"),
        ("limit=many", "limit"),
        ("since=tomorrow", "since"),
        ("cursor=garbage!", "cursor"),
        (f"tenant_id={TENANT_B}", "tenant_id"),
    ):
        assert fields_of(api.get(f"/v1/deliveries?{query}")) == {field_name}, query
    assert fields_of(api.get("/v1/webhooks?cursor=garbage!")) == {"cursor"}


def test_503_while_kafka_is_unreachable(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    directory = tmp_path_factory.mktemp("api-down")
    settings = _settings(
        kafka_bootstrap,
        sqlite_url(directory),
        kafka_bootstrap_servers=f"127.0.0.1:{localkafka.free_port()}",
    )
    service = Service(settings, "api", directory)
    client = Client(settings.api_port)
    try:
        wait_for(lambda: _answers(client), timeout=30, what="the API to listen")
        reply = client.get("/readyz")
        assert reply.status == 503 and reply.error["code"] == "not_ready"
        assert reply.error["details"]["store"] == "ok"
        assert reply.error["details"]["kafka"] != "ok"
        reply = client.post("/v1/webhooks", {"name": "n", "url": PUBLIC_URL, "events": ["*"]})
        assert reply.status == 503 and reply.error["code"] == "unavailable"
        # A 5xx answer is not kept for its Idempotency-Key: the same key may be retried.
        keyed = {"Idempotency-Key": uuid.uuid4().hex}
        for _ in range(2):
            reply = client.post(
                "/v1/webhooks", {"name": "n", "url": PUBLIC_URL, "events": ["*"]}, headers=keyed
            )
            assert reply.status == 503 and "idempotent-replayed" not in reply.headers
    finally:
        # Killed: a graceful stop waits out the views' join timeout on a dead broker.
        service.close()


def _answers(client: Client) -> bool:
    try:
        return client.get("/healthz").status == 200
    except OSError:
        return False


# -- webhooks -----------------------------------------------------------------------------


def test_create_get_update_delete_read_your_writes(api: Client) -> None:
    reply = api.post(
        "/v1/webhooks",
        {
            "name": "billing",
            "url": PUBLIC_URL,
            "description": "invoices to the ERP",
            "events": ["invoice.*", "offer.accepted"],
        },
    )
    assert reply.status == 201, reply.body
    created = reply.json
    secret = created["secret"]
    assert secret.startswith("whsec_")
    assert created["tenant_id"] == TENANT_A and created["enabled"] is True
    assert created["secret_hint"] == "…" + secret[-4:]
    path = f"/v1/webhooks/{created['id']}"

    # Immediately readable, and never again with the secret.
    got = api.get(path)
    assert got.status == 200
    assert "secret" not in got.json and secret not in got.body.decode()
    assert got.json == {k: v for k, v in created.items() if k != "secret"}
    listed = api.get("/v1/webhooks?limit=1000").json["data"]
    assert created["id"] in {w["id"] for w in listed}
    assert all(secret not in orjson.dumps(w).decode() for w in listed)

    reply = api.patch(path, {"name": "billing v2", "description": None, "events": ["*"]})
    assert reply.status == 200, reply.body
    assert api.get(path).json["name"] == "billing v2"
    assert api.get(path).json["description"] is None
    assert api.get(path).json["events"] == ["*"]
    assert api.get(path).json["url"] == PUBLIC_URL

    assert api.delete(path).status == 204
    assert api.get(path).status == 404
    assert api.delete(path).status == 404


def test_admin_acts_for_any_tenant(stack: Stack, api: Client) -> None:
    admin = api.as_(ADMIN)
    tenant = f"tenant_{uuid.uuid4().hex[:8]}"
    webhook, _ = stack.webhook(client=admin, tenant_id=tenant)
    assert webhook["tenant_id"] == tenant
    path = f"/v1/webhooks/{webhook['id']}"
    assert admin.get(path).status == 200
    assert admin.get(f"{path}?tenant_id={tenant}").status == 200
    assert admin.get(f"{path}?tenant_id={TENANT_B}").status == 404
    assert api.get(path).status == 404
    every = {w["id"] for w in admin.get("/v1/webhooks?limit=1000").json["data"]}
    assert webhook["id"] in every
    [only] = admin.get(f"/v1/webhooks?tenant_id={tenant}").json["data"]
    assert only["id"] == webhook["id"]


def test_webhook_pages_cover_everything_once_newest_first(stack: Stack, api: Client) -> None:
    admin = api.as_(ADMIN)
    tenant = f"tenant_{uuid.uuid4().hex[:8]}"
    ids = [stack.webhook(client=admin, tenant_id=tenant)[0]["id"] for _ in range(5)]
    seen: list[str] = []
    cursor = None
    while True:
        query = f"/v1/webhooks?tenant_id={tenant}&limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = admin.get(query).json
        seen += [w["id"] for w in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids))


def test_tenant_isolation_on_every_route(stack: Stack, api: Client) -> None:
    webhook, path = stack.webhook()
    other = api.as_(KEY_B)
    base = f"/v1/webhooks/{webhook['id']}"
    sent = api.post(f"{base}/test").json
    delivery = logged(api, sent["delivery_id"], lambda d: d["status"] == "succeeded")

    for method, route, body in (
        ("GET", base, None),
        ("PATCH", base, {"name": "stolen"}),
        ("DELETE", base, None),
        ("POST", f"{base}/rotate-secret", {}),
        ("POST", f"{base}/test", None),
        ("GET", f"{base}/health", None),
        ("POST", f"{base}/recover", {"since": 0}),
        ("GET", f"/v1/deliveries/{delivery['id']}", None),
        ("POST", f"/v1/deliveries/{delivery['id']}/replay", None),
    ):
        reply = other.call(method, route, body)
        assert reply.status == 404, (method, route, reply.body)
        assert reply.error["code"] == "not_found"
    assert webhook["id"] not in {w["id"] for w in other.get("/v1/webhooks").json["data"]}
    theirs = other.get(f"/v1/deliveries?webhook_id={webhook['id']}").json
    assert theirs == {"data": [], "next_cursor": None}
    assert other.get(f"/v1/webhooks?tenant_id={TENANT_A}").status == 422
    # Nothing of the above changed the webhook or sent anything more.
    assert api.get(base).json["name"] == webhook["name"]
    assert len(stack.receiver.received(path)) == 1

    owner = f"p_{uuid.uuid4().hex[:8]}"
    assert api.put(f"/v1/principals/{owner}", {"permissions": ["invoices:read"]}).status == 200
    reply = other.put(f"/v1/principals/{owner}", {"permissions": []})
    assert reply.status == 404
    reply = other.post("/v1/events", {"type": "invoice.paid", "tenant_id": TENANT_A, "data": {}})
    assert reply.status == 422


# -- test events, the delivery log, health ------------------------------------------------


def test_test_event_is_delivered_signed_and_logged(stack: Stack, api: Client) -> None:
    webhook, path = stack.webhook(events=["invoice.paid"])
    reply = api.post(f"/v1/webhooks/{webhook['id']}/test")
    assert reply.status == 202, reply.body
    sent = reply.json
    [request] = received(stack.receiver, path)
    assert request.verified
    assert request.headers["webhook-id"] == sent["event_id"]
    body = orjson.loads(request.body)
    assert body["type"] == "webhook.test" and body["data"] == {"test": True}
    assert body["id"] == sent["event_id"]

    delivery = logged(api, sent["delivery_id"], lambda d: d["status"] == "succeeded")
    assert delivery["webhook_id"] == webhook["id"] and delivery["event_type"] == "webhook.test"
    assert delivery["payload"] == body
    [attempt] = delivery["attempts"]
    assert attempt["trigger"] == "test" and attempt["attempt_number"] == 1
    assert attempt["status_code"] == 204 and attempt["outcome"] == "success"
    assert attempt["url"] == webhook["url"]

    listed = api.get(f"/v1/deliveries?webhook_id={webhook['id']}").json
    assert [d["id"] for d in listed["data"]] == [sent["delivery_id"]]
    assert "payload" not in listed["data"][0]
    since_ms = int(time.time() * 1000) - 60_000
    for query, expected in (
        ("event_type=webhook.test", 1),
        ("event_type=invoice.paid", 0),
        ("status=succeeded", 1),
        ("status=failed", 0),
        (f"since={since_ms}", 1),
        ("since=2999-01-01T00:00:00Z", 0),
        ("until=2000-01-01T00:00:00Z", 0),
    ):
        page = api.get(f"/v1/deliveries?webhook_id={webhook['id']}&{query}").json
        assert len(page["data"]) == expected, query

    health = api.get(f"/v1/webhooks/{webhook['id']}/health").json
    assert health["last_status"] == "success" and health["last_status_code"] == 204
    assert health["success_rate_24h"] == 1.0 and health["attempts_24h"] == 1
    assert health["failing_since"] is None and health["disabled_reason"] is None

    # A delivered event can be replayed too, by its own tenant.
    replayed = api.post(f"/v1/deliveries/{sent['delivery_id']}/replay")
    assert replayed.status == 202 and replayed.json["attempt"] == 2
    again = received(stack.receiver, path, 2)[-1]
    assert again.verified and again.headers["webhook-id"] == sent["event_id"]


def test_an_event_published_right_after_its_webhook_was_created_reaches_it(
    stack: Stack, api: Client
) -> None:
    # No pause between the two calls: the router must not route against a view that has not
    # read the new webhook yet. Repeated, because a stale view loses only some of the races;
    # a tenant per round, so each event is meant for exactly one webhook.
    admin = api.as_(ADMIN)
    paths = []
    for _ in range(10):
        tenant = fresh_tenant()
        path = f"/fresh-{uuid.uuid4().hex[:8]}"
        webhook = {"name": path, "url": stack.receiver.url(path), "events": ["invoice.paid"]}
        reply = admin.post("/v1/webhooks", {**webhook, "tenant_id": tenant})
        assert reply.status == 201, reply.body
        stack.receiver.expect(path, [reply.json["secret"]])
        event = {"type": "invoice.paid", "tenant_id": tenant, "data": {"path": path}}
        published = admin.post("/v1/events", event)
        assert published.status == 202, published.body
        paths.append(path)
    for path in paths:
        [request] = received(stack.receiver, path)
        assert request.verified


def test_disabled_webhooks_refuse_tests_until_re_enabled(stack: Stack, api: Client) -> None:
    webhook, path = stack.webhook()
    base = f"/v1/webhooks/{webhook['id']}"
    assert api.patch(base, {"enabled": False}).json["enabled"] is False
    reply = api.post(f"{base}/test")
    assert reply.status == 409 and reply.error["code"] == "webhook_disabled"
    assert api.get(f"{base}/health").json["enabled"] is False
    assert api.patch(base, {"enabled": True}).json["disabled_reason"] is None
    settle()
    assert api.post(f"{base}/test").status == 202
    received(stack.receiver, path)


def test_deliveries_paginate_with_cursors(stack: Stack, api: Client) -> None:
    webhook, path = stack.webhook()
    sent = [api.post(f"/v1/webhooks/{webhook['id']}/test").json for _ in range(3)]
    received(stack.receiver, path, 3)

    def all_logged() -> bool:
        page = api.get(f"/v1/deliveries?webhook_id={webhook['id']}").json
        return len(page["data"]) == 3

    wait_for(all_logged, timeout=30, what="three logged deliveries")
    seen: list[str] = []
    cursor = ""
    while cursor is not None:
        page = api.get(f"/v1/deliveries?webhook_id={webhook['id']}&limit=2{cursor}").json
        seen += [d["id"] for d in page["data"]]
        cursor = page["next_cursor"] and f"&cursor={page['next_cursor']}"
    assert sorted(seen) == sorted(s["delivery_id"] for s in sent)


# -- secrets ------------------------------------------------------------------------------


def _test_request(stack: Stack, api: Client, webhook_id: str, path: str) -> Received:
    before = len(stack.receiver.received(path))
    assert api.post(f"/v1/webhooks/{webhook_id}/test").status == 202
    return received(stack.receiver, path, before + 1)[-1]


def _after_rotation(stack: Stack, api: Client, webhook_id: str, path: str, new: str) -> Received:
    """A test request signed with the rotated secret.

    The API answers once its own view has the new secret; the sender's view follows within
    moments, so a test sent in between may still carry the old one and is sent again.
    """
    deadline = time.monotonic() + 30
    while True:
        request = _test_request(stack, api, webhook_id, path)
        if verifies(new, request) or time.monotonic() > deadline:
            return request
        time.sleep(0.2)


def test_rotation_without_grace_stops_the_old_secret_at_once(stack: Stack, api: Client) -> None:
    webhook, path = stack.webhook()
    old = webhook["secret"]
    assert verifies(old, _test_request(stack, api, webhook["id"], path))

    reply = api.post(f"/v1/webhooks/{webhook['id']}/rotate-secret")
    assert reply.status == 200, reply.body
    new = reply.json["secret"]
    assert new.startswith("whsec_") and new != old
    assert reply.json["previous_secrets_valid_until"] is None
    shown = api.get(f"/v1/webhooks/{webhook['id']}").json
    assert "secret" not in shown and shown["secret_hint"] == "…" + new[-4:]

    request = _after_rotation(stack, api, webhook["id"], path, new)
    assert verifies(new, request)
    assert not verifies(old, request)
    assert len(signatures(request)) == 1


def test_rotation_with_grace_signs_with_both_secrets(stack: Stack, api: Client) -> None:
    webhook, path = stack.webhook()
    old = webhook["secret"]
    reply = api.post(f"/v1/webhooks/{webhook['id']}/rotate-secret", {"grace_period_seconds": 3600})
    assert reply.status == 200, reply.body
    new = reply.json["secret"]
    assert reply.json["previous_secrets_valid_until"] is not None

    request = _after_rotation(stack, api, webhook["id"], path, new)
    first, second = signatures(request)
    assert first.startswith("v1,") and second.startswith("v1,")
    assert verifies(new, request, first) and not verifies(old, request, first)
    assert verifies(old, request, second) and not verifies(new, request, second)


# -- replay and recover -------------------------------------------------------------------


def test_replay_resends_with_the_same_webhook_id(stack: Stack, api: Client) -> None:
    api = api.as_(ADMIN)
    _, path, [row] = failing_events(stack, api, 1)
    [first] = stack.receiver.received(path)
    stack.receiver.behave(path, Behaviour(status=200))

    reply = api.post(f"/v1/deliveries/{row['id']}/replay")
    assert reply.status == 202, reply.body
    assert reply.json == {"delivery_id": row["id"], "event_id": row["event_id"], "attempt": 2}
    second = received(stack.receiver, path, 2)[-1]
    assert second.verified
    assert second.headers["webhook-id"] == first.headers["webhook-id"] == row["event_id"]
    assert second.body == first.body

    delivery = logged(api, row["id"], lambda d: d["status"] == "succeeded")
    assert [(a["attempt_number"], a["trigger"]) for a in delivery["attempts"]] == [
        (1, "scheduled"),
        (2, "manual"),
    ]
    assert api.post("/v1/deliveries/dlv_missing/replay").status == 404


def test_recover_replays_every_failed_delivery(stack: Stack, api: Client) -> None:
    api = api.as_(ADMIN)
    webhook, path, rows = failing_events(stack, api, 3)
    stack.receiver.behave(path, Behaviour(status=200))
    base = f"/v1/webhooks/{webhook['id']}"
    reply = api.post(f"{base}/recover", {"since": "2999-01-01T00:00:00Z"})
    assert reply.json == {"replayed": 0, "skipped": 0}

    since = int(time.time() * 1000) - 3_600_000
    reply = api.post(f"{base}/recover", {"since": since})
    assert reply.status == 202, reply.body
    assert reply.json == {"replayed": 3, "skipped": 0}
    requests = received(stack.receiver, path, 6)
    first, again = requests[:3], requests[3:]
    assert all(r.verified for r in again)
    ids = sorted(r.headers["webhook-id"] for r in first)
    assert sorted(r.headers["webhook-id"] for r in again) == ids
    assert ids == sorted(row["event_id"] for row in rows)

    def recovered() -> bool:
        page = api.get(f"/v1/deliveries?webhook_id={webhook['id']}&status=succeeded").json
        return len(page["data"]) == 3

    wait_for(recovered, timeout=30, what="recovered deliveries to succeed")
    health = api.get(f"{base}/health").json
    assert health["last_status"] == "success" and health["failing_since"] is None


# -- events and principals ----------------------------------------------------------------


def test_events_are_published_once_per_id(stack: Stack, api: Client) -> None:
    event_id = f"evt_{uuid.uuid4().hex}"
    event = {
        "id": event_id,
        "type": "offer.accepted",
        "occurred_at": "2026-05-01T10:00:00+02:00",
        "data": {"offer_id": "of_1"},
    }
    first = api.post("/v1/events", event)
    assert first.status == 202 and first.json == {"id": event_id, "duplicate": False}
    again = api.post("/v1/events", event)
    assert again.status == 202 and again.json == {"id": event_id, "duplicate": True}
    # The same id in another tenant is another event.
    admin = api.as_(ADMIN)
    other = admin.post("/v1/events", {**event, "tenant_id": TENANT_B})
    assert other.json == {"id": event_id, "duplicate": False}
    generated = api.post("/v1/events", {"type": "offer.accepted", "data": {}}).json
    assert generated["id"].startswith("evt_") and generated["duplicate"] is False

    records = read_topic(stack.settings, Topics.from_settings(stack.settings).events, "Event")
    mine = [r for r in records if r["id"] == event_id]
    assert sorted(r["tenant_id"] for r in mine) == [TENANT_A, TENANT_B]
    record = next(r for r in mine if r["tenant_id"] == TENANT_A)
    assert record["type"] == "offer.accepted"
    assert record["occurred_at"] == "2026-05-01T08:00:00Z"
    assert orjson.loads(record["data"]) == {"offer_id": "of_1"}


def test_principals_decide_what_owned_webhooks_receive(stack: Stack, api: Client) -> None:
    admin = api.as_(ADMIN)
    tenant = fresh_tenant()
    owner = f"p_{uuid.uuid4().hex[:8]}"
    _, owned = stack.webhook(client=admin, tenant_id=tenant, owner_id=owner)
    _, unowned = stack.webhook(client=admin, tenant_id=tenant)
    data = {"invoice_id": "inv_1", "bank_details": {"iban": "DE89"}}
    event = {"type": "invoice.paid", "tenant_id": tenant, "data": data}

    # The owner is unknown to the platform yet, so the router skips the owned webhook. Once
    # the unowned one has the event, the router is done with it.
    unseen = admin.post("/v1/events", event).json["id"]
    received(stack.receiver, unowned)
    assert stack.receiver.received(owned) == []

    reply = admin.put(
        f"/v1/principals/{owner}", {"tenant_id": tenant, "permissions": ["invoices:read"]}
    )
    assert reply.status == 200, reply.body
    assert reply.json == {"id": owner, "tenant_id": tenant, "permissions": ["invoices:read"]}

    # The router's own view of principals follows the topic within moments.
    def delivered() -> list[Received]:
        admin.post("/v1/events", event)
        time.sleep(0.3)
        return stack.receiver.received(owned)

    request = wait_for(delivered, timeout=30, interval=0.2, what="a routed event")[0]
    assert request.verified
    assert request.headers["webhook-id"] != unseen
    # Shaped for an owner without invoices:read_sensitive.
    assert orjson.loads(request.body)["data"] == {"invoice_id": "inv_1"}


# -- Idempotency-Key ----------------------------------------------------------------------


def keyed(key: str | None = None) -> dict[str, str]:
    return {"Idempotency-Key": key or f"idem-{uuid.uuid4().hex}"}


def same_answer(first: Reply, again: Reply) -> None:
    assert first.status < 500 and "idempotent-replayed" not in first.headers, first.body
    assert (again.status, again.json) == (first.status, first.json)
    assert again.headers["idempotent-replayed"] == "true"
    assert again.headers["content-type"] == first.headers["content-type"]


def test_every_post_repeated_with_its_key_gets_the_first_answer(stack: Stack, api: Client) -> None:
    admin = api.as_(ADMIN)
    tenant = fresh_tenant()
    failing, path, [row] = failing_events(stack, admin, 1)
    stack.receiver.behave(path, Behaviour(status=200))
    body = {"name": "idem", "url": PUBLIC_URL, "events": ["invoice.paid"], "tenant_id": tenant}
    base = f"/v1/webhooks/{failing['id']}"
    since = int(time.time() * 1000) - 3_600_000
    calls: list[tuple[str, Any]] = [
        ("/v1/webhooks", body),
        (f"{base}/rotate-secret", {"grace_period_seconds": 60}),
        (f"{base}/test", None),
        (f"{base}/recover", {"since": since}),
        (f"/v1/deliveries/{row['id']}/replay", None),
        ("/v1/events", {"type": "invoice.paid", "tenant_id": tenant, "data": {"n": 1}}),
    ]
    answers = {}
    for target, sent in calls:
        headers = keyed()
        first = admin.post(target, sent, headers=headers)
        again = admin.post(target, sent, headers=headers)
        same_answer(first, again)
        answers[target] = first.json

    # One effect each: one webhook (its secret shown again, the same), one rotation, one test
    # event, one recovery and one replay (their records), one event (a fresh id each time).
    created = answers["/v1/webhooks"]
    assert created["secret"].startswith("whsec_")
    listed = admin.get(f"/v1/webhooks?tenant_id={tenant}").json["data"]
    assert [w["id"] for w in listed] == [created["id"]]
    rotated = answers[f"{base}/rotate-secret"]
    assert admin.get(base).json["secret_hint"] == "…" + rotated["secret"][-4:]
    topics = Topics.from_settings(stack.settings)
    routed = [
        d
        for d in read_topic(stack.settings, topics.deliveries, "Delivery")
        if d["webhook_id"] == failing["id"]
    ]
    assert [d["trigger"] for d in routed if d["trigger"] != "scheduled"].count("test") == 1
    manual = [d for d in routed if d["trigger"] == "manual"]
    # The recovery and the replay of the one failed delivery.
    assert len(manual) == 2 and {d["delivery_id"] for d in manual} == {row["id"]}
    event_id = answers["/v1/events"]["id"]
    events = read_topic(stack.settings, topics.events, "Event")
    assert [e["id"] for e in events].count(event_id) == 1


def test_a_key_stands_for_one_request_of_one_api_key(api: Client) -> None:
    body = {"name": "n", "url": PUBLIC_URL, "events": ["invoice.paid"]}
    headers = keyed()
    first = api.post("/v1/webhooks", body, headers=headers)
    assert first.status == 201, first.body

    def refused(reply: Reply, reason: str) -> str:
        assert reply.status == 422, reply.body
        assert reply.error["code"] == "idempotency_key_reused"
        assert reply.error["details"] == {
            "idempotency_key": headers["Idempotency-Key"],
            "reason": reason,
        }
        return str(reply.error["message"])

    message = refused(
        api.post("/v1/webhooks", {**body, "name": "m"}, headers=headers), "different_body"
    )
    assert "different request body" in message
    message = refused(api.post("/v1/events", {}, headers=headers), "different_request")
    assert "POST /v1/webhooks" in message
    other_query = api.post("/v1/webhooks?tenant_id=tenant_a", body, headers=headers)
    refused(other_query, "different_body")
    message = refused(
        api.as_(KEY_A2).post("/v1/webhooks", body, headers=headers), "different_api_key"
    )
    assert "another API key" in message
    # The same JSON in another spelling is the same request.
    spelled = orjson.dumps(dict(reversed(list(body.items()))), option=orjson.OPT_INDENT_2)
    same_answer(first, api.post("/v1/webhooks", raw=spelled, headers=headers))
    # Another tenant's key (and an admin's) has keys of its own: the same key acts anew.
    for client, tenant in ((api.as_(KEY_B), None), (api.as_(ADMIN), TENANT_A)):
        sent = body if tenant is None else {**body, "tenant_id": tenant}
        reply = client.post("/v1/webhooks", sent, headers=headers)
        assert reply.status == 201 and "idempotent-replayed" not in reply.headers
        assert reply.json["id"] != first.json["id"]


def test_refusals_are_kept_but_conflicts_are_not(stack: Stack, api: Client) -> None:
    headers = keyed()
    first = api.post("/v1/webhooks", {"url": PUBLIC_URL}, headers=headers)
    assert first.status == 422
    same_answer(first, api.post("/v1/webhooks", {"url": PUBLIC_URL}, headers=headers))
    # A 409 (here: the webhook is disabled) may be over by the next try with the same key.
    webhook, _ = stack.webhook()
    base = f"/v1/webhooks/{webhook['id']}"
    assert api.patch(base, {"enabled": False}).status == 200
    headers = keyed()
    reply = api.post(f"{base}/test", headers=headers)
    assert reply.status == 409 and reply.error["code"] == "webhook_disabled"
    assert api.patch(base, {"enabled": True}).status == 200
    reply = api.post(f"{base}/test", headers=headers)
    assert reply.status == 202 and "idempotent-replayed" not in reply.headers
    same_answer(reply, api.post(f"{base}/test", headers=headers))


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        ("", "is empty"),
        ("k" * 256, "256 characters long"),
        ("two words", "U+0020"),
        ("tab\tkey", "U+0009"),
        ("caf\u00e9", "visible ASCII"),
    ],
)
def test_invalid_keys_are_400_naming_the_problem(api: Client, key: str, problem: str) -> None:
    body = {"name": "n", "url": PUBLIC_URL, "events": ["invoice.paid"]}
    reply = api.post("/v1/webhooks", body, headers={"Idempotency-Key": key})
    assert reply.status == 400, reply.body
    assert reply.error["code"] == "invalid_idempotency_key"
    assert problem in reply.error["message"] and "Idempotency-Key" in reply.error["message"]


def test_the_longest_key_of_any_visible_ascii_is_accepted(api: Client) -> None:
    visible = "".join(chr(code) for code in range(0x21, 0x7F))
    key = (visible + uuid.uuid4().hex * 8)[:255]
    body = {"name": "n", "url": PUBLIC_URL, "events": ["invoice.paid"]}
    first = api.post("/v1/webhooks", body, headers={"Idempotency-Key": key})
    assert first.status == 201, first.body
    same_answer(first, api.post("/v1/webhooks", body, headers={"Idempotency-Key": key}))
