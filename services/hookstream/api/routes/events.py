"""POST /v1/events: publish a domain event to `events`, at most once per id and window."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

import orjson
from aiohttp import hdrs, web
from opentelemetry.trace import SpanKind, Status, StatusCode

from hookstream.api.auth import caller
from hookstream.api.bodies import read_body, respond
from hookstream.api.context import Api
from hookstream.api.docs import operation
from hookstream.api.errors import ApiError
from hookstream.api.lookup import api_of
from hookstream.api.metrics import API_EVENTS
from hookstream.api.models import EventAccepted, EventPublish
from hookstream.api.times import iso, normalize_iso, now_ms
from hookstream.api.validation import check_event_type
from hookstream.core import tracing
from hookstream.core.records import Event
from hookstream.runtime.writer import Record
from hookstream.store import ClaimedEvent, EventTaken

log = logging.getLogger(__name__)

routes = web.RouteTableDef()

# An event id's claim lapses this long after its last renewal, and its publish renews it
# every few seconds while Kafka has not acknowledged it: an API replica that dies mid-publish
# holds the id for seconds, not minutes, and a repeat then publishes it (at least once).
EVENT_CLAIM_LEASE_MS = 15_000
EVENT_CLAIM_RENEW_SECONDS = 3.0


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
    trace_in = [
        (name, value.encode("latin-1"))
        for name in (tracing.TRACEPARENT, tracing.TRACESTATE)
        for value in request.headers.getall(name, ())
    ]
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
    tenant_id = caller(request).write_tenant(body.tenant_id)
    check_event_type(api, body.type)
    now = now_ms()
    event_id = body.id or f"evt_{uuid.uuid4().hex}"
    value = api.codec.write(
        Event(
            id=event_id,
            type=body.type,
            tenant_id=tenant_id,
            occurred_at=normalize_iso("occurred_at", body.occurred_at)
            if body.occurred_at is not None
            else iso(now),
            data=orjson.dumps(body.data).decode(),
            published_at_ms=now,
        )
    )
    # The router refuses records above this size, so the API refuses them first, visibly.
    limit = api.settings.max_payload_bytes
    if len(value) > limit:
        raise ApiError(
            413,
            "payload_too_large",
            f"the event is {len(value)} bytes encoded, above the limit of {limit} bytes",
        )
    # Only a client-chosen id can be retried, so only those are claimed. The claim comes
    # first, in one statement, so that of requests racing on an id (on any replica) one alone
    # publishes; it is confirmed after the publish and released if the publish failed, so a
    # repeat never reports a publish that did not happen.
    if body.id is None:
        await api.produce([Record(api.topics.events, tenant_id.encode(), value, trace or None)])
        API_EVENTS.labels("published").inc()
        return respond(EventAccepted(id=event_id, duplicate=False), 202)
    window_ms = int(api.settings.event_idempotency_window * 1000)
    claim = await api.blocking(
        api.store.claim_event, tenant_id, event_id, now, window_ms, EVENT_CLAIM_LEASE_MS
    )
    if claim is EventTaken.PUBLISHED:
        API_EVENTS.labels("duplicate").inc()
        return respond(EventAccepted(id=event_id, duplicate=True), 202)
    if claim is EventTaken.IN_FLIGHT:
        API_EVENTS.labels("in_progress").inc()
        raise ApiError(
            409,
            "event_in_progress",
            f"event {event_id} is being published by another request; retry shortly",
            {"id": event_id},
            headers={hdrs.RETRY_AFTER: "1"},
        )
    renewing = asyncio.create_task(_renew(api, tenant_id, event_id, claim))
    try:
        await api.produce([Record(api.topics.events, tenant_id.encode(), value, trace or None)])
    except BaseException:
        await _release(api, tenant_id, event_id, claim)
        raise
    finally:
        renewing.cancel()
    try:
        await api.blocking(api.store.confirm_event, tenant_id, event_id, claim)
    except Exception as exc:
        # Published all the same: repeats answer 409 until the claim's lease lapses, then
        # publish it again (at least once; receivers drop repeats by `webhook-id`).
        log.warning("api: the publish of event %s was not confirmed: %s", event_id, exc)
    API_EVENTS.labels("published").inc()
    return respond(EventAccepted(id=event_id, duplicate=False), 202)


async def _renew(api: Api, tenant_id: str, event_id: str, claim: ClaimedEvent) -> None:
    """Keep the claim while its publish waits for Kafka (a broker may be away for minutes)."""
    while True:
        await asyncio.sleep(EVENT_CLAIM_RENEW_SECONDS)
        try:
            now_ms = int(time.time() * 1000)
            await api.blocking(api.store.renew_event, tenant_id, event_id, claim, now_ms)
        except Exception as exc:
            # The claim may lapse: a repeat then publishes again (at least once).
            log.warning("api: the claim of event %s could not be renewed: %s", event_id, exc)


async def _release(api: Api, tenant_id: str, event_id: str, claim: ClaimedEvent) -> None:
    try:
        await api.blocking(api.store.release_event, tenant_id, event_id, claim)
    except Exception as exc:
        # The claim then lapses after its lease; until then repeats answer 409.
        log.warning("api: the claim of event %s could not be released: %s", event_id, exc)
