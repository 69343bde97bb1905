"""A running api (console included) with the delivery pipeline behind it, for console tests.

Real broker, real store, real HTTP on loopback; each stack has its own topics.
"""

from __future__ import annotations

import http.client
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from hookstream.core.settings import Settings
from hookstream.tools import localkafka
from hookstream.tools.topics import create_topics
from tests.helpers import settings_for_test, sqlite_url, unique_prefix, wait_for
from tests.pipeline import Service
from tests.receiver import TestReceiver

KEY_A = "console-key-tenant-a-0123456789"
KEY_B = "console-key-tenant-b-0123456789"
ADMIN = "console-key-admin-0123456789"
TENANT_A = "tenant_a"
TENANT_B = "tenant_b"
PIPELINE = ("api", "router", "sender", "log-sink")


@dataclass
class Reply:
    status: int
    body: bytes
    headers: http.client.HTTPMessage

    @property
    def json(self) -> Any:
        return orjson.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode()


@dataclass
class ConsoleStack:
    settings: Settings
    receiver: TestReceiver
    services: dict[str, Service]

    @property
    def port(self) -> int:
        return self.settings.api_port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            return Reply(response.status, response.read(), response.headers)
        finally:
            connection.close()

    def api(self, method: str, path: str, body: Any = None, key: str = ADMIN) -> Reply:
        """The JSON API, for what a test arranges outside the console (events, other tenants)."""
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        payload = None if body is None else orjson.dumps(body)
        return self.request(method, path, payload, headers)

    def logs(self) -> str:
        return "\n".join(f"--- {n} ---\n{s.log()[-4000:]}" for n, s in self.services.items())


@contextmanager
def console_stack(
    bootstrap: str, directory: Path, names: tuple[str, ...] = PIPELINE
) -> Iterator[ConsoleStack]:
    settings = settings_for_test(
        bootstrap,
        unique_prefix(),
        deliveries_partitions=2,
        retry_schedule=(0.2, 0.5),
        request_timeout=2.0,
        store_url=sqlite_url(directory),
        api_port=localkafka.free_port(),
        api_keys={KEY_A: TENANT_A, KEY_B: TENANT_B, ADMIN: "*"},
        allow_private_targets=("127.0.0.0/8",),
    )
    create_topics(settings)
    receiver = TestReceiver().start()
    services = {name: Service(settings, name, directory) for name in names}
    stack = ConsoleStack(settings, receiver, services)
    try:
        wait_for(lambda: _ready(stack), timeout=60, interval=0.2, what="the API's /readyz")
        yield stack
    finally:
        for service in services.values():
            service.terminate(30)
        print(stack.logs())
        for service in services.values():
            service.close()
        receiver.stop()


def _ready(stack: ConsoleStack) -> bool:
    try:
        return stack.request("GET", "/readyz").status == 200
    except OSError:
        return False
