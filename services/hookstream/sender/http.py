"""One HTTP attempt, with the SSRF guard inside the client.

Destinations are checked twice: statically (`check_url`, at create time and before each request,
which also catches literal IPs that aiohttp never resolves) and on every DNS resolution the
connector performs (`GuardedResolver`), so a name that later rebinds to a private address is
refused at connect time. `HttpSender.send` never raises for HTTP or transport problems: every
attempt ends as an `HttpResult`.

Hostile receivers are bounded by aiohttp's own limits: one total timeout over the whole
exchange, capped header lines, and a body read in bounded pieces of which only the first
`response_body_limit` bytes are kept.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType

import aiohttp
import aiohttp.connector
import aiohttp.http_exceptions
from aiohttp.abc import AbstractResolver, ResolveResult

from hookstream.core.settings import Settings
from hookstream.endpoints.destinations import (
    IPNetwork,
    check_url,
    is_forbidden_address,
)
from hookstream.sender.outcome import HttpResult, parse_retry_after

# Every resolution is vetted before it is cached, so caching cannot let a rebound name through;
# the short TTL only bounds how long a legitimate DNS change takes to be noticed.
DNS_CACHE_SECONDS = 10
# Longest status line and header field accepted from a receiver. aiohttp's parser stops at the
# first line past it, so a hostile endpoint sending megabytes of headers costs at most this
# much per line (and aiohttp's 128-header cap) before the attempt fails.
MAX_HEADER_LINE = 8190
# The longest timeout a webhook may set for itself (the API's bound); beyond it, or at zero
# and below, the session's request_timeout applies.
MAX_WEBHOOK_TIMEOUT = 30
# Bytes read at a time while discarding the part of a response body past the kept prefix.
DRAIN_CHUNK = 64 * 1024
# Error texts end up in attempt records; a hostile endpoint's bytes echoed in one stay short.
MAX_ERROR_CHARS = 500
# Webhook URLs whose static check is remembered. The check without resolution depends only on
# the URL and this sender's fixed allow-list, and the same URLs come back on every delivery.
URL_CHECK_CACHE = 65536


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
    if isinstance(exc, aiohttp.ClientResponseError) and isinstance(
        exc.__cause__, aiohttp.http_exceptions.HttpProcessingError
    ):
        # aiohttp reports an unparsable response as a ClientResponseError with status 400;
        # that 400 is aiohttp's, not the receiver's, so say what actually happened.
        text = f"invalid HTTP response: {exc.message}"
    else:
        detail = str(exc)
        text = f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
    return _clip(text)


def _clip(text: str) -> str:
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "…"


class HttpSender:
    """One shared aiohttp session for every delivery; `send` turns an attempt into a result."""

    def __init__(self, settings: Settings, *, resolver: AbstractResolver | None = None) -> None:
        self._settings = settings
        self._allowed: tuple[IPNetwork, ...] = settings.private_networks
        self._inner_resolver = resolver
        self._resolver: GuardedResolver | None = None
        self._session: aiohttp.ClientSession | None = None
        self._timeout = aiohttp.ClientTimeout(total=settings.request_timeout)
        # aiohttp does not resolve literal IPs, so the resolver never sees them; http on a
        # name is only possible with an allow-list, the development setting that exists for it.
        self._check_url: Callable[[str], str | None] = functools.lru_cache(URL_CHECK_CACHE)(
            functools.partial(
                check_url, allowed=self._allowed, allow_http=bool(self._allowed), resolve=None
            )
        )

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
            # `total` covers connecting, the TLS handshake, the headers and the whole body, so
            # a receiver trickling one byte at a time cannot stretch an attempt past it.
            timeout=self._timeout,
            max_line_size=MAX_HEADER_LINE,
            max_field_size=MAX_HEADER_LINE,
            # aiohttp caps how much one compressed chunk may inflate to, so a decompression
            # bomb is inflated (and discarded) a bounded piece at a time.
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

    async def send(
        self,
        url: str,
        headers: Mapping[str, str],
        body: bytes,
        timeout_seconds: float | None = None,
    ) -> HttpResult:
        """POST `body` to `url` without following redirects; never raises for HTTP problems.

        `timeout_seconds` (the webhook's own) replaces the session's `request_timeout`."""
        session = self._session
        if session is None:
            raise RuntimeError("HttpSender.start() has not been called")
        started = time.monotonic()
        reason = self._check_url(url)
        if reason is not None:
            return self._refused(reason, started)

        status: int | None = None
        retry_after: float | None = None
        kept = bytearray()
        error: str | None = None
        # Never None: aiohttp reads `timeout=None` as no timeout at all.
        timeout, seconds = self._timeout, self._settings.request_timeout
        # Only a timeout in the API's range: one written around it (0, negative, days) would
        # make every attempt fail at once or hold its slots for as long.
        if timeout_seconds is not None and 0 < timeout_seconds <= MAX_WEBHOOK_TIMEOUT:
            timeout, seconds = aiohttp.ClientTimeout(total=timeout_seconds), timeout_seconds
        try:
            async with session.post(
                url, data=body, headers=headers, allow_redirects=False, timeout=timeout
            ) as response:
                status = response.status
                retry_after = parse_retry_after(response.headers.get("Retry-After"), time.time())
                try:
                    await self._read_body(response, kept)
                except TimeoutError:
                    error = f"timeout after {seconds} s reading the body"
                except (aiohttp.ClientError, OSError) as exc:
                    error = f"reading the body failed: {_describe(exc)}"
        except TimeoutError:
            error = f"timeout after {seconds} s"
        except (aiohttp.ClientError, OSError) as exc:
            refusal = _refusal_in(exc)
            if refusal is not None:
                return self._refused(refusal.reason, started)
            error = _describe(exc)
        answered = status is not None and self._settings.response_body_limit > 0
        return HttpResult(
            status_code=status,
            duration_ms=_elapsed_ms(started),
            error=error,
            response_body=kept.decode("utf-8", errors="replace") if answered else None,
            retry_after=retry_after,
            refused=False,
        )

    async def _read_body(self, response: aiohttp.ClientResponse, kept: bytearray) -> None:
        """Keep the body's first `response_body_limit` bytes in `kept`, then discard the rest.

        The whole body is read, so an attempt only counts as answered once the response is
        complete: one that never ends runs into the session's total timeout. What is kept
        is filled in place, so a body cut short by the timeout still leaves its prefix.
        Memory stays bounded by the limit plus one chunk, however long the body.
        """
        remaining = self._settings.response_body_limit
        while remaining > 0:
            chunk = await response.content.read(remaining)
            if not chunk:
                return
            kept += chunk
            remaining -= len(chunk)
        while await response.content.read(DRAIN_CHUNK):
            pass

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
