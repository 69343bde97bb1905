"""The SSRF matrix: every forbidden destination is refused at create time and at connect time.

At create time the running API answers 422 naming the reason; at connect time the sender makes
no connection and records one attempt with outcome `refused` and the reason, never retried
(dead-lettered as `destination_refused`).

How destinations are controlled without a DNS server of our own:
- literal addresses (every spelling) need no DNS: a real API process and a real sender process
  see them exactly as a deployment would;
- `localhost` resolves through the system resolver, for real;
- any other host name goes through an injected resolver: `check_url(resolve=...)` is the API's
  create-time check, and `HttpSender(resolver=...)` takes an aiohttp `AbstractResolver` that the
  sender wraps in its `GuardedResolver` exactly as in production. DNS rebinding is one
  `FakeDns` serving both: a public answer to the create-time check, a private one when the
  sender connects.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from hookstream.core import signing
from hookstream.core.records import Outcome
from hookstream.core.settings import Settings, load_settings
from hookstream.core.topics import Topics
from hookstream.endpoints.destinations import check_url
from hookstream.sender import http as sender_http
from hookstream.sender.http import HttpSender
from hookstream.sender.outcome import classify
from hookstream.tools import localkafka
from hookstream.tools.topics import create_topics
from tests.helpers import FakeDns, api_call, settings_for_test, sqlite_url, unique_prefix, wait_for
from tests.pipeline import Platform, Service, make_webhook, read_topic, running_api

pytestmark = pytest.mark.integration

KEY = "key-ssrf-matrix-0123456789"
TENANT = "tenant_ssrf"
BODY = b'{"id":"evt_1","type":"webhook.test","data":{}}'
PUBLIC = "93.184.215.14"  # a public address: accepted, and never contacted by these tests

# Every spelling of a forbidden destination, and the reason its refusal must give.
LITERALS: list[tuple[str, str]] = [
    ("127.0.0.1", "loopback"),
    ("127.255.255.254", "loopback"),
    ("0.0.0.0", "unspecified"),
    ("10.0.0.1", "private"),
    ("10.255.255.254", "private"),
    ("172.16.0.1", "private"),
    ("172.31.255.254", "private"),
    ("192.168.0.1", "private"),
    ("192.168.255.254", "private"),
    ("100.64.0.1", "shared address space"),
    ("100.127.255.254", "shared address space"),
    ("169.254.169.254", "link-local"),
    ("[::1]", "loopback"),
    ("[fc00::1]", "private"),
    ("[fdff:ffff::1]", "private"),
    ("[fe80::1]", "link-local"),
    ("[febf::1]", "link-local"),
    ("[::ffff:127.0.0.1]", "IPv4-mapped loopback"),
    ("[::ffff:10.0.0.1]", "IPv4-mapped private"),
    ("[::ffff:169.254.169.254]", "IPv4-mapped link-local"),
    ("2130706433", "loopback"),  # decimal
    ("0177.0.0.1", "loopback"),  # octal
    ("0x7f.1", "loopback"),  # hex, short form
    ("0x7f000001", "loopback"),
    ("127.1", "loopback"),
    ("127.0.0.1.", "loopback"),  # fully qualified
    ("0", "unspecified"),
    # Look-alike digits and dots that IDNA turns into 127.0.0.1 inside the HTTP client.
    ("\u2460\u2461\u2466.0.0.1", "loopback"),  # circled digits
    ("\uff11\uff12\uff17.\uff10.\uff10.\uff11", "loopback"),  # fullwidth digits
    ("127\u30020\u30020\u30021", "loopback"),  # ideographic full stops
]
CIRCLED = LITERALS[-3][0]
# Just outside the forbidden ranges: public, so accepted.
NEIGHBOURS = ["172.15.255.255", "172.32.0.1", "100.63.255.255", "100.128.0.1", "[2606:4700::1]"]

# Host names and what the controllable resolver answers for them.
NAMES: dict[str, tuple[Sequence[str], str]] = {
    "internal.test": (("10.0.0.7",), "private"),
    "corp.test": (("172.20.1.1",), "private"),
    "home.test": (("192.168.1.20",), "private"),
    "cgnat.test": (("100.64.3.3",), "shared address space (100.64/10)"),
    "metadata.test": (("169.254.169.254",), "link-local"),
    "loop.test": (("127.0.0.1",), "loopback"),
    "loop6.test": (("::1",), "loopback"),
    "ula.test": (("fd00::5",), "private"),
    "mapped.test": (("::ffff:127.0.0.1",), "IPv4-mapped loopback"),
    "zero.test": (("0.0.0.0",), "unspecified"),
}


def url(host: str, port: int | None = None, scheme: str = "https") -> str:
    return f"{scheme}://{host}{f':{port}' if port else ''}/hook"


class Listener:
    """A loopback TCP port that counts connection attempts (the kernel completes them)."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.sock = socket.socket()
        self.sock.bind((host, 0))
        self.sock.listen(16)
        self.sock.setblocking(False)
        self.port: int = self.sock.getsockname()[1]

    def connections(self) -> int:
        count = 0
        while True:
            try:
                accepted, _ = self.sock.accept()
            except BlockingIOError:
                return count
            accepted.close()
            count += 1

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    opened = Listener()
    try:
        yield opened
    finally:
        opened.close()


def _headers() -> dict[str, str]:
    return signing.headers(
        [signing.signer(signing.new_secret())], "evt_1", int(time.time()), BODY, "test"
    )


def _strict(**overrides: Any) -> Settings:
    """Production-like: no allow-list, so nothing private is reachable."""
    return load_settings(**{"allow_private_targets": (), "request_timeout": 2.0, **overrides})


# -- create time: the running API ---------------------------------------------------------


@dataclass
class Api:
    port: int

    def call(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        return api_call(self.port, KEY, method, path, body)

    def create(self, target: str) -> tuple[int, Any]:
        return self.call(
            "POST", "/v1/webhooks", {"name": "ssrf", "url": target, "events": ["invoice.paid"]}
        )


@pytest.fixture(scope="module")
def api(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    directory = tmp_path_factory.mktemp("ssrf-api")
    settings = settings_for_test(
        kafka_bootstrap,
        unique_prefix(),
        store_url=sqlite_url(directory),
        api_port=localkafka.free_port(),
        api_keys={KEY: TENANT},
        allow_private_targets=(),
    )
    with running_api(settings, directory):
        yield Api(settings.api_port)


def _refused_at_create(reply: tuple[int, Any], reason: str) -> str:
    status, body = reply
    assert status == 422, body
    error = body["error"]
    assert [detail["field"] for detail in error["details"]] == ["url"], error
    message: str = error["details"][0]["message"]
    assert error["message"] == f"invalid field url: {message}"
    assert reason in message, message
    return message


@pytest.mark.parametrize(("host", "reason"), LITERALS)
def test_api_refuses_the_literal_at_create(api: Api, host: str, reason: str) -> None:
    message = _refused_at_create(api.create(url(host)), reason)
    assert message.startswith("address ")
    # With a port and a path, and in plain http, it is the address that is refused.
    _refused_at_create(api.create(url(host, 8443) + "?x=1"), reason)
    _refused_at_create(api.create(url(host, scheme="http")), reason)


def test_api_refuses_localhost_resolved_for_real(api: Api) -> None:
    for host in ("localhost", "LOCALHOST"):
        message = _refused_at_create(api.create(url(host)), "loopback")
        assert message.startswith(f"host '{host.lower()}' resolves to ")


def test_api_refuses_plain_http_to_a_public_address(api: Api) -> None:
    _refused_at_create(api.create(url(PUBLIC, scheme="http")), "plain http is not allowed")
    status, created = api.create(url(PUBLIC))
    assert status == 201, created


@pytest.mark.parametrize("host", NEIGHBOURS)
def test_api_accepts_the_public_neighbours(api: Api, host: str) -> None:
    status, created = api.create(url(host))
    assert status == 201, created


def test_api_refuses_changing_the_url_to_a_forbidden_one(api: Api) -> None:
    status, created = api.create(url(PUBLIC))
    assert status == 201, created
    path = f"/v1/webhooks/{created['id']}"
    for host, reason in [*LITERALS, ("localhost", "loopback")]:
        _refused_at_create(api.call("PATCH", path, {"url": url(host)}), reason)
    _refused_at_create(api.call("PATCH", path, {"url": url(PUBLIC, scheme="http")}), "http")


@pytest.mark.parametrize("name", sorted(NAMES))
def test_create_check_refuses_a_name_resolving_private(name: str) -> None:
    addresses, reason = NAMES[name]
    dns = FakeDns({name: [addresses]})
    # The API's check (validation.check_destination) with the resolver swapped.
    refused = check_url(url(name), (), False, resolve=dns.lookup)
    address = ipaddress.ip_address(addresses[0])
    assert refused == f"host {name!r} resolves to {address}, which is {reason}"
    # One private answer among public ones is enough to refuse.
    mixed = FakeDns({name: [(PUBLIC, *addresses)]})
    assert check_url(url(name), (), False, resolve=mixed.lookup) is not None


def test_plain_http_is_refused_unless_allowed() -> None:
    loopback = (ipaddress.ip_network("127.0.0.0/8"),)
    assert check_url(url(PUBLIC, scheme="http"), (), False) == (
        "plain http is not allowed; use https"
    )
    assert check_url(url(PUBLIC, scheme="http"), (), True) is None
    # The allow-list (development) permits http to what it lists, and only that.
    assert check_url(url("127.0.0.1", 8080, "http"), loopback, False) is None
    assert check_url(url("10.0.0.1", 8080, "http"), loopback, False) is not None


@pytest.mark.parametrize(
    "target",
    ["https://exa\x00mple.com/h", "https://127.0.0.1\x00/h", "https://xn--/h", "https://[::1/h"],
)
def test_garbage_urls_are_refused_not_raised(target: str) -> None:
    for resolve in (None, FakeDns({}).lookup):
        refused = check_url(target, (), False, resolve=resolve)
        assert refused is not None or resolve is None


# -- connect time: HttpSender in-process -------------------------------------------------


@pytest.mark.parametrize(("host", "reason"), LITERALS)
async def test_sender_refuses_the_literal_without_connecting(
    host: str, reason: str, listener: Listener
) -> None:
    async with HttpSender(_strict()) as sender:
        for target in (url(host, listener.port), url(host, listener.port, "http")):
            result = await sender.send(target, _headers(), BODY)
            assert result.refused and result.status_code is None, (target, result)
            assert result.error is not None and result.error.startswith("destination refused: ")
            assert reason in result.error
            assert classify(result) is Outcome.REFUSED
    assert listener.connections() == 0


async def test_sender_refuses_localhost_resolved_for_real(listener: Listener) -> None:
    async with HttpSender(_strict()) as sender:
        result = await sender.send(url("localhost", listener.port), _headers(), BODY)
    assert result.refused
    assert result.error is not None and "host 'localhost' resolves to" in result.error
    assert listener.connections() == 0


async def test_sender_refuses_plain_http_without_an_allow_list() -> None:
    async with HttpSender(_strict()) as sender:
        result = await sender.send(url(PUBLIC, scheme="http"), _headers(), BODY)
    assert result.refused
    assert result.error == "destination refused: plain http is not allowed; use https"


@pytest.mark.parametrize("name", sorted(NAMES))
async def test_sender_refuses_a_name_resolving_private_at_connect(
    name: str, listener: Listener
) -> None:
    addresses, reason = NAMES[name]
    dns = FakeDns({name: [addresses]})
    async with HttpSender(_strict(), resolver=dns.resolver()) as sender:
        result = await sender.send(url(name, listener.port), _headers(), BODY)
    assert result.refused, result
    assert result.error == (
        f"destination refused: host {name!r} resolves to {addresses[0]}, which is {reason}"
    )
    assert classify(result) is Outcome.REFUSED
    assert dns.queries == [name]
    assert listener.connections() == 0


async def test_rebinding_public_at_create_private_at_connect(listener: Listener) -> None:
    dns = FakeDns({"rebind.test": [(PUBLIC,), ("127.0.0.1",)]})
    target = url("rebind.test", listener.port)
    assert check_url(target, (), False, resolve=dns.lookup) is None  # accepted at create
    async with HttpSender(_strict(), resolver=dns.resolver()) as sender:
        result = await sender.send(target, _headers(), BODY)
    assert result.refused
    assert result.error == (
        "destination refused: host 'rebind.test' resolves to 127.0.0.1, which is loopback"
    )
    assert dns.queries == ["rebind.test", "rebind.test"]
    assert listener.connections() == 0


@dataclass
class Receiver:
    server: TestServer
    hits: list[str] = field(default_factory=list)


@pytest.fixture
async def receiver_127_0_0_2() -> AsyncIterator[Receiver]:
    """A receiver on 127.0.0.2, which the next test's allow-list treats as 'public'."""
    hits: list[str] = []

    async def handle(request: web.Request) -> web.StreamResponse:
        hits.append(request.path)
        # A new connection (and so a new resolution) for every request.
        return web.Response(status=204, headers={"Connection": "close"})

    app = web.Application()
    app.router.add_post("/{tail:.*}", handle)
    server = TestServer(app, host="127.0.0.2", port=0)
    await server.start_server()
    try:
        yield Receiver(server, hits)
    finally:
        await server.close()


async def test_rebinding_after_successful_deliveries_is_refused(
    receiver_127_0_0_2: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A name that delivered fine rebinds to a forbidden address: the next connect refuses.

    127.0.0.2 stands in for a public address (the only one allowed), so a real request can
    succeed first; the sender's DNS cache is turned off so the second request resolves again.
    """
    monkeypatch.setattr(sender_http, "DNS_CACHE_SECONDS", 0)
    port = receiver_127_0_0_2.server.port
    dns = FakeDns({"rebind.test": [("127.0.0.2",), ("127.0.0.1",)]})
    settings = _strict(allow_private_targets=("127.0.0.2/32",))
    target = url("rebind.test", port, "http")
    async with HttpSender(settings, resolver=dns.resolver()) as sender:
        first = await sender.send(target, _headers(), BODY)
        await asyncio.sleep(0.05)
        second = await sender.send(target, _headers(), BODY)
    assert first.status_code == 204 and not first.refused
    assert second.refused
    assert second.error is not None and "resolves to 127.0.0.1, which is loopback" in second.error
    assert receiver_127_0_0_2.hits == ["/hook"]
    assert dns.queries == ["rebind.test", "rebind.test"]


# -- connect time: a sender process --------------------------------------------------------


def test_sender_process_records_each_refusal_once_and_never_retries(
    kafka_bootstrap: str, tmp_path: Path, listener: Listener
) -> None:
    """Webhooks written straight to the topic (past the API's check), allow-list off."""
    settings = settings_for_test(
        kafka_bootstrap,
        unique_prefix(),
        store_url=sqlite_url(tmp_path),
        allow_private_targets=(),
        request_timeout=2.0,
    )
    create_topics(settings)
    platform = Platform(settings)
    port = listener.port
    cases = {
        url("127.0.0.1", port): "address 127.0.0.1 is loopback",
        url("[::ffff:127.0.0.1]", port): "IPv4-mapped loopback",
        url("0x7f.1", port): "address 127.0.0.1 is loopback",
        url(CIRCLED, port): f"address 127.0.0.1 (the host {CIRCLED!r}) is loopback",
        url("localhost", port): "host 'localhost' resolves to",
        url("169.254.169.254"): "link-local",
        url("10.1.2.3", port, "http"): "private",
        url(PUBLIC, scheme="http"): "plain http is not allowed",
    }
    hooks = {platform.webhook(make_webhook(TENANT, target, ["*"])).id: target for target in cases}
    services = [Service(settings, name, tmp_path) for name in ("router", "sender")]
    try:
        event_id = platform.event(TENANT, "invoice.paid")
        topics = Topics.from_settings(settings)

        def refused() -> list[Any]:
            records = read_topic(settings, topics.delivery_log, "Attempt")
            mine = [r for r in records if r["webhook_id"] in hooks]
            return mine if len(mine) >= len(hooks) else []

        logs = "\n".join(service.log()[-2000:] for service in services)
        wait_for(refused, timeout=60, interval=0.2, what=f"an attempt per webhook\n{logs}")
        time.sleep(1.5)  # longer than the whole retry schedule: any retry would show by now
        attempts = refused()
        assert sorted(a["webhook_id"] for a in attempts) == sorted(hooks)
        for attempt in attempts:
            reason = cases[hooks[attempt["webhook_id"]]]
            assert attempt["event_id"] == event_id
            assert attempt["outcome"] == "refused", attempt
            assert attempt["status_code"] is None and attempt["next_attempt_at_ms"] is None
            assert attempt["error"].startswith("destination refused: ")
            assert reason in attempt["error"], (reason, attempt["error"])
        retried = [
            record
            for tier in topics.retry_tiers
            for record in read_topic(settings, tier.topic, "Retry")
            if record["webhook_id"] in hooks
        ]
        assert retried == []
        dead = [
            d for d in read_topic(settings, topics.dlq, "DeadLetter") if d["webhook_id"] in hooks
        ]
        assert sorted(d["webhook_id"] for d in dead) == sorted(hooks)
        assert {d["reason"] for d in dead} == {"destination_refused"}
        assert listener.connections() == 0
    finally:
        for service in services:
            service.close()
