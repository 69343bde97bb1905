"""A running api (console included) with the delivery pipeline behind it, for console tests.

Real broker, real store, real HTTP on loopback; each stack has its own topics.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from tests.helpers import Reply, http_request, sqlite_url
from tests.pipeline import PIPELINE, PipelineStack, api_settings, running_stack

KEY_A = "console-key-tenant-a-0123456789"
KEY_B = "console-key-tenant-b-0123456789"
ADMIN = "console-key-admin-0123456789"
TENANT_A = "tenant_a"
TENANT_B = "tenant_b"


@dataclass
class ConsoleStack(PipelineStack):
    @property
    def port(self) -> int:
        return self.settings.api_port

    @property
    def url(self) -> str:
        return self.api_url

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        return http_request(self.port, method, path, body, headers)

    def api(self, method: str, path: str, body: Any = None, key: str = ADMIN) -> Reply:
        """The JSON API, for what a test arranges outside the console (events, other tenants)."""
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        payload = None if body is None else orjson.dumps(body)
        return self.request(method, path, payload, headers)


@contextmanager
def console_stack(
    bootstrap: str, directory: Path, names: tuple[str, ...] = PIPELINE
) -> Iterator[ConsoleStack]:
    store_url = sqlite_url(directory)
    settings = api_settings(bootstrap, store_url, {KEY_A: TENANT_A, KEY_B: TENANT_B, ADMIN: "*"})
    with running_stack(ConsoleStack, settings, directory, names) as stack:
        yield stack
