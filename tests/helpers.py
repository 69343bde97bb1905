"""Helpers for tests: settings and subprocess environments, waiting with a deadline, HTTP calls
on loopback, fresh store databases, records of the delivery path (attempts, deliveries,
retries) with valid defaults, a fake DNS."""

from __future__ import annotations

import base64
import http.client
import ipaddress
import json
import os
import socket
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.abc import AbstractResolver, ResolveResult
from pydantic import SecretStr
from sqlalchemy import Engine, create_engine, make_url, text
from sqlalchemy.exc import DBAPIError, OperationalError

from hookstream.core.settings import Settings, load_settings
from hookstream.store.engine import normalize_url
from tests import postgres

# Every store test runs on both; PostgreSQL is the session's throwaway cluster (tests/postgres.py).
STORE_BACKENDS = ("sqlite", "postgresql")
# One fixed key for every test's settings, so the API, senders and test code in separate
# processes share it (development mode would otherwise fall back to a per-machine key file).
TEST_ENCRYPTION_KEY = "test:" + base64.b64encode(bytes(range(32))).decode("ascii")


def settings_for_test(bootstrap: str, prefix: str, **overrides: Any) -> Settings:
    """Settings for one test or module: its own topics and groups, small partitions, fast
    retries, and a free port for each service's probes (many run side by side)."""
    values: dict[str, Any] = {
        "kafka_bootstrap_servers": bootstrap,
        "topic_prefix": prefix,
        "consumer_group_prefix": prefix,
        "events_partitions": 2,
        "deliveries_partitions": 4,
        "retry_partitions": 2,
        "delivery_log_partitions": 2,
        "compacted_partitions": 1,
        "retry_schedule": (0.2, 0.5, 1.0),
        "metrics_port": 0,
        "encryption_key": TEST_ENCRYPTION_KEY,
    }
    values.update(overrides)
    return load_settings(**values)


def loopback_sender_settings(**overrides: Any) -> Settings:
    """Settings for an `HttpSender` in the test process that may send to loopback receivers
    (and plain http to them: allowed only through `allow_private_targets`)."""
    return load_settings(**{"allow_private_targets": ("127.0.0.0/8",), **overrides})


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that makes a `hookstream` subprocess see exactly these settings."""
    env = dict(os.environ)
    for name, value in settings.model_dump().items():
        key = f"HOOKSTREAM_{name.upper()}"
        if value is None:
            env.pop(key, None)  # unset: the subprocess gets the same default
            continue
        if isinstance(value, SecretStr):
            text = value.get_secret_value()
        elif isinstance(value, dict):
            text = json.dumps(value)
        elif isinstance(value, tuple | list):
            text = ",".join(str(item) for item in value)
        else:
            text = str(value)
        env[key] = text
    return env


def wait_for(
    condition: Callable[[], Any], timeout: float = 30.0, interval: float = 0.05, what: str = ""
) -> Any:
    """Poll `condition` until it returns something truthy; fail with `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what or condition!r}")
        time.sleep(interval)


@dataclass
class Reply:
    """An HTTP answer: its status, body and headers."""

    status: int
    body: bytes
    headers: http.client.HTTPMessage

    @property
    def json(self) -> Any:
        return orjson.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode()


def http_request(
    port: int,
    method: str,
    target: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 30,
) -> Reply:
    """One request to 127.0.0.1:`port` on a connection of its own, sent as given."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request(method, target, body=body, headers=headers or {})
        response = connection.getresponse()
        return Reply(response.status, response.read(), response.headers)
    finally:
        connection.close()


def api_call(port: int, key: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """One call of the JSON API at 127.0.0.1:`port` with `key`: the status, and the answer
    decoded (None when it is empty)."""
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    payload = None if body is None else orjson.dumps(body)
    reply = http_request(port, method, path, payload, headers)
    return reply.status, orjson.loads(reply.body) if reply.body else None


def api_ready(base_url: str) -> bool:
    """Whether the API (or a service's probes) at `base_url` answers its readiness probe."""
    try:
        with urllib.request.urlopen(f"{base_url}/readyz", timeout=5) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def wait_api_ready(base_url: str, timeout: float = 60) -> None:
    """Until the API at `base_url` answers its readiness probe."""
    wait_for(lambda: api_ready(base_url), timeout=timeout, interval=0.2, what="the API's /readyz")


def unique_prefix() -> str:
    """A topic and consumer-group prefix no other test uses."""
    return f"t{uuid.uuid4().hex[:10]}."


def process_exists(pid: int) -> bool:
    """Whether a process `pid` exists (a zombie still does)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def sqlite_url(directory: Path, name: str = "store.db") -> str:
    """The URL of a SQLite store database `name` in `directory`."""
    return f"sqlite:///{directory / name}"


@contextmanager
def fresh_store_url(backend: str, directory: Path) -> Iterator[str]:
    """The URL of an empty store database: a SQLite file in `directory`, or a new PostgreSQL
    database (dropped afterwards) on `HOOKSTREAM_TEST_POSTGRES_URL`, or else on the session's
    throwaway cluster (`tests/postgres.py`).
    """
    if backend == "sqlite":
        yield sqlite_url(directory)
        return
    if backend != "postgresql":
        raise ValueError(f"unknown store backend {backend!r}: expected one of {STORE_BACKENDS}")
    try:
        admin_url = postgres.admin_url()
    except postgres.PostgresUnavailableError as exc:
        pytest.fail(f"PostgreSQL for the store tests: {exc}", pytrace=False)
    # CREATE/DROP DATABASE cannot run inside a transaction block.
    admin = create_engine(normalize_url(admin_url), isolation_level="AUTOCOMMIT")
    name = f"hs_{uuid.uuid4().hex}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except OperationalError as exc:
        admin.dispose()
        pytest.fail(
            f"PostgreSQL is not reachable at {make_url(admin_url).render_as_string()}: "
            f"is HOOKSTREAM_TEST_POSTGRES_URL right? {exc}",
            pytrace=False,
        )
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        try:
            _drop_database(admin, name)
        finally:
            admin.dispose()


def _drop_database(admin: Engine, name: str, timeout: float = 30.0) -> None:
    # FORCE ends this role's leftover sessions. A session whose client was just killed (a
    # service process stopped with SIGKILL) may still be exiting, and PostgreSQL then refuses a
    # non-superuser with "must be a member of the role whose process is being terminated"
    # (InsufficientPrivilege) for a moment: try again until it is gone.
    deadline = time.monotonic() + timeout
    while True:
        try:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            return
        except DBAPIError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


# -- records of the delivery path ---------------------------------------------------------
# One factory per record type: when the application's records become typed, these are the
# only places that build them.

T0_MS = 1_700_000_000_000  # a fixed moment (2023-11-14T22:13:20Z) for records that need one


def attempt_record(
    delivery_id: str = "dlv_1",
    number: int = 1,
    *,
    webhook_id: str = "wh_1",
    tenant_id: str = "tenant_a",
    event_type: str = "invoice.paid",
    started_at_ms: int = T0_MS,
    outcome: str = "success",
    status_code: int | None = 200,
    error: str | None = None,
    response_body: str | None = None,
    next_attempt_at_ms: int | None = None,
    trigger: str = "scheduled",
    body: bytes | None = None,
    attempt_id: str | None = None,
    url: str | None = None,
    duration_ms: int | None = None,
) -> dict[str, Any]:
    """A valid `Attempt` record (schemas/attempt.avsc: a delivery-log value) as a sender would
    log it. Unless given: the attempt and event ids follow the delivery id, the URL the webhook
    id, the duration the attempt number, and a 410 disables the webhook."""
    return {
        "attempt_id": attempt_id or f"att_{delivery_id}_{number}_{trigger}",
        "delivery_id": delivery_id,
        "event_id": f"evt_{delivery_id}",
        "webhook_id": webhook_id,
        "tenant_id": tenant_id,
        "event_type": event_type,
        "attempt_number": number,
        "trigger": trigger,
        "url": url if url is not None else f"https://hooks.example.com/{webhook_id}",
        "started_at_ms": started_at_ms,
        "duration_ms": duration_ms if duration_ms is not None else 40 + number,
        "status_code": status_code,
        "outcome": outcome,
        "error": error,
        "response_body": response_body,
        "next_attempt_at_ms": next_attempt_at_ms,
        "webhook_disabled": status_code == 410,
        "body": body,
    }


def delivery_record(
    tag: str,
    webhook_id: str = "wh_1",
    at_ms: int = T0_MS,
    *,
    retry: bool = False,
    tenant_id: str = "tenant_a",
    event_type: str = "invoice.paid",
) -> dict[str, Any]:
    """A valid `Delivery` record (schemas/delivery.avsc) of event `evt_<tag>` to `webhook_id`,
    routed at `at_ms`; with `retry`, the `Retry` record (schemas/retry.avsc) of its second
    attempt, due at `at_ms` in the first tier after a 503."""
    event_id = f"evt_{tag}"
    record: dict[str, Any] = {
        "delivery_id": f"dlv_{tag}",
        "event_id": event_id,
        "event_type": event_type,
        "tenant_id": tenant_id,
        "webhook_id": webhook_id,
        "body": orjson.dumps({"id": event_id, "type": event_type, "data": {"n": tag}}),
        "attempt": 2 if retry else 1,
        "trigger": "scheduled",
        "due_at_ms": at_ms if retry else 0,
        "created_at_ms": at_ms,
        "first_attempt_at_ms": at_ms - 1000 if retry else None,
    }
    if retry:
        record.update(tier="200ms", previous_status_code=503, previous_error=None)
    return record


# -- a fake DNS, for the SSRF guard --------------------------------------------------------


class FakeDns:
    """A controllable resolver: each name answers its queued address lists in turn (the last
    one repeats); any other name does not exist. `lookup` is the API's create-time resolution
    (`check_url(resolve=...)`), `resolver()` the sender's (an aiohttp resolver)."""

    def __init__(self, answers: Mapping[str, Sequence[Sequence[str]]]) -> None:
        self.answers = {name: list(queue) for name, queue in answers.items()}
        self.queries: list[str] = []
        # Whether a resolver of this DNS was closed.
        self.closed = False

    def _next(self, host: str) -> Sequence[str]:
        self.queries.append(host)
        queue = self.answers.get(host.removesuffix("."))
        if not queue:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return queue.pop(0) if len(queue) > 1 else queue[0]

    def lookup(self, host: str) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
        return [ipaddress.ip_address(address) for address in self._next(host)]

    def resolver(self) -> AbstractResolver:
        dns = self

        class Resolver(AbstractResolver):
            async def resolve(
                self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
            ) -> list[ResolveResult]:
                return [
                    ResolveResult(
                        hostname=host,
                        host=address,
                        port=port,
                        family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                        proto=0,
                        flags=socket.AI_NUMERICHOST,
                    )
                    for address in dns._next(host)
                ]

            async def close(self) -> None:
                dns.closed = True

        return Resolver()
