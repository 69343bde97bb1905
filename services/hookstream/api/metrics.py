"""Request metrics for the API, labelled by route template so cardinality stays bounded."""

from __future__ import annotations

import time

from aiohttp import web
from aiohttp.typedefs import Handler

from hookstream.core.metrics import API_REQUEST_DURATION, API_REQUESTS

UNMATCHED = "unmatched"


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    finally:
        route = _route_label(request)
        API_REQUESTS.labels(request.method, route, str(status)).inc()
        API_REQUEST_DURATION.labels(request.method, route).observe(time.perf_counter() - started)


def _route_label(request: web.Request) -> str:
    # The template (/v1/webhooks/{id}), never the raw path: ids would explode the series.
    resource = request.match_info.route.resource
    if resource is None or request.match_info.http_exception is not None:
        return UNMATCHED
    return resource.canonical
