"""`hookstream run api`: serve the management API until SIGTERM or SIGINT."""

from __future__ import annotations

import logging

from aiohttp import web

from hookstream.api.app import create_app
from hookstream.core import eventloop
from hookstream.core.runner import configure_logging
from hookstream.core.settings import Settings

log = logging.getLogger(__name__)


def run_api(settings: Settings) -> int:
    configure_logging(settings.log_level)
    if not settings.api_keys:
        log.warning("api: HOOKSTREAM_API_KEYS is empty; every /v1 request will be refused")
    # run_app turns SIGTERM/SIGINT into a graceful exit: it stops accepting connections,
    # lets in-flight requests finish for up to shutdown_timeout, then runs the cleanup
    # contexts (producer flush, views, store).
    web.run_app(
        create_app(settings),
        host=settings.api_host,
        port=settings.api_port,
        shutdown_timeout=settings.shutdown_grace,
        print=lambda message: log.info("api: %s", message),
        loop=eventloop.new_event_loop(),
    )
    log.info("api: stopped")
    return 0
