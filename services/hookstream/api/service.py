"""`hookstream run api`: serve the management API until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import logging
import threading

from aiohttp import web

from hookstream.api.app import create_app
from hookstream.core import tracing
from hookstream.core.settings import Settings
from hookstream.runtime import eventloop
from hookstream.runtime.runner import configure_logging, configure_tracing, serve_until_signalled

log = logging.getLogger(__name__)

KEEPALIVE_SECONDS = 75.0


def run_api(settings: Settings) -> int:
    configure_logging(settings)
    configure_tracing("api")
    if not settings.api_keys:
        log.warning("api: HOOKSTREAM_API_KEYS is empty; every /v1 request will be refused")

    async def serve(stop: asyncio.Event, _ready: threading.Event) -> None:
        await serve_app(create_app(settings), settings, stop)

    # The asyncio runner's core only: the api answers /metrics, /healthz and /readyz on its
    # own port (its readiness is checked per probe, not a flag), and an error at start (the
    # store unreachable, the port taken) ends the process uncaught, status 1 and traceback.
    try:
        eventloop.run(serve_until_signalled("api", serve, threading.Event()))
    finally:
        tracing.shutdown()
    log.info("api: stopped")
    return 0


async def serve_app(app: web.Application, settings: Settings, stop: asyncio.Event) -> None:
    """Serve `app` on the api's host and port until `stop` is set, then shut it down.

    aiohttp's idiom for an app on a loop of one's own (what `web.run_app` does inside).
    The shutdown stops accepting connections, lets in-flight requests finish for up to
    `shutdown_grace`, then runs the cleanup contexts (producer flush, views, store).
    """
    runner = web.AppRunner(
        app,
        shutdown_timeout=settings.shutdown_grace,
        # What run_app sets (the handler's own default is an hour): idle keep-alive
        # connections close after 75 s, as they always have here.
        keepalive_timeout=KEEPALIVE_SECONDS,
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.api_host, settings.api_port)
        await site.start()
        log.info("api: serving on %s", site.name)
        await stop.wait()
    finally:
        await runner.cleanup()
