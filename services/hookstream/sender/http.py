"""One HTTP attempt, with the SSRF guard inside the client.

Destinations are checked twice: statically (`check_url`, at create time and before each request,
which also catches literal IPs that aiohttp never resolves) and on every DNS resolution the
connector performs (`GuardedResolver`), so a name that later rebinds to a private address is
refused at connect time. `HttpSender.send` never raises for HTTP or transport problems: every
attempt ends as an `HttpResult`.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Mapping, Sequence
from types import TracebackType

import aiohttp
import aiohttp.connector
from aiohttp.abc import AbstractResolver, ResolveResult

from hookstream.core.destinations import (
    IPNetwork,
    check_url,
    is_forbidden_address,
)
from hookstream.core.settings import Settings
from hookstream.sender.outcome import HttpResult, parse_retry_after

# Every resolution is vetted before it is cached, so caching cannot let a rebound name through;
# the short TTL only bounds how long a legitimate DNS change takes to be noticed.
DNS_CACHE_SECONDS = 10


class DestinationRefused(OSError):
    """The destination is not allowed (private, loopback, ...); no request was sent.

    An OSError so that aiohttp treats it like any resolver failure: the connector wraps it in
    `ClientConnectorDNSError`, whose `os_error` is this exception.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(None, f"destination refused: {reason}")
        self.reason = reason

    def __str__(self) -> str:
        return f"destination refused: {self.reason}"


class GuardedResolver(AbstractResolver):
    """Resolves through `inner`, then keeps only addresses that may be contacted.

    Forbidden addresses are dropped; if none remain the lookup fails with `DestinationRefused`.
    aiohttp calls this for every connection it opens to a name (outside its short cache of
    already-vetted answers), which is what refuses DNS rebinding.
    """

    def __init__(self, allowed: Sequence[IPNetwork], inner: AbstractResolver | None = None) -> None:
        self._allowed = tuple(allowed)
        self._inner = inner if inner is not None else aiohttp.ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        kept: list[ResolveResult] = []
        refusal: str | None = None
        for result in results:
            try:
                ip = ipaddress.ip_address(result["host"])
            except ValueError:
                reason: str | None = "not an IP address"
            else:
                reason = is_forbidden_address(ip, self._allowed)
            if reason is None:
                kept.append(result)
            elif refusal is None:
                refusal = f"host {host!r} resolves to {result['host']}, which is {reason}"
        if kept:
            return kept
        if refusal is not None:
            raise DestinationRefused(refusal)
        raise OSError(f"host {host!r} has no addresses")

    async def close(self) -> None:
        await self._inner.close()


def _refusal_in(exc: BaseException) -> DestinationRefused | None:
    """The refusal behind an aiohttp error, however the connector wrapped it."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, DestinationRefused):
            return current
        seen.add(id(current))
        if isinstance(current, aiohttp.ClientConnectorError) and isinstance(
            current.os_error, DestinationRefused
        ):
            return current.os_error
        current = current.__cause__ or current.__context__
    return None


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class HttpSender:
    """One shared aiohttp session for every delivery; `send` turns an attempt into a result."""

    def __init__(self, settings: Settings, *, resolver: AbstractResolver | None = None) -> None:
        self._settings = settings
        self._allowed: tuple[IPNetwork, ...] = settings.private_networks
        self._inner_resolver = resolver
        self._resolver: GuardedResolver | None = None
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        if self._session is not None:
            return
        self._resolver = GuardedResolver(self._allowed, self._inner_resolver)
        connector = aiohttp.TCPConnector(
            resolver=self._resolver,
            limit=self._settings.max_in_flight,
            limit_per_host=0,
            ttl_dns_cache=DNS_CACHE_SECONDS,
            # Only the Python versions with the leaky SSL transport need it; others warn.
            enable_cleanup_closed=getattr(aiohttp.connector, "NEEDS_CLEANUP_CLOSED", False),
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=self._settings.request_timeout),
            auto_decompress=True,
            # One session serves every tenant: cookies set by one receiver must never be sent
            # on another tenant's request to the same host.
            cookie_jar=aiohttp.DummyCookieJar(),
            # A proxy would resolve the destination itself, out of reach of the guard.
            trust_env=False,
            headers={"User-Agent": self._settings.user_agent},
        )

    async def close(self) -> None:
        session, resolver = self._session, self._resolver
        self._session = self._resolver = None
        if session is not None:
            await session.close()
        if resolver is not None:
            await resolver.close()

    async def __aenter__(self) -> HttpSender:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def send(self, url: str, headers: Mapping[str, str], body: bytes) -> HttpResult:
        """POST `body` to `url` without following redirects; never raises for HTTP problems."""
        session = self._session
        if session is None:
            raise RuntimeError("HttpSender.start() has not been called")
        started = time.monotonic()

        # aiohttp does not resolve literal IPs, so the resolver never sees them; http on a name
        # is only possible with an allow-list, the development setting that exists for it.
        reason = check_url(url, self._allowed, allow_http=bool(self._allowed), resolve=None)
        if reason is not None:
            return self._refused(reason, started)

        status: int | None = None
        retry_after: float | None = None
        response_body: str | None = None
        error: str | None = None
        try:
            async with session.post(
                url, data=body, headers=dict(headers), allow_redirects=False
            ) as response:
                status = response.status
                retry_after = parse_retry_after(response.headers.get("Retry-After"), time.time())
                try:
                    response_body = await self._read_body(response)
                except TimeoutError:
                    error = f"timeout after {self._settings.request_timeout} s reading the body"
                except (aiohttp.ClientError, OSError) as exc:
                    error = f"reading the body failed: {_describe(exc)}"
        except TimeoutError:
            error = f"timeout after {self._settings.request_timeout} s"
        except (aiohttp.ClientError, OSError) as exc:
            refusal = _refusal_in(exc)
            if refusal is not None:
                return self._refused(refusal.reason, started)
            error = _describe(exc)
        return HttpResult(
            status_code=status,
            duration_ms=_elapsed_ms(started),
            error=error,
            response_body=response_body,
            retry_after=retry_after,
            refused=False,
        )

    async def _read_body(self, response: aiohttp.ClientResponse) -> str | None:
        limit = self._settings.response_body_limit
        if limit <= 0:
            return None
        # Read only up to the cap: leaving the rest unread makes aiohttp close the connection
        # instead of draining an arbitrarily large body.
        chunks: list[bytes] = []
        remaining = limit
        while remaining > 0:
            chunk = await response.content.read(remaining)
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
        return b"".join(chunks).decode("utf-8", errors="replace")

    @staticmethod
    def _refused(reason: str, started: float) -> HttpResult:
        return HttpResult(
            status_code=None,
            duration_ms=_elapsed_ms(started),
            error=f"destination refused: {reason}",
            response_body=None,
            retry_after=None,
            refused=True,
        )


def _elapsed_ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
