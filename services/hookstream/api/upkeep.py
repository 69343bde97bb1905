"""Background upkeep of the API process: purging expired event-id claims and Idempotency-Keys,
and settling webhook records the views refused (api.manage.settle_webhooks)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from hookstream.api.context import API, Api
from hookstream.api.errors import ApiError
from hookstream.api.manage import settle_webhooks
from hookstream.api.times import now_ms

log = logging.getLogger(__name__)

# A refused record is settled after this long: a writer that lost a race usually writes its
# change again at once, which settles the key by itself. Far below the webhooks topic's
# min.compaction.lag.ms, so compaction never sees a refused record as the last of its key.
SETTLE_AFTER = 5.0


async def upkeep_context(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx (after the Api context): run the purge loop while the app serves."""
    tasks = [
        asyncio.create_task(_purge_forever(app[API]), name="api-upkeep"),
        asyncio.create_task(_settle_forever(app[API]), name="api-settle"),
    ]
    yield
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _settle_forever(api: Api) -> None:
    while True:
        await asyncio.sleep(SETTLE_AFTER / 2)
        unsettled = api.webhooks.unsettled(SETTLE_AFTER)
        if not unsettled:
            continue
        try:
            settled = await settle_webhooks(api, unsettled)
        except ApiError as exc:  # Kafka unavailable: the keys stay unsettled, next turn
            log.warning("api: settling refused webhook records: %s", exc.message)
            continue
        except Exception:
            log.exception("api: settling refused webhook records failed")
            continue
        log.info("api: settled %d webhook(s) after refused records", settled)


async def _purge_forever(api: Api) -> None:
    while True:
        await asyncio.sleep(api.settings.maintenance_interval)
        # Every replica purges; the deletes are idempotent, so overlap costs nothing.
        await _purge(
            api,
            "event ids",
            api.store.event_claims.purge,
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
