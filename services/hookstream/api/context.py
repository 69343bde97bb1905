"""What every handler needs, built once per process and torn down with the app."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import weakref
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import web
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from hookstream.api.errors import unavailable
from hookstream.core.codec import Codec
from hookstream.core.records import Principal, Webhook
from hookstream.core.settings import Settings
from hookstream.core.topics import Topics
from hookstream.core.view import CompactedView, ViewNotReadyError
from hookstream.endpoints.secrets import Keyring, load_keyring
from hookstream.events.catalog import Catalog, default_catalog
from hookstream.runtime.context import ServiceContext
from hookstream.runtime.writer import KafkaWriter, Record, WriteFailedError, Written
from hookstream.store import Store

log = logging.getLogger(__name__)

T = TypeVar("T")

STORE_OUTAGES = (OperationalError, InterfaceError, PoolTimeoutError)

# Threads that block in view.wait_for_offset; kept apart from the default executor so that
# slow writes can never starve store queries and DNS checks.
VIEW_WAIT_THREADS = 16


@dataclass(eq=False)
class Api:
    # Settings, codec, topics and dead letters, built as every service builds them.
    context: ServiceContext
    catalog: Catalog
    writer: KafkaWriter
    webhooks: CompactedView[Webhook]
    principals: CompactedView[Principal]
    store: Store
    keyring: Keyring
    _view_waits: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(VIEW_WAIT_THREADS, "api-view-wait")
    )
    _locks: weakref.WeakValueDictionary[str, asyncio.Lock] = field(
        default_factory=weakref.WeakValueDictionary
    )

    @property
    def settings(self) -> Settings:
        return self.context.settings

    @property
    def codec(self) -> Codec:
        return self.context.codec

    @property
    def topics(self) -> Topics:
        return self.context.topics

    async def blocking(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a blocking call (store, DNS) off the event loop."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(None, functools.partial(fn, *args, **kwargs))
        except STORE_OUTAGES as exc:
            # The database is down or overloaded: the client may retry, unlike after a bug.
            log.warning("api: store unavailable: %s", exc)
            raise unavailable("the store is unavailable; retry shortly") from None

    def lock(self, kind: str, ident: str) -> asyncio.Lock:
        """Serialises read-modify-write of one resource within this process."""
        key = f"{kind}:{ident}"
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        return lock

    def require_ready(self, view: CompactedView[Any], what: str) -> None:
        try:
            view.wait_ready(0)
        except ViewNotReadyError:
            raise unavailable(f"the {what} view is still loading; retry shortly") from None
        except Exception as exc:
            raise unavailable(f"the {what} view failed: {exc}") from None

    async def produce(self, records: list[Record]) -> list[Written]:
        try:
            return await self.writer.write_all(records)
        except WriteFailedError as exc:
            raise unavailable(str(exc)) from None

    async def write_through(
        self,
        view: CompactedView[Any],
        topic: str,
        what: str,
        key: str,
        value: bytes | None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> bool:
        """Produce to a compacted topic, then wait until our own view has read it.

        True when the view applied the record; False when it refused it (a view with
        optimistic concurrency, core.versions: another write of the key came first).
        """
        self.require_ready(view, what)
        started = time.monotonic()
        with view.verdicts(key) as verdicts:
            [written] = await self.produce([Record(topic, key.encode(), value, headers)])
            remaining = max(0.0, self.settings.write_timeout - (time.monotonic() - started))
            loop = asyncio.get_running_loop()
            read = await loop.run_in_executor(
                self._view_waits,
                view.wait_for_offset,
                written.partition,
                written.offset,
                remaining,
            )
        if not read:
            raise unavailable(
                f"the {what} change was written but this API instance has not applied it within "
                f"{self.settings.write_timeout:g} s; read it again shortly",
                {"id": key},
            )
        # Absent: the view dead-lettered the record (e.g. undecodable): not applied either.
        return verdicts.get((written.partition, written.offset), False)

    def close(self) -> None:
        self._view_waits.shutdown(wait=False, cancel_futures=True)


API = web.AppKey("api", Api)
SETTINGS = web.AppKey("settings", Settings)


async def api_context(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: open the store, the producer and both views; close them on shutdown."""
    settings = app[SETTINGS]
    loop = asyncio.get_running_loop()
    # First: production without an encryption key stops here, before any connection.
    keyring = load_keyring(settings)
    # Its dead letters are the records of the views that cannot be applied; the api refuses
    # nothing else from Kafka.
    context = ServiceContext.build(settings, "api")
    store = await loop.run_in_executor(None, Store.open, settings.store_url)
    # librdkafka gives up on a record at about the time we answer 503, so a write the client
    # saw fail rarely lands later.
    timeout_ms = max(1000, int(settings.write_timeout * 1000))
    writer = KafkaWriter(
        settings,
        timeout=settings.write_timeout,
        extra={"message.timeout.ms": timeout_ms, "linger.ms": 1},
        name="api-producer",
    ).start()
    # Started without waiting: /readyz reports them until they have read their topics.
    api = Api(
        context=context,
        catalog=default_catalog(),
        writer=writer,
        webhooks=context.webhook_view().start(),
        principals=context.principal_view().start(),
        store=store,
        keyring=keyring,
    )
    app[API] = api
    try:
        yield
    finally:
        api.close()
        # Stopped together: a view stuck on an unreachable broker takes its full join timeout.
        await asyncio.gather(
            loop.run_in_executor(None, api.webhooks.stop),
            loop.run_in_executor(None, api.principals.stop),
            loop.run_in_executor(None, api.writer.close),
        )
        await loop.run_in_executor(None, context.dead_letters.flush, 10.0)
        store.close()
