"""The aiohttp application: middlewares, lifecycle contexts and every route table."""

from __future__ import annotations

import orjson
from aiohttp import web

from hookstream.api.auth import ApiKeys, auth_middleware
from hookstream.api.console.app import add_console
from hookstream.api.context import SETTINGS, api_context
from hookstream.api.errors import MAX_REQUEST_BYTES, error_middleware
from hookstream.api.idempotency import idempotency_middleware
from hookstream.api.metrics import metrics_middleware
from hookstream.api.openapi import build_document
from hookstream.api.routes import (
    catalog,
    deliveries,
    event_batch,
    events,
    ops,
    principals,
    webhook_actions,
    webhooks,
)
from hookstream.api.upkeep import upkeep_context
from hookstream.core.settings import Settings

ROUTE_TABLES = (
    webhooks.routes,
    webhook_actions.routes,
    deliveries.routes,
    catalog.routes,
    events.routes,
    event_batch.routes,
    principals.routes,
    ops.routes,
)


def create_app(settings: Settings) -> web.Application:
    api_keys = ApiKeys(settings.api_keys)
    app = web.Application(
        client_max_size=MAX_REQUEST_BYTES,
        # Outermost first: metrics see the final status, errors wrap auth failures too, and
        # Idempotency-Keys are claimed for a known caller only.
        middlewares=[
            metrics_middleware,
            error_middleware,
            auth_middleware(api_keys),
            idempotency_middleware,
        ],
    )
    app[SETTINGS] = settings
    # Order matters: upkeep uses what api_context built, and is torn down before it.
    app.cleanup_ctx.append(api_context)
    app.cleanup_ctx.append(upkeep_context)
    for table in ROUTE_TABLES:
        app.add_routes(table)
    add_console(app, api_keys)
    app[ops.OPENAPI] = orjson.dumps(build_document(app))
    return app
