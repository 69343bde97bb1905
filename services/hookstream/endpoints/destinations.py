"""Which destinations a webhook may target: the SSRF rules, shared by the API and the sender.

The API checks a URL when a webhook is created or changed; the sender checks it again before
every request and vets every DNS answer at connect time (see `sender/http.py`).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Sequence
from urllib.parse import urlsplit

from yarl import URL

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolve = Callable[[str], Sequence[IPAddress]]

_SHARED_ADDRESS_SPACE = ipaddress.IPv4Network("100.64.0.0/10")
_THIS_NETWORK = ipaddress.IPv4Network("0.0.0.0/8")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def _in_networks(ip: IPAddress, networks: Sequence[IPNetwork]) -> bool:
    return any(ip in network for network in networks)


def is_forbidden_address(ip: IPAddress, allowed: Sequence[IPNetwork]) -> str | None:
    """Why `ip` must not be contacted, or None if it is public or inside an allowed network."""
    if _in_networks(ip, allowed):
        return None
    if isinstance(ip, ipaddress.IPv6Address):
        # These IPv6 forms carry an IPv4 address that the packet may end up reaching.
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            reason = is_forbidden_address(embedded, allowed)
            if reason is None:
                return None
            kind = "IPv4-mapped" if ip.ipv4_mapped else "IPv4-embedded"
            return f"{kind} {reason}"
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast:
        return "multicast"
    if isinstance(ip, ipaddress.IPv4Address):
        if ip in _SHARED_ADDRESS_SPACE:
            return "shared address space (100.64/10)"
        if ip in _THIS_NETWORK:
            return "this-network (0.0.0.0/8)"
    elif ip.is_site_local:
        return "site-local"
    if ip.is_reserved:
        return "reserved"
    if ip.is_private:
        return "private"
    if not ip.is_global:
        return "not globally routable"
    return None


def parse_ip_literal(host: str) -> IPAddress | None:
    """The address a host names literally, including legacy IPv4 spellings, else None.

    `socket.inet_aton` accepts what many resolvers and HTTP stacks accept — `2130706433`,
    `0177.0.0.1`, `0x7f.1`, `127.1` — so these cannot be used to slip past the check.
    """
    # A single trailing dot (fully qualified form) still names the same address.
    candidate = host.removesuffix(".")
    try:
        return ipaddress.ip_address(candidate)
    except ValueError:
        pass
    if ":" in candidate:
        return None
    try:
        return ipaddress.IPv4Address(socket.inet_aton(candidate))
    # ValueError: a NUL in the name ("embedded null character").
    except (OSError, ValueError):
        return None


def resolve_host(host: str) -> list[IPAddress]:
    """Every address `host` resolves to; blocking, so call it off the event loop."""
    infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in infos))


def check_url(
    url: str,
    allowed: Sequence[IPNetwork],
    allow_http: bool,
    resolve: Resolve | None = resolve_host,
) -> str | None:
    """Why `url` is not an acceptable destination, or None.

    Host names are resolved with `resolve`, and refused if any address is forbidden; pass
    `resolve=None` to check only the URL itself (the connect-time resolver checks the names).
    Plain http is accepted when `allow_http` is set or every address of the host lies inside
    an allowed network; without resolution a name's addresses are unknown, so only
    `allow_http` permits it.
    """
    try:
        parts = urlsplit(url)
        written = parts.hostname
        parts.port  # noqa: B018 - parsing the port is how urlsplit validates it
        # The host the HTTP client (aiohttp, through yarl) connects to. IDNA encoding maps
        # look-alike digits and dots to ASCII: `①②⑦。0。0。1` is the literal 127.0.0.1 to it.
        host = URL(url).raw_host
    except ValueError as exc:
        return f"malformed URL: {exc}"
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        return f"scheme {scheme!r} is not allowed; use https"
    if not host or not written:
        return "URL has no host"

    literal = parse_ip_literal(host)
    addresses: Sequence[IPAddress]
    if literal is not None:
        addresses = [literal]
    elif resolve is None:
        addresses = []
    else:
        try:
            addresses = resolve(host)
        # Names the IDNA codec cannot encode fail with UnicodeError rather than OSError, and
        # names holding a NUL with ValueError.
        except (OSError, ValueError) as exc:
            return f"host {host!r} does not resolve: {exc}"
        if not addresses:
            return f"host {host!r} has no addresses"

    for ip in addresses:
        reason = is_forbidden_address(ip, allowed)
        if reason is not None:
            if literal is not None:
                spelled = f" (the host {written!r})" if not written.isascii() else ""
                return f"address {ip}{spelled} is {reason}"
            return f"host {host!r} resolves to {ip}, which is {reason}"

    if scheme == "http" and not allow_http:
        local = bool(addresses) and all(_is_allowed(ip, allowed) for ip in addresses)
        if not local:
            return "plain http is not allowed; use https"
    return None


def _is_allowed(ip: IPAddress, allowed: Sequence[IPNetwork]) -> bool:
    if _in_networks(ip, allowed):
        return True
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    return mapped is not None and _in_networks(mapped, allowed)
