"""The API's Prometheus series; requests labelled by route template so cardinality stays bounded."""

from __future__ import annotations

import time

from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import Counter, Histogram

API_REQUESTS = Counter(
    "hookstream_api_requests_total",
    "Management API requests, by method, route template and status.",
    ["method", "route", "status"],
)
API_REQUEST_DURATION = Histogram(
    "hookstream_api_request_duration_seconds",
    "Time to answer a management API request, by method and route template.",
    ["method", "route"],
)
API_EVENTS = Counter(
    "hookstream_api_events_total",
    "Events received on POST /v1/events: published, duplicate (not published again), or "
    "in_progress (its id being published by another request: 409).",
    ["result"],
)
API_WEBHOOK_WRITES = Counter(
    "hookstream_api_webhook_writes_total",
    "Webhook changes the API wrote to the webhooks topic, by action.",
    ["action"],
)
API_IDEMPOTENCY = Counter(
    "hookstream_api_idempotency_keys_total",
    "POSTs sent with an Idempotency-Key: first (run), replayed (the kept answer), in_progress "
    "(409), mismatch (422: another request under the same key).",
    ["result"],
)

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
