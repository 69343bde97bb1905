"""POST /v1/events/batch: up to 500 events in one request, one result per event.

Each event is checked on its own, as `POST /v1/events` checks one: a bad event is answered
`rejected` with the error that route would give it, and the others are published all the
same. The events that pass are published together (api/publishing.py): their ids claimed in
one statement, their records produced at once and acknowledged once.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import orjson
from aiohttp import web

from hookstream.api.auth import Caller, caller
from hookstream.api.bodies import is_ident, respond, validated
from hookstream.api.context import Api
from hookstream.api.docs import operation
from hookstream.api.errors import ApiError, body_in_time
from hookstream.api.lookup import api_of
from hookstream.api.metrics import API_EVENTS
from hookstream.api.models import (
    MAX_BATCH_EVENTS,
    ErrorBody,
    EventBatch,
    EventBatchItem,
    EventBatchResult,
    EventPublish,
)
from hookstream.api.publishing import Outgoing, Published, prepare, publish, trace_context
from hookstream.api.times import now_ms
from hookstream.core import tracing
from hookstream.store import EventTaken
from hookstream.store.event_claims import EventKey

routes = web.RouteTableDef()

_STATUS = {
    Published.NOW: "accepted",
    EventTaken.PUBLISHED: "duplicate",
    EventTaken.IN_FLIGHT: "in_progress",
}


@routes.post("/v1/events/batch")
@operation(
    f"Publish up to {MAX_BATCH_EVENTS} events at once, with one result per event",
    "events",
    response=EventBatchResult,
    body=EventBatch,
    errors=(400, 413, 422, 503),
    description=(
        "Each event is read and checked on its own, exactly as `POST /v1/events` checks one, "
        "and its result (at its `index`) says what became of it: `accepted`, `duplicate` (its "
        "`id` was accepted before, or earlier in this batch), `in_progress` (another request "
        "is publishing that id: retry that event) or `rejected` with the error the single "
        "route would answer. An id repeated within the idempotency window is not published "
        "again. The request itself fails only when the body is not a batch of objects (400), "
        "holds more than 500 events (422) or more than 1 MiB (413), or Kafka cannot take the "
        "events (503): then none was published."
    ),
)
async def publish_batch(request: web.Request) -> web.StreamResponse:
    api = api_of(request)
    items = await _items(request)
    now = now_ms()
    who = caller(request)
    # Every event carries the request's own trace context to the router, as on /v1/events.
    trace = tracing.passed_on(trace_context(request))
    results: list[EventBatchItem | None] = [None] * len(items)
    going: list[tuple[int, Outgoing]] = []
    claimed: set[EventKey] = set()
    for index, item in enumerate(items):
        try:
            event = _prepared(api, who, item, now, trace)
        except ApiError as error:
            results[index] = _rejected(index, item, error)
            continue
        if event.claimed and event.key in claimed:
            # The same id twice in one batch: published once, like two requests.
            results[index] = EventBatchItem(index=index, id=event.key[1], status="duplicate")
            continue
        claimed.add(event.key)
        going.append((index, event))
    answers = await publish(api, [event for _, event in going])
    for (index, event), answer in zip(going, answers, strict=True):
        results[index] = EventBatchItem(index=index, id=event.key[1], status=_STATUS[answer])
    done = [result for result in results if result is not None]
    counts: Counter[str] = Counter(result.status for result in done)
    for status, label in (
        ("accepted", "published"),
        ("duplicate", "duplicate"),
        ("in_progress", "in_progress"),
    ):
        if counts[status]:
            API_EVENTS.labels(label).inc(counts[status])
    return respond(
        EventBatchResult(
            results=done,
            accepted=counts["accepted"],
            duplicates=counts["duplicate"],
            in_progress=counts["in_progress"],
            rejected=counts["rejected"],
        )
    )


async def _items(request: web.Request) -> list[dict[str, Any]]:
    """The request's events, not yet read one by one: 400 unless it is a batch."""
    try:
        body = orjson.loads(await body_in_time(request.read()))
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "invalid_json", f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_body", "request body must be a JSON object")
    unknown = sorted(set(body) - {"events"})
    if unknown:
        raise ApiError(
            400, "invalid_body", f"unknown field(s): {', '.join(unknown)}", {"fields": unknown}
        )
    events = body.get("events")
    if not isinstance(events, list) or not events:
        raise ApiError(400, "invalid_body", "`events` must be a non-empty list of events")
    if not all(isinstance(item, dict) for item in events):
        raise ApiError(400, "invalid_body", "each of `events` must be a JSON object")
    if len(events) > MAX_BATCH_EVENTS:
        raise ApiError(
            422,
            "batch_too_large",
            f"{len(events)} events in one batch; at most {MAX_BATCH_EVENTS}",
            {"events": len(events), "limit": MAX_BATCH_EVENTS},
        )
    return events


def _prepared(api: Api, who: Caller, item: Any, now: int, trace: tracing.TraceHeaders) -> Outgoing:
    if not isinstance(item, dict):
        raise ApiError(400, "invalid_body", "each event must be a JSON object")
    return prepare(api, who, validated(EventPublish, item), now, trace)


def _rejected(index: int, item: Any, error: ApiError) -> EventBatchItem:
    wanted = item.get("id") if isinstance(item, dict) else None
    return EventBatchItem(
        index=index,
        id=wanted if isinstance(wanted, str) and is_ident(wanted) else None,
        status="rejected",
        error=ErrorBody(code=error.code, message=error.message, details=error.details),
    )
