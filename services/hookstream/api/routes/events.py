"""POST /v1/events: publish a domain event to `events`, at most once per id and window."""

from __future__ import annotations

import logging

from aiohttp import hdrs, web
from opentelemetry.trace import SpanKind, Status, StatusCode

from hookstream.api.auth import caller
from hookstream.api.bodies import read_body, respond
from hookstream.api.docs import operation
from hookstream.api.errors import ApiError
from hookstream.api.lookup import api_of
from hookstream.api.metrics import API_EVENTS
from hookstream.api.models import EventAccepted, EventPublish
from hookstream.api.publishing import prepare, publish, trace_context
from hookstream.api.times import now_ms
from hookstream.core import tracing
from hookstream.store import EventTaken

log = logging.getLogger(__name__)

routes = web.RouteTableDef()


@routes.post("/v1/events")
@operation(
    "Publish an event for routing to the tenant's subscribed webhooks",
    "events",
    status=202,
    response=EventAccepted,
    body=EventPublish,
    errors=(400, 409, 413, 422, 503),
    description=(
        "An event whose `id` was already accepted within the idempotency window is answered "
        "with the same id and not published again; while a request with that id is being "
        "published, another is answered 409 (retry after a second). A retry of a request "
        "whose answer was lost may publish it again, unless it carries the first request's "
        "`Idempotency-Key`: "
        "delivery is at least once, and receivers drop repeats by their `webhook-id`."
    ),
)
async def publish_event(request: web.Request) -> web.StreamResponse:
    # The caller's trace context, from its request, rides on the event to the router.
    trace_in = trace_context(request)
    if not tracing.enabled():
        return await _publish(request, tracing.passed_on(trace_in))
    span = tracing.tracer().start_span(
        "POST /v1/events", context=tracing.context_from(trace_in), kind=SpanKind.SERVER
    )
    status = 500
    try:
        response = await _publish(request, tracing.headers_of(span))
        status = response.status
        return response
    except (ApiError, web.HTTPException) as exc:
        status = exc.status
        raise
    finally:
        if span.is_recording():
            # Fixed route and method only: the query and the caller's headers stay out.
            span.set_attributes(
                {
                    "http.request.method": "POST",
                    "http.route": "/v1/events",
                    "url.path": "/v1/events",
                    "url.scheme": request.scheme,
                    "http.response.status_code": status,
                }
            )
            if status >= 500:
                span.set_status(Status(StatusCode.ERROR))
        span.end()


async def _publish(request: web.Request, trace: tracing.TraceHeaders) -> web.StreamResponse:
    api = api_of(request)
    body = await read_body(request, EventPublish)
    now = now_ms()
    event = prepare(api, caller(request), body, now, trace)
    [answer] = await publish(api, [event])
    event_id = event.key[1]
    if answer is EventTaken.IN_FLIGHT:
        API_EVENTS.labels("in_progress").inc()
        raise ApiError(
            409,
            "event_in_progress",
            f"event {event_id} is being published by another request; retry shortly",
            {"id": event_id},
            headers={hdrs.RETRY_AFTER: "1"},
        )
    duplicate = answer is EventTaken.PUBLISHED
    API_EVENTS.labels("duplicate" if duplicate else "published").inc()
    return respond(EventAccepted(id=event_id, duplicate=duplicate), 202)
