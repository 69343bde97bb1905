"""Background upkeep of the API process: purging expired event-id claims and Idempotency-Keys."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from hookstream.api.context import API, Api
from hookstream.api.times import now_ms

log = logging.getLogger(__name__)


async def upkeep_context(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx (after the Api context): run the purge loop while the app serves."""
    task = asyncio.create_task(_purge_forever(app[API]), name="api-upkeep")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _purge_forever(api: Api) -> None:
    while True:
        await asyncio.sleep(api.settings.maintenance_interval)
        # Every replica purges; the deletes are idempotent, so overlap costs nothing.
        await _purge(
            api,
            "event ids",
            api.store.purge_accepted_events,
            _cutoff(api.settings.event_idempotency_window),
        )
        await _purge(
            api,
            "Idempotency-Keys",
            api.store.idempotency_keys.purge,
            _cutoff(api.settings.idempotency_key_window),
        )


def _cutoff(seconds: float) -> int:
    return now_ms() - int(seconds * 1000)


async def _purge(api: Api, what: str, purge: Callable[[int], int], before_ms: int) -> None:
    try:
        purged = await api.blocking(purge, before_ms)
    except Exception:
        log.exception("api: purging expired %s failed; retrying next interval", what)
        return
    if purged:
        log.info("api: purged %d expired %s", purged, what)
