"""The SSRF guard: forbidden addresses, URL checks, and the connect-time resolver."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

import pytest

from hookstream.endpoints.destinations import (
    IPNetwork,
    check_url,
    is_forbidden_address,
    parse_ip_literal,
)
from hookstream.sender.http import DestinationRefused, GuardedResolver
from tests.helpers import FakeDns

LOOPBACK_ONLY: tuple[IPNetwork, ...] = (ipaddress.ip_network("127.0.0.0/8"),)

FAKE_DNS = FakeDns(
    {
        "localhost": [("127.0.0.1", "::1")],
        "example.com": [("93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946")],
        "internal.example": [("10.0.0.7",)],
        "mixed.example": [("93.184.216.34", "192.168.0.10")],
        "metadata.example": [("169.254.169.254",)],
    }
)


def check(url: str, allowed: Sequence[IPNetwork] = (), allow_http: bool = False) -> str | None:
    return check_url(url, allowed, allow_http, resolve=FAKE_DNS.lookup)


@pytest.mark.parametrize(
    ("host", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("localhost", "loopback"),
        ("0.0.0.0", "unspecified"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("100.64.0.1", "shared address space"),
        ("169.254.169.254", "link-local"),
        ("[::1]", "loopback"),
        ("[fc00::1]", "private"),
        ("[fe80::1]", "link-local"),
        ("[::ffff:127.0.0.1]", "IPv4-mapped loopback"),
        ("[::ffff:10.0.0.1]", "IPv4-mapped private"),
        ("2130706433", "loopback"),
        ("0177.0.0.1", "loopback"),
        ("0x7f.1", "loopback"),
        ("127.1", "loopback"),
        ("127.0.0.1.", "loopback"),
        ("224.0.0.1", "multicast"),
        ("0.1.2.3", "0.0.0.0/8"),
        ("internal.example", "private"),
        ("metadata.example", "link-local"),
        ("mixed.example", "private"),
    ],
)
def test_forbidden_destinations_are_refused(host: str, reason: str) -> None:
    refused = check(f"https://{host}/hook")
    assert refused is not None
    assert reason in refused


@pytest.mark.parametrize("host", ["93.184.216.34", "[2606:4700::1]", "example.com"])
def test_public_destinations_are_allowed(host: str) -> None:
    assert check(f"https://{host}/hook") is None


def test_allow_list_permits_local_targets() -> None:
    assert check("https://127.0.0.1:8443/hook", LOOPBACK_ONLY) is None
    assert check("https://[::ffff:127.0.0.1]/hook", LOOPBACK_ONLY) is None
    # The allow-list covers only what it names.
    assert check("https://10.0.0.1/hook", LOOPBACK_ONLY) is not None
    assert check("https://[::1]/hook", LOOPBACK_ONLY) is not None


def test_plain_http_needs_the_allow_list_or_the_flag() -> None:
    assert check("http://example.com/hook") == "plain http is not allowed; use https"
    assert check("http://93.184.216.34/hook", LOOPBACK_ONLY) is not None
    assert check("http://127.0.0.1:8080/hook", LOOPBACK_ONLY) is None
    assert check("http://example.com/hook", allow_http=True) is None
    # localhost also resolves to ::1, which the allow-list does not cover.
    assert check("http://localhost:8080/hook", LOOPBACK_ONLY) is not None
    assert (
        check("http://localhost:8080/hook", (*LOOPBACK_ONLY, ipaddress.ip_network("::1"))) is None
    )


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://example.com/hook", "scheme"),
        ("file:///etc/passwd", "scheme"),
        ("https:///hook", "no host"),
        ("https://example.com:99999/hook", "malformed"),
        ("https://does-not-exist.example/hook", "does not resolve"),
    ],
)
def test_malformed_urls_are_refused(url: str, reason: str) -> None:
    refused = check(url)
    assert refused is not None
    assert reason in refused


def test_without_resolution_only_the_url_itself_is_checked() -> None:
    assert check_url("https://internal.example/hook", (), False, resolve=None) is None
    assert check_url("https://0x7f.1/hook", (), False, resolve=None) is not None
    assert check_url("http://internal.example/hook", (), False, resolve=None) is not None


def test_default_resolver_resolves_localhost() -> None:
    refused = check_url("https://localhost/hook", (), False)
    assert refused is not None
    assert "loopback" in refused


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("255.255.255.255", "reserved"),
        ("240.0.0.1", "reserved"),
        ("192.0.2.1", "private"),
        ("fec0::1", "site-local"),
        ("2002:7f00:1::1", "IPv4-embedded loopback"),
        ("64:ff9b::a00:1", "IPv4-embedded private"),
        ("ff02::1", "multicast"),
        ("::", "unspecified"),
    ],
)
def test_other_non_public_addresses(address: str, reason: str) -> None:
    refused = is_forbidden_address(ipaddress.ip_address(address), ())
    assert refused is not None
    assert reason in refused


def test_public_addresses_are_not_forbidden() -> None:
    for address in ("93.184.216.34", "8.8.8.8", "2606:4700::1", "2002:5db8:d822::1"):
        assert is_forbidden_address(ipaddress.ip_address(address), ()) is None


def test_parse_ip_literal_legacy_forms() -> None:
    loopback = ipaddress.IPv4Address("127.0.0.1")
    for literal in ("2130706433", "0177.0.0.1", "0x7f.1", "127.1", "017700000001"):
        assert parse_ip_literal(literal) == loopback
    assert parse_ip_literal("example.com") is None
    assert parse_ip_literal("1e100.net") is None


async def test_resolver_refuses_a_rebound_name() -> None:
    dns = FakeDns({"rebind.example": [("93.184.216.34",), ("127.0.0.1",)]})
    resolver = GuardedResolver((), dns.resolver())
    first = await resolver.resolve("rebind.example", 443)
    assert [r["host"] for r in first] == ["93.184.216.34"]
    with pytest.raises(DestinationRefused, match="loopback") as caught:
        await resolver.resolve("rebind.example", 443)
    assert "rebind.example" in caught.value.reason
    await resolver.close()
    assert dns.closed


async def test_resolver_drops_forbidden_addresses_and_keeps_public_ones() -> None:
    dns = FakeDns({"mixed.example": [("10.0.0.1", "93.184.216.34", "::ffff:127.0.0.1")]})
    resolver = GuardedResolver((), dns.resolver())
    kept = await resolver.resolve("mixed.example", 443)
    assert [r["host"] for r in kept] == ["93.184.216.34"]


async def test_resolver_honours_the_allow_list() -> None:
    resolver = GuardedResolver(
        LOOPBACK_ONLY, FakeDns({"localhost": [("127.0.0.1", "::1")]}).resolver()
    )
    kept = await resolver.resolve("localhost", 80)
    assert [r["host"] for r in kept] == ["127.0.0.1"]
