"""`HttpSender` against real aiohttp receivers on loopback (no Kafka involved)."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import standardwebhooks
from aiohttp import web
from aiohttp.test_utils import TestServer

from hookstream.core import signing
from hookstream.core.records import Outcome
from hookstream.core.settings import Settings
from hookstream.sender.http import HttpSender
from hookstream.sender.outcome import classify
from tests.helpers import loopback_sender_settings

BODY = b'{"id":"evt_1","type":"webhook.test","data":{"test":true}}'
BIG_BODY = b"x" * 100_000


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    server: TestServer
    requests: list[Received] = field(default_factory=list)
    release_slow: asyncio.Event = field(default_factory=asyncio.Event)

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.server.port}{path}"

    def paths(self) -> list[str]:
        return [r.path for r in self.requests]


def _make_app(receiver_box: list[Receiver]) -> web.Application:
    async def record(request: web.Request) -> Receiver:
        receiver = receiver_box[0]
        receiver.requests.append(
            Received(request.path, dict(request.headers), await request.read())
        )
        return receiver

    async def no_content(request: web.Request) -> web.StreamResponse:
        await record(request)
        return web.Response(status=204)

    async def ok(request: web.Request) -> web.StreamResponse:
        await record(request)
        return web.Response(status=200, text='{"received": true}')

    async def fail(request: web.Request) -> web.StreamResponse:
        await record(request)
        return web.Response(status=500, text="database on fire")

    async def redirect(request: web.Request) -> web.StreamResponse:
        await record(request)
        raise web.HTTPMovedPermanently(location="/target")

    async def throttled(request: web.Request) -> web.StreamResponse:
        await record(request)
        return web.Response(status=429, headers={"Retry-After": "7"}, text="slow down")

    async def big(request: web.Request) -> web.StreamResponse:
        await record(request)
        return web.Response(status=200, body=BIG_BODY)

    async def slow(request: web.Request) -> web.StreamResponse:
        receiver = await record(request)
        # Holds the response past the client's timeout; released at teardown.
        await receiver.release_slow.wait()
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/no-content", no_content)
    app.router.add_post("/ok", ok)
    app.router.add_post("/fail", fail)
    app.router.add_post("/redirect", redirect)
    app.router.add_post("/target", ok)
    app.router.add_post("/throttled", throttled)
    app.router.add_post("/big", big)
    app.router.add_post("/slow", slow)
    return app


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    box: list[Receiver] = []
    server = TestServer(_make_app(box), host="127.0.0.1", port=0)
    box.append(Receiver(server))
    await server.start_server()
    try:
        yield box[0]
    finally:
        box[0].release_slow.set()
        await server.close()


def _settings(**overrides: Any) -> Settings:
    values = {
        "request_timeout": 1.0,
        "response_body_limit": 1024,
        "user_agent": "hookstream-test/1.0",
        **overrides,
    }
    return loopback_sender_settings(**values)


@pytest.fixture
async def sender() -> AsyncIterator[HttpSender]:
    async with HttpSender(_settings()) as http:
        yield http


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port that is bound but not listening: connecting to it is refused, and nobody can
    take it over while the test runs."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


def _headers(secret: str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw") -> dict[str, str]:
    return signing.headers(
        [signing.signer(secret)], "evt_1", int(time.time()), BODY, "hookstream-test/1.0"
    )


async def test_204_is_success(sender: HttpSender, receiver: Receiver) -> None:
    result = await sender.send(receiver.url("/no-content"), _headers(), BODY)
    assert result.status_code == 204
    assert result.error is None
    assert result.refused is False
    assert result.response_body == ""
    assert result.duration_ms >= 0
    assert classify(result) is Outcome.SUCCESS
    assert receiver.requests[0].body == BODY


async def test_response_body_is_captured(sender: HttpSender, receiver: Receiver) -> None:
    result = await sender.send(receiver.url("/ok"), _headers(), BODY)
    assert result.status_code == 200
    assert result.response_body == '{"received": true}'


async def test_500_keeps_the_body(sender: HttpSender, receiver: Receiver) -> None:
    result = await sender.send(receiver.url("/fail"), _headers(), BODY)
    assert result.status_code == 500
    assert result.response_body == "database on fire"
    assert result.error is None
    assert classify(result) is Outcome.TEMPORARY_FAILURE


async def test_redirect_is_not_followed(sender: HttpSender, receiver: Receiver) -> None:
    result = await sender.send(receiver.url("/redirect"), _headers(), BODY)
    assert result.status_code == 301
    assert classify(result) is Outcome.TEMPORARY_FAILURE
    assert receiver.paths() == ["/redirect"]


async def test_slow_endpoint_times_out(receiver: Receiver) -> None:
    async with HttpSender(_settings(request_timeout=0.3)) as sender:
        result = await sender.send(receiver.url("/slow"), _headers(), BODY)
    assert result.status_code is None
    assert result.error is not None
    assert "timeout after 0.3 s" in result.error
    assert classify(result) is Outcome.TEMPORARY_FAILURE
    assert receiver.paths() == ["/slow"]


async def test_connection_refused(sender: HttpSender, closed_port: int) -> None:
    result = await sender.send(f"http://127.0.0.1:{closed_port}/hook", _headers(), BODY)
    assert result.status_code is None
    assert result.refused is False
    assert result.error is not None
    assert "Cannot connect" in result.error
    assert classify(result) is Outcome.TEMPORARY_FAILURE


async def test_retry_after_is_parsed(sender: HttpSender, receiver: Receiver) -> None:
    result = await sender.send(receiver.url("/throttled"), _headers(), BODY)
    assert result.status_code == 429
    assert result.retry_after == 7.0
    assert result.response_body == "slow down"


async def test_large_response_body_is_truncated(sender: HttpSender, receiver: Receiver) -> None:
    result = await sender.send(receiver.url("/big"), _headers(), BODY)
    assert result.status_code == 200
    assert result.response_body == "x" * 1024
    # The rest of the body was read and thrown away; the next request still works.
    again = await sender.send(receiver.url("/ok"), _headers(), BODY)
    assert again.status_code == 200


async def test_loopback_literal_refused_without_allow_list(receiver: Receiver) -> None:
    async with HttpSender(_settings(allow_private_targets=())) as sender:
        result = await sender.send(receiver.url("/ok"), _headers(), BODY)
    assert result.refused is True
    assert result.status_code is None
    assert result.error == "destination refused: address 127.0.0.1 is loopback"
    assert classify(result) is Outcome.REFUSED
    assert receiver.requests == []


async def test_localhost_name_refused_by_the_resolver(receiver: Receiver) -> None:
    # https, so the static check passes the name on and the connect-time resolver decides.
    url = f"https://localhost:{receiver.server.port}/ok"
    async with HttpSender(_settings(allow_private_targets=())) as sender:
        result = await sender.send(url, _headers(), BODY)
    assert result.refused is True
    assert result.error is not None
    assert result.error.startswith("destination refused: host 'localhost' resolves to ")
    assert "loopback" in result.error
    assert receiver.requests == []


async def test_localhost_name_allowed_by_the_allow_list(
    sender: HttpSender, receiver: Receiver
) -> None:
    result = await sender.send(receiver.url("/ok", host="localhost"), _headers(), BODY)
    assert result.status_code == 200
    assert receiver.paths() == ["/ok"]


async def test_signature_verifies_at_the_receiver(sender: HttpSender, receiver: Receiver) -> None:
    secret = signing.new_secret()
    result = await sender.send(receiver.url("/ok"), _headers(secret), BODY)
    assert result.status_code == 200
    received = receiver.requests[0]
    assert received.headers["User-Agent"] == "hookstream-test/1.0"
    assert received.headers["Content-Type"] == "application/json"
    assert received.headers["webhook-id"] == "evt_1"
    payload = standardwebhooks.Webhook(secret).verify(received.body, received.headers)
    assert payload["type"] == "webhook.test"


async def test_send_before_start_is_a_programming_error() -> None:
    sender = HttpSender(_settings())
    with pytest.raises(RuntimeError, match="start"):
        await sender.send("https://example.com/hook", _headers(), BODY)


@pytest.mark.parametrize("timeout_seconds", [0, -5, 10**9])
async def test_a_webhook_timeout_out_of_range_falls_back_to_the_request_timeout(
    receiver: Receiver, timeout_seconds: int
) -> None:
    """Written around the API: neither an attempt failing at once nor one held for days."""
    async with HttpSender(_settings(request_timeout=0.3)) as sender:
        result = await sender.send(receiver.url("/slow"), _headers(), BODY, timeout_seconds)
    assert result.error is not None and "timeout after 0.3 s" in result.error
    assert 250 <= result.duration_ms < 5000
