"""A real HTTP receiver on loopback that verifies every request like a customer would.

Runs an aiohttp server on its own event loop thread so synchronous tests can use it. Each
path is one endpoint with a settable behaviour (status, delay, Retry-After, fail N times).
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field

from aiohttp import web
from standardwebhooks.webhooks import Webhook as Verifier
from standardwebhooks.webhooks import WebhookVerificationError

from tests.helpers import wait_for
from tests.loopback import LoopbackServer


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float
    verified: bool
    # The status this request was answered with.
    status: int = 0
    # Requests open at this path when it arrived, itself included.
    concurrent: int = 1


@dataclass
class Behaviour:
    status: int = 204
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    # Answer `fail_status` to the first `fail_first` requests, then `status`.
    fail_first: int = 0
    fail_status: int = 500
    body: str = ""
    # Answer `fail_status` to every request until this wall-clock time (an outage window).
    fail_until: float = 0.0
    # Serve this many requests at a time and answer 503 at once to any beyond (0: no limit).
    capacity: int = 0


class TestReceiver(LoopbackServer):
    def __init__(self) -> None:
        super().__init__()
        self.requests: list[Received] = []
        self.secrets: dict[str, list[str]] = {}
        self.behaviours: dict[str, Behaviour] = {}
        self._counts: dict[str, int] = {}
        self._open: dict[str, int] = {}
        self._lock = threading.Lock()

    def routes(self, app: web.Application) -> None:
        app.router.add_route("*", "/{tail:.*}", self._handle)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def expect(self, path: str, secrets: list[str], behaviour: Behaviour | None = None) -> str:
        """Register an endpoint verifying with `secrets`; returns its URL."""
        with self._lock:
            self.secrets[path] = list(secrets)
            self.behaviours[path] = behaviour or Behaviour()
        return self.url(path)

    def behave(self, path: str, behaviour: Behaviour) -> None:
        with self._lock:
            self.behaviours[path] = behaviour

    def received(self, path: str | None = None) -> list[Received]:
        with self._lock:
            return [r for r in self.requests if path is None or r.path == path]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = {k.lower(): v for k, v in request.headers.items()}
        path = request.path
        with self._lock:
            secrets = list(self.secrets.get(path, []))
            behaviour = self.behaviours.get(path, Behaviour())
            seen = self._counts.get(path, 0)
            self._counts[path] = seen + 1
            now = time.time()
            failing = seen < behaviour.fail_first or now < behaviour.fail_until
            status = behaviour.fail_status if failing else behaviour.status
            concurrent = self._open.get(path, 0) + 1
            over = 0 < behaviour.capacity < concurrent
            if over:
                status = 503
            else:
                self._open[path] = concurrent
            verified = _verify(secrets, body, headers)
            self.requests.append(Received(path, headers, body, now, verified, status, concurrent))
        if over:
            return web.Response(status=503, text="over capacity")
        try:
            if behaviour.delay:
                await asyncio.sleep(behaviour.delay)
            return web.Response(status=status, headers=behaviour.headers, text=behaviour.body)
        finally:
            with self._lock:
                self._open[path] -= 1


def received(
    receiver: TestReceiver, path: str, count: int = 1, timeout: float = 30
) -> list[Received]:
    """The requests `receiver` got at `path`, once there are at least `count`."""
    return list(
        wait_for(
            lambda: (got := receiver.received(path)) and len(got) >= count and got,
            timeout=timeout,
            what=f"{count} request(s) at {path}",
        )
    )


def _verify(secrets: list[str], body: bytes, headers: dict[str, str]) -> bool:
    for secret in secrets:
        try:
            Verifier(secret).verify(body, headers)
            return True
        except WebhookVerificationError:
            continue
    return False
