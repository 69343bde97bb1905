"""Background upkeep of the API process: purging expired event-id claims."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

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
    window_ms = int(api.settings.event_idempotency_window * 1000)
    while True:
        await asyncio.sleep(api.settings.maintenance_interval)
        try:
            # Every replica purges; the deletes are idempotent, so overlap costs nothing.
            purged = await api.blocking(api.store.purge_accepted_events, now_ms() - window_ms)
        except Exception:
            log.exception("api: purging expired event ids failed; retrying next interval")
            continue
        if purged:
            log.info("api: purged %d expired event ids", purged)
