"""Hostile endpoints: receivers that misbehave on purpose, served from real loopback sockets.

Every kind must end as a temporary failure with a clear error within the request timeout
(plus a little slack), and the sender's memory must stay bounded however many such attempts
it makes. The servers run in a process of their own, so the sender under test (in this
process, or a real `hookstream run sender` process) shares nothing with them but sockets, and
memory measured here is the sender's alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import gc
import ipaddress
import multiprocessing
import re
import ssl
import threading
import time
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from hookstream.core.records import Outcome
from hookstream.core.settings import Settings
from hookstream.core.topics import Topics
from hookstream.sender.http import HttpSender
from hookstream.sender.outcome import classify
from hookstream.tools.topics import create_topics
from tests.conftest import SettingsFactory
from tests.helpers import loopback_sender_settings, wait_for
from tests.pipeline import Platform, Service, make_webhook, read_topic

pytestmark = pytest.mark.integration

TIMEOUT = 1.0
# Scheduling noise on a busy test machine; a hostile endpoint that stretched an attempt would
# overshoot by its own delays (seconds), far beyond this.
SLACK = 0.75
BODY_LIMIT = 16 * 1024
# A drip sends one byte this often: every read gets data long before any read timeout.
DRIP_INTERVAL = 0.02
# 1 MiB of response headers, as many short fields or as one giant one.
HEADER_FLOOD = b"".join(b"X-Flood-%04d: %s\r\n" % (i, b"f" * 1000) for i in range(1024))
GIANT_HEADER = b"X-Giant: " + b"g" * (1 << 20) + b"\r\n"
ENDLESS_CHUNK = b"%x\r\n%s\r\n" % (16 * 1024, b"e" * 16 * 1024)

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


# -- what the hostile servers do ------------------------------------------------------------


async def _request_head(reader: asyncio.StreamReader) -> None:
    """Wait for the request's head, so the answer goes to a client that is reading."""
    await reader.readuntil(b"\r\n\r\n")


async def _ignore(reader: asyncio.StreamReader) -> None:
    """Read (and drop) whatever the client sends until it hangs up; never answer."""
    while await reader.read(64 * 1024):
        pass


async def endless_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await _request_head(reader)
    writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    while True:
        writer.write(ENDLESS_CHUNK)
        await writer.drain()


async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await _ignore(reader)


async def _drip(writer: asyncio.StreamWriter, data: bytes) -> None:
    for byte in data:
        writer.write(bytes((byte,)))
        await writer.drain()
        await asyncio.sleep(DRIP_INTERVAL)


async def drip_headers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await _request_head(reader)
    # A header block that would take minutes to finish, one byte at a time.
    await _drip(writer, b"HTTP/1.1 200 OK\r\nX-Drip: " + b"d" * 10_000 + b"\r\n\r\n")


async def drip_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await _request_head(reader)
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10000\r\n\r\n")
    await _drip(writer, b"b" * 10_000)


def _headers_then_hang(block: bytes) -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _request_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\n" + block + b"Content-Length: 0\r\n\r\n")
        await writer.drain()
        await _ignore(reader)

    return handler


async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await _request_head(reader)
    writer.write(b"\x00\xffSSH-2.0-not-http \x1b[31m\r\n\r\n" + bytes(range(256)))
    await writer.drain()
    await _ignore(reader)


async def plain_http_at_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    # Answers before reading anything: a TLS client gets plaintext instead of a ServerHello.
    writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
    await writer.drain()
    await _ignore(reader)


async def tls_answers_ok(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    # Never reached by a verifying client: its handshake fails on the self-signed cert.
    await _request_head(reader)
    writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
    await writer.drain()


@dataclass(frozen=True)
class Hostile:
    name: str
    handler: Handler
    # The URL's scheme; `tls` serves it over TLS with a self-signed certificate.
    scheme: str
    tls: bool
    # What the attempt record's error must say (a regex; `{timeout}` stands for the request
    # timeout), and the status line it got, if any.
    error: str
    status: int | None

    def error_pattern(self, timeout: float) -> str:
        return self.error.replace("{timeout}", re.escape(str(timeout)))


TIMED_OUT = "timeout after {timeout} s"
HOSTILE = [
    Hostile("endless_body", endless_body, "http", False, TIMED_OUT + " reading the body", 200),
    Hostile("silent", silent, "http", False, TIMED_OUT + "$", None),
    Hostile("drip_headers", drip_headers, "http", False, TIMED_OUT + "$", None),
    Hostile("drip_body", drip_body, "http", False, TIMED_OUT + " reading the body", 200),
    Hostile(
        "header_flood",
        _headers_then_hang(HEADER_FLOOD),
        "http",
        False,
        "^invalid HTTP response: Too many headers",
        None,
    ),
    Hostile(
        "giant_header",
        _headers_then_hang(GIANT_HEADER),
        "http",
        False,
        "^invalid HTTP response: Got more than 8190 bytes",
        None,
    ),
    Hostile("garbage", garbage, "http", False, "^invalid HTTP response: Bad status line", None),
    Hostile("tls_self_signed", tls_answers_ok, "https", True, "certificate verify failed", None),
    Hostile(
        "tls_to_plain_http",
        plain_http_at_once,
        "https",
        False,
        "(?i)ssl.*(wrong version number|packet length too long|record layer failure)",
        None,
    ),
    Hostile("tls_to_silent_server", silent, "https", False, TIMED_OUT + "$", None),
]


def _self_signed(directory: Path) -> ssl.SSLContext:
    """A TLS server context with a fresh self-signed certificate for 127.0.0.1."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hostile.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_path, key_path)
    return context


class HostileServers:
    """One loopback server per hostile kind, on an event loop running in its own thread."""

    def __init__(self, tls: ssl.SSLContext) -> None:
        self._tls = tls
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._servers: list[asyncio.Server] = []
        self._connections: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self.ports: dict[str, int] = {}

    def start(self) -> HostileServers:
        self._thread.start()
        for hostile in HOSTILE:
            future = asyncio.run_coroutine_threadsafe(self._serve(hostile), self._loop)
            self.ports[hostile.name] = future.result(10)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _serve(self, hostile: Hostile) -> int:
        async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            self._connections.add(task)
            self._writers.add(writer)
            try:
                await hostile.handler(reader, writer)
            # The client hanging up (or our shutdown) is how every hostile exchange ends.
            except (OSError, asyncio.IncompleteReadError, asyncio.CancelledError):
                pass
            finally:
                self._connections.discard(task)
                self._writers.discard(writer)
                writer.transport.abort()

        server = await asyncio.start_server(
            connection, "127.0.0.1", 0, ssl=self._tls if hostile.tls else None
        )
        self._servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    async def _shutdown(self) -> None:
        for server in self._servers:
            server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        for server in self._servers:
            await server.wait_closed()


def _serve_until_told(conn: Connection, tls_dir: str) -> None:
    """The hostile servers' process: report the ports, serve until the parent says stop."""
    servers = HostileServers(_self_signed(Path(tls_dir))).start()
    conn.send(servers.ports)
    conn.recv()
    servers.stop()


class HostileProcess:
    def __init__(self, tls_dir: Path) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(
            target=_serve_until_told, args=(child, str(tls_dir)), daemon=True
        )
        self._process.start()
        if not self._conn.poll(30):
            self._process.kill()
            raise RuntimeError("the hostile servers did not start within 30 s")
        self.ports: dict[str, int] = self._conn.recv()

    def url(self, hostile: Hostile) -> str:
        return f"{hostile.scheme}://127.0.0.1:{self.ports[hostile.name]}/{hostile.name}"

    def stop(self) -> None:
        self._conn.send("stop")
        self._process.join(15)
        if self._process.is_alive():
            self._process.kill()
            self._process.join(5)


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostileProcess]:
    servers = HostileProcess(tmp_path_factory.mktemp("tls"))
    try:
        yield servers
    finally:
        servers.stop()


def _settings(**overrides: Any) -> Settings:
    values = {"request_timeout": TIMEOUT, "response_body_limit": BODY_LIMIT, **overrides}
    return loopback_sender_settings(**values)


@pytest.fixture
async def sender() -> AsyncIterator[HttpSender]:
    async with HttpSender(_settings()) as http:
        yield http


# -- each kind, one attempt -----------------------------------------------------------------


@pytest.mark.parametrize("kind", HOSTILE, ids=[h.name for h in HOSTILE])
async def test_hostile_endpoint_is_a_temporary_failure_within_the_timeout(
    kind: Hostile, hostile: HostileProcess, sender: HttpSender
) -> None:
    started = time.monotonic()
    result = await sender.send(hostile.url(kind), {"Content-Type": "application/json"}, b"{}")
    elapsed = time.monotonic() - started

    assert classify(result) is Outcome.TEMPORARY_FAILURE
    assert result.refused is False
    assert result.status_code == kind.status
    assert result.error is not None
    assert re.search(kind.error_pattern(TIMEOUT), result.error), result.error
    assert elapsed <= TIMEOUT + SLACK
    assert result.duration_ms <= (TIMEOUT + SLACK) * 1000
    # The error names the failure in a line, however many bytes the endpoint threw at us.
    assert len(result.error) <= 500


async def test_endless_body_keeps_only_the_capped_prefix(
    hostile: HostileProcess, sender: HttpSender
) -> None:
    result = await sender.send(hostile.url(HOSTILE[0]), {}, b"{}")
    assert result.response_body == "e" * BODY_LIMIT


async def test_dripped_body_keeps_what_arrived_before_the_timeout(
    hostile: HostileProcess, sender: HttpSender
) -> None:
    drip = next(h for h in HOSTILE if h.name == "drip_body")
    result = await sender.send(hostile.url(drip), {}, b"{}")
    assert result.response_body is not None
    # Roughly TIMEOUT / DRIP_INTERVAL bytes trickled in; all of them are kept.
    assert 0 < len(result.response_body) < 10_000
    assert set(result.response_body) == {"b"}


async def test_the_sender_still_delivers_after_hostile_endpoints(
    hostile: HostileProcess, sender: HttpSender
) -> None:
    await asyncio.gather(*(sender.send(hostile.url(h), {}, b"{}") for h in HOSTILE))

    async def accept(request: web.Request) -> web.Response:
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/ok", accept)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    try:
        result = await sender.send(f"http://127.0.0.1:{server.port}/ok", {}, b"{}")
    finally:
        await server.close()
    assert classify(result) is Outcome.SUCCESS
    assert result.error is None


async def test_only_the_certificate_fails_the_tls_endpoint(hostile: HostileProcess) -> None:
    # Without verification the same server answers 204: the failed check of its self-signed
    # certificate, not some other fault of the server, is what the attempt reports.
    tls = next(h for h in HOSTILE if h.name == "tls_self_signed")
    async with (
        aiohttp.ClientSession() as session,
        session.post(hostile.url(tls), data=b"{}", ssl=False) as response,
    ):
        assert response.status == 204


# -- bounded memory -------------------------------------------------------------------------

# Concurrent attempts per hostile kind in the in-process test, and waves of them.
CONCURRENT_PER_KIND = 4
WAVES = 10
# Python memory the HttpSender may hold at its peak beyond its warmed-up state, per attempt in
# flight: the kept body prefix plus the socket and parser buffers of one connection (about
# 200 KiB measured). Reading an endless body without the cap, the same waves peak above
# 100 MiB.
MAX_PEAK_PER_ATTEMPT = 400 * 1024
# What may remain allocated once the waves are over: nothing per attempt.
MAX_PYTHON_GROWTH = 1024 * 1024


async def test_http_sender_memory_stays_bounded(hostile: HostileProcess) -> None:
    async with HttpSender(_settings(request_timeout=0.3)) as sender:

        async def wave() -> list[Outcome]:
            results = await asyncio.gather(
                *(
                    sender.send(hostile.url(h), {}, b"{}")
                    for h in HOSTILE
                    for _ in range(CONCURRENT_PER_KIND)
                )
            )
            return [classify(r) for r in results]

        tracemalloc.start()
        try:
            await wave()  # warm-up: connection pool, SSL context, parser state
            gc.collect()
            baseline = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            outcomes: list[Outcome] = []
            for _ in range(WAVES):
                outcomes += await wave()
            gc.collect()
            current, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    in_flight = CONCURRENT_PER_KIND * len(HOSTILE)
    assert outcomes == [Outcome.TEMPORARY_FAILURE] * (WAVES * in_flight)
    assert peak - baseline < in_flight * MAX_PEAK_PER_ATTEMPT, f"peak {baseline} -> {peak} bytes"
    assert current - baseline < MAX_PYTHON_GROWTH, f"current {baseline} -> {current} bytes"


# A real sender process under a stream of hostile attempts, measured by its resident set.


def _peak_rss_bytes(pid: int) -> int:
    """The process's resident-set high-water mark (VmHWM): a bound on every moment so far."""
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmHWM:\s+(\d+) kB$", status, re.MULTILINE)
    assert match is not None, status
    return int(match.group(1)) * 1024


# Concurrent attempts per hostile webhook; the warm-up wave reaches it too, so the second,
# larger wave adds attempts, not concurrency.
PER_WEBHOOK = 16
ATTEMPTS_PER_DELIVERY = 4  # the test retry schedule (0.2, 0.5, 1.0 s): three retries
# Growth of the resident set's high-water mark allowed from the end of the warm-up wave to the
# end of a second wave twice its size. Not all of the sender's memory is HTTP: the Kafka
# client's fetch and produce buffers grow with the topics' backlog (about 10 MiB per thousand
# attempts here), which is why the strict bound on the HTTP side is the tracemalloc test above.
# Unbounded reading would still blow through this many times over: an endless body alone
# streams hundreds of MiB per second over loopback, and 16 of them run at once.
MAX_PEAK_GROWTH = 96 * 1024 * 1024
# 128 hostile attempts at once on a shared CI machine delay the sender's timers by more than
# SLACK. The tight bound per attempt is held by the tests above; here it is enough that no
# attempt runs away (the drips alone would take minutes).
LOADED_SLACK = 3.0


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc/<pid>/status")
def test_sender_memory_stays_bounded_under_hostile_endpoints(
    hostile: HostileProcess, settings_factory: SettingsFactory, tmp_path: Path
) -> None:
    settings = settings_factory(
        allow_private_targets=("127.0.0.0/8",),
        request_timeout=0.5,
        response_body_limit=BODY_LIMIT,
        max_in_flight=PER_WEBHOOK * len(HOSTILE),
        max_in_flight_per_webhook=PER_WEBHOOK,
    )
    create_topics(settings)
    platform = Platform(settings)
    # A fixed limit: the adaptive one backs off from timeouts and refused connections down to
    # one request at a time, and the point here is many hostile requests at once.
    hooks = {
        platform.webhook(
            replace(
                make_webhook("t_hostile", hostile.url(h), ["invoice.paid"]),
                max_concurrency=PER_WEBHOOK,
            )
        ).id: h
        for h in HOSTILE
    }
    delivery_log = Topics.from_settings(settings).delivery_log
    router = Service(settings, "router", tmp_path)
    sender = Service(settings, "sender", tmp_path)
    try:
        published = 0

        def wave(events: int) -> list[Any]:
            nonlocal published
            for _ in range(events):
                platform.event("t_hostile", "invoice.paid", flush=False)
            platform.flush()
            published += events
            expected = published * len(HOSTILE) * ATTEMPTS_PER_DELIVERY
            holder: list[list[Any]] = []

            def done() -> bool:
                assert sender.alive(), sender.log()
                holder[:] = [read_topic(settings, delivery_log, "Attempt")]
                return len(holder[0]) >= expected

            wait_for(done, timeout=120, interval=0.5, what=f"{expected} attempt records")
            return holder[0]

        wave(PER_WEBHOOK)
        warm = _peak_rss_bytes(sender.process.pid)
        records = wave(2 * PER_WEBHOOK)
        peak = _peak_rss_bytes(sender.process.pid)

        print(
            f"sender peak RSS: {warm / 2**20:.1f} MiB after the warm-up wave, "
            f"{peak / 2**20:.1f} MiB after {len(records)} hostile attempts"
        )
        assert peak - warm < MAX_PEAK_GROWTH, f"peak RSS {warm} -> {peak} bytes"
        assert len(records) == published * len(HOSTILE) * ATTEMPTS_PER_DELIVERY
        for record in records:
            kind = hooks[record["webhook_id"]]
            last = record["attempt_number"] == ATTEMPTS_PER_DELIVERY
            assert record["outcome"] == ("exhausted" if last else "temporary_failure"), record
            # Under this load a fast failure may be overtaken by the timeout: either is fine.
            assert re.search(kind.error_pattern(0.5), record["error"]) or re.search(
                TIMED_OUT.format(timeout=0.5), record["error"]
            ), record
            assert record["status_code"] in (kind.status, None), record
            assert record["duration_ms"] <= (0.5 + LOADED_SLACK) * 1000, (kind.name, record)
        assert sender.alive(), sender.log()
    finally:
        sender.close()
        router.close()
        with contextlib.suppress(Exception):
            platform.flush()
