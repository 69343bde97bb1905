"""Publishing events to `events`, for `POST /v1/events` and its batch form.

An event is first made into its record (`prepare`: tenant, type, size, all checked), then
any number of them are published together (`publish`): the client-chosen ids are claimed
in one statement, every record is produced in one go and awaited once, and the claims are
confirmed in one statement more. So a batch of 500 events costs about what one event does
in round trips, and of requests racing on an id (on any replica) one alone publishes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum

import orjson
from aiohttp import web

from hookstream.api.auth import Caller
from hookstream.api.coalesce import Coalescer
from hookstream.api.context import Api
from hookstream.api.errors import ApiError
from hookstream.api.models import EventPublish
from hookstream.api.times import iso, normalize_iso, now_ms
from hookstream.api.validation import check_event_type
from hookstream.core import tracing
from hookstream.core.records import Event
from hookstream.runtime.writer import Record
from hookstream.store import ClaimedEvent, EventTaken
from hookstream.store.event_claims import EventKey

log = logging.getLogger(__name__)

# An event id's claim lapses this long after its last renewal, and its publish renews it
# every few seconds while Kafka has not acknowledged it: an API replica that dies mid-publish
# holds the id for seconds, not minutes, and a repeat then publishes it (at least once).
EVENT_CLAIM_LEASE_MS = 15_000
EVENT_CLAIM_RENEW_SECONDS = 3.0


# Ids claimed (or confirmed) in one store transaction at most: a few batches' worth.
MAX_GROUP = 2_000


class _ClaimGroups:
    """The claims and confirmations of concurrent requests, each group in one transaction
    (api/coalesce.py): 32 clients posting single events cost a transaction a round, not 32."""

    def __init__(self, api: Api) -> None:
        self._api = api
        self.claims: Coalescer[EventKey, ClaimedEvent | EventTaken] = Coalescer(
            self._claim, MAX_GROUP
        )
        self.confirms: Coalescer[tuple[ClaimedEvent, EventKey], None] = Coalescer(
            self._confirm, MAX_GROUP
        )
        # Claims whose publish waits for Kafka, all renewed by one task (none per request).
        self._publishing: dict[int, tuple[ClaimedEvent, list[EventKey]]] = {}
        self._renewer: asyncio.Task[None] | None = None

    @contextlib.contextmanager
    def publishing(self, claim: ClaimedEvent, keys: list[EventKey]) -> Iterator[None]:
        """Keep `keys` claimed while the block runs (a broker may be away for minutes)."""
        ticket = id(keys)
        self._publishing[ticket] = (claim, keys)
        if self._renewer is None:
            self._renewer = asyncio.create_task(self._renew())
        try:
            yield
        finally:
            del self._publishing[ticket]

    async def _renew(self) -> None:
        api = self._api
        try:
            while self._publishing:
                await asyncio.sleep(EVENT_CLAIM_RENEW_SECONDS)
                # Those that began less than a renewal ago are renewed a little early: no matter.
                held = list(self._publishing.values())
                if not held:
                    break
                try:
                    await api.blocking(api.store.event_claims.renew_all, held, now_ms())
                except Exception as exc:
                    # The claims may lapse: a repeat then publishes again (at least once).
                    count = sum(len(keys) for _, keys in held)
                    log.warning("api: %d event claims could not be renewed: %s", count, exc)
        finally:
            self._renewer = None

    async def _claim(self, keys: list[EventKey]) -> list[ClaimedEvent | EventTaken]:
        # Two requests of one group may name the same id: the first claims it, and the
        # other finds it in flight, as if it had come a moment later.
        distinct = list(dict.fromkeys(keys))
        api = self._api
        window_ms = int(api.settings.event_idempotency_window * 1000)
        answered = await api.blocking(
            api.store.event_claims.claim, distinct, now_ms(), window_ms, EVENT_CLAIM_LEASE_MS
        )
        first = dict(zip(distinct, answered, strict=True))
        seen: set[EventKey] = set()
        results: list[ClaimedEvent | EventTaken] = []
        for key in keys:
            answer = first[key]
            if key in seen and isinstance(answer, ClaimedEvent):
                answer = EventTaken.IN_FLIGHT
            seen.add(key)
            results.append(answer)
        return results

    async def _confirm(self, confirmed: list[tuple[ClaimedEvent, EventKey]]) -> list[None]:
        by_claim: dict[ClaimedEvent, list[EventKey]] = {}
        for claim, key in confirmed:
            by_claim.setdefault(claim, []).append(key)
        claims = self._api.store.event_claims
        await self._api.blocking(claims.confirm_all, list(by_claim.items()))
        return [None] * len(confirmed)


_GROUPS: weakref.WeakKeyDictionary[Api, _ClaimGroups] = weakref.WeakKeyDictionary()


def _groups(api: Api) -> _ClaimGroups:
    groups = _GROUPS.get(api)
    if groups is None:
        groups = _GROUPS[api] = _ClaimGroups(api)
    return groups


class Published(Enum):
    """What became of an event handed to `publish`, beside the EventTaken answers."""

    NOW = "published"


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One event made into its record, ready to publish."""

    key: EventKey  # (tenant id, event id)
    claimed: bool  # a client-chosen id: claimed before it is published
    record: Record


def trace_context(request: web.Request) -> list[tuple[str, bytes]]:
    """The caller's W3C trace context, from its request, to ride on its events."""
    return [
        (name, value.encode("latin-1"))
        for name in (tracing.TRACEPARENT, tracing.TRACESTATE)
        for value in request.headers.getall(name, ())
    ]


def prepare(
    api: Api, caller: Caller, body: EventPublish, at_ms: int, trace: tracing.TraceHeaders
) -> Outgoing:
    """The event's record; ApiError (422, 403, 413) naming what is wrong with it."""
    tenant_id = caller.write_tenant(body.tenant_id)
    check_event_type(api, body.type)
    event_id = body.id or f"evt_{uuid.uuid4().hex}"
    value = api.codec.write(
        Event(
            id=event_id,
            type=body.type,
            tenant_id=tenant_id,
            occurred_at=normalize_iso("occurred_at", body.occurred_at)
            if body.occurred_at is not None
            else iso(at_ms),
            data=orjson.dumps(body.data).decode(),
            published_at_ms=at_ms,
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
    record = Record(api.topics.events, tenant_id.encode(), value, trace or None)
    return Outgoing((tenant_id, event_id), body.id is not None, record)


async def publish(api: Api, events: list[Outgoing]) -> list[Published | EventTaken]:
    """Publish `events` (distinct keys), each once; per event, published now or taken.

    Only a client-chosen id can be retried, so only those are claimed. The claim comes first,
    so that of requests racing on an id one alone publishes; it is confirmed after the
    publish and released if the publish failed (the failure is raised: 503), so a repeat
    never reports a publish that did not happen.
    """
    keys = [event.key for event in events if event.claimed]
    answers: dict[EventKey, ClaimedEvent | EventTaken] = {}
    groups = _groups(api)
    if keys:
        answers = dict(zip(keys, await groups.claims.submit(keys), strict=True))
    going = [e for e in events if not e.claimed or isinstance(answers[e.key], ClaimedEvent)]
    ours = [e.key for e in going if e.claimed]
    # One token for every id claimed in one call.
    claim = next((a for a in answers.values() if isinstance(a, ClaimedEvent)), None)
    if going:
        held = groups.publishing(claim, ours) if claim is not None else contextlib.nullcontext()
        try:
            with held:
                await api.produce([event.record for event in going])
        except BaseException:
            if claim is not None:
                await _release(api, claim, ours)
            raise
        if claim is not None:
            try:
                await groups.confirms.submit([(claim, key) for key in ours])
            except Exception as exc:
                # Published all the same: repeats answer 409 until the claims' lease lapses,
                # then publish again (at least once; receivers drop repeats by `webhook-id`).
                log.warning("api: the publish of %d events was not confirmed: %s", len(ours), exc)
    results: list[Published | EventTaken] = []
    for event in events:
        answer = answers.get(event.key)
        results.append(answer if isinstance(answer, EventTaken) else Published.NOW)
    return results


async def _release(api: Api, claim: ClaimedEvent, keys: list[EventKey]) -> None:
    try:
        await api.blocking(api.store.event_claims.release, claim, keys)
    except Exception as exc:
        # The claims then lapse after their lease; until then repeats answer 409.
        log.warning("api: %d event claims could not be released: %s", len(keys), exc)
