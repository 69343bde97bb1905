"""One trace from the platform's publish to the customer's 2xx, across real service processes.

The services export OTLP/HTTP to a receiver this test runs on loopback (`tests/otlp.py`); the
span tree is read back from what they exported.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import orjson
import pytest

from hookstream.core.settings import Settings
from hookstream.tools import localkafka
from hookstream.tools.topics import create_topics
from tests.conftest import ServiceStarter, SettingsFactory
from tests.helpers import http_request, wait_api_ready
from tests.otlp import OtlpReceiver, Span
from tests.pipeline import Platform, make_webhook
from tests.receiver import Behaviour, TestReceiver, received

pytestmark = pytest.mark.integration

# The webhook's URL carries credentials and a token in its query: neither may reach a span.
USERINFO = "hookuser:hookpass"
TOKEN = "tok3n-s3cret"


@pytest.fixture
def otlp() -> Any:
    receiver = OtlpReceiver().start()
    try:
        yield receiver
    finally:
        receiver.stop()


def tracing_env(otlp: OtlpReceiver) -> dict[str, str]:
    return {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.endpoint,
        # Export within 0.1 s instead of 5 s, so the test waits less.
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }


def traced_settings(settings_factory: SettingsFactory, **overrides: Any) -> Settings:
    settings = settings_factory(
        allow_private_targets=("127.0.0.0/8",),
        request_timeout=2.0,
        send_traceparent=True,
        **overrides,
    )
    create_topics(settings)
    return settings


def secret_url(receiver: TestReceiver, path: str, secret: str, behaviour: Behaviour) -> str:
    url = receiver.expect(path, [secret], behaviour)
    return url.replace("http://", f"http://{USERINFO}@", 1) + f"?token={TOKEN}"


def traceparent() -> tuple[str, str, str]:
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return trace_id, span_id, f"00-{trace_id}-{span_id}-01"


def attempts_of(spans: list[Span], trace_id: str) -> list[Span]:
    found = [s for s in spans if s.service == "hookstream-sender" and s.trace_id == trace_id]
    return sorted(found, key=lambda s: s.attributes["hookstream.attempt.number"])


def assert_no_secrets(spans: list[Span]) -> None:
    for span in spans:
        for name, value in span.attributes.items():
            text = str(value)
            assert TOKEN not in text and "token=" not in text, (span.name, name, text)
            assert "hookpass" not in text and "hookuser" not in text, (span.name, name, text)
            assert "?" not in text, (span.name, name, text)


def test_a_retried_delivery_is_one_trace(
    settings_factory: SettingsFactory,
    receiver: TestReceiver,
    services: ServiceStarter,
    otlp: OtlpReceiver,
) -> None:
    settings = traced_settings(settings_factory)
    platform = Platform(settings)
    webhook = make_webhook("tenant_a", "", ["invoice.paid"])
    secret = webhook.secrets[0].value
    url = secret_url(receiver, "/t", secret, Behaviour(fail_first=1, fail_status=503))
    webhook = platform.webhook(make_webhook("tenant_a", url, ["invoice.paid"], secret=secret))
    env = tracing_env(otlp)
    for name in ("router", "sender", "log-sink"):
        services(name, settings, **env)

    trace_id, publisher_span, header = traceparent()
    platform.event(
        "tenant_a",
        "invoice.paid",
        headers=[("traceparent", header.encode()), ("tracestate", b"platform=1")],
    )
    first, second = received(receiver, "/t", count=2, timeout=60)
    assert (first.status, second.status) == (503, 204)

    def complete(spans: list[Span]) -> bool:
        attempts = attempts_of(spans, trace_id)
        ids = {a.span_id for a in attempts}
        stored = {k.span_id for s in spans if s.name == "store attempts" for k in s.links}
        routed = any(s.name == "route events" for s in spans)
        return len(attempts) == 2 and ids <= stored and routed

    spans = otlp.wait(complete, "the spans of routing, both attempts and their store writes")

    # Routing: a batch span of its own, linked to the event the platform published.
    [routing] = [s for s in spans if s.name == "route events" and _links_to(s, trace_id)]
    assert routing.service == "hookstream-router" and routing.kind == "consumer"
    assert routing.links[0].span_id == publisher_span
    assert routing.attributes["messaging.destination.name"] == settings.topic_prefix + "events"
    assert routing.attributes["hookstream.deliveries"] == 1

    # The attempts: the first a child of the publisher's span, the retry a child of the first.
    failed, retried = attempts_of(spans, trace_id)
    assert failed.parent_span_id == publisher_span
    assert retried.parent_span_id == failed.span_id
    assert retried.start_ns >= failed.end_ns
    for span, number, status, outcome in (
        (failed, 1, 503, "temporary_failure"),
        (retried, 2, 204, "success"),
    ):
        assert span.name == "POST" and span.kind == "client"
        attributes = span.attributes
        assert attributes["hookstream.attempt.number"] == number
        assert attributes["http.response.status_code"] == status
        assert attributes["hookstream.outcome"] == outcome
        assert attributes["hookstream.webhook.id"] == webhook.id
        assert attributes["hookstream.event.type"] == "invoice.paid"
        assert attributes["hookstream.delivery.id"].startswith("dlv_")
        assert attributes["http.request.method"] == "POST"
        assert attributes["server.address"] == "127.0.0.1"
        assert attributes["server.port"] == receiver.port
        assert attributes["url.scheme"] == "http"
        assert "url.full" not in attributes and "url.path" not in attributes
    assert failed.error and failed.attributes["error.type"] == "503"
    assert failed.attributes["hookstream.retry.tier"] == "200ms"
    assert not retried.error and "error.type" not in retried.attributes

    # The customer saw each attempt's own context (HOOKSTREAM_SEND_TRACEPARENT).
    assert first.headers["traceparent"] == f"00-{trace_id}-{failed.span_id}-01"
    assert second.headers["traceparent"] == f"00-{trace_id}-{retried.span_id}-01"
    assert second.headers["tracestate"] == "platform=1"

    # The store writes link back to both attempts.
    stores = [s for s in spans if s.name == "store attempts"]
    assert all(s.service == "hookstream-log-sink" for s in stores)
    linked = {(k.trace_id, k.span_id) for s in stores for k in s.links}
    assert {(trace_id, failed.span_id), (trace_id, retried.span_id)} <= linked
    assert all(s.attributes["db.system.name"] == "sqlite" for s in stores)

    # A malformed traceparent does not stop routing: the event starts a trace at routing.
    platform.event("tenant_a", "invoice.paid", headers=[("traceparent", b"00-not-a-trace-01")])
    received(receiver, "/t", count=3, timeout=60)

    def fresh_attempts(spans: list[Span]) -> list[Span]:
        return [s for s in spans if s.service == "hookstream-sender" and s.trace_id != trace_id]

    def third(spans: list[Span]) -> bool:
        # Each process exports on its own schedule: the router's span may come after the
        # sender's, so wait for both.
        fresh = fresh_attempts(spans)
        return bool(fresh) and any(s.span_id == fresh[0].parent_span_id for s in spans)

    spans = otlp.wait(third, "the third attempt's span and its routing span")
    [fresh] = fresh_attempts(spans)
    [batch] = [s for s in spans if s.span_id == fresh.parent_span_id]
    assert batch.name == "route events" and batch.trace_id == fresh.trace_id
    assert_no_secrets(otlp.spans())


def test_post_events_carries_the_callers_trace_through_a_router_that_does_not_trace(
    settings_factory: SettingsFactory,
    receiver: TestReceiver,
    services: ServiceStarter,
    otlp: OtlpReceiver,
    tmp_path: Path,
) -> None:
    settings = traced_settings(
        settings_factory, api_keys={"key-a": "tenant_a"}, api_port=localkafka.free_port()
    )
    platform = Platform(settings)
    webhook = make_webhook("tenant_a", "", ["invoice.paid"])
    secret = webhook.secrets[0].value
    url = secret_url(receiver, "/api", secret, Behaviour())
    platform.webhook(make_webhook("tenant_a", url, ["invoice.paid"], secret=secret))
    env = tracing_env(otlp)
    services("api", settings, **env)
    services("router", settings)  # no OTEL_* variables: it only passes the context on
    services("sender", settings, **env)
    wait_api_ready(f"http://127.0.0.1:{settings.api_port}")

    trace_id, caller_span, header = traceparent()
    reply = http_request(
        settings.api_port,
        "POST",
        "/v1/events?note=no-query-in-spans",
        orjson.dumps({"type": "invoice.paid", "data": {"invoice_id": "inv_7"}}),
        {
            "Authorization": "Bearer key-a",
            "Content-Type": "application/json",
            "traceparent": header,
        },
    )
    assert reply.status == 202, reply.text
    [request] = received(receiver, "/api", timeout=60)

    def both(spans: list[Span]) -> bool:
        return bool(attempts_of(spans, trace_id)) and any(
            s.service == "hookstream-api" for s in spans
        )

    spans = otlp.wait(both, "the API's and the sender's spans")
    [server] = [s for s in spans if s.service == "hookstream-api"]
    assert server.name == "POST /v1/events" and server.kind == "server"
    assert server.trace_id == trace_id and server.parent_span_id == caller_span
    assert server.attributes["http.response.status_code"] == 202
    [attempt] = attempts_of(spans, trace_id)
    assert attempt.parent_span_id == server.span_id
    assert request.headers["traceparent"] == f"00-{trace_id}-{attempt.span_id}-01"
    assert not [s for s in spans if s.service == "hookstream-router"]
    assert_no_secrets(spans)


def _links_to(span: Span, trace_id: str) -> bool:
    return any(link.trace_id == trace_id for link in span.links)
