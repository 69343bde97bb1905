"""Event ids claimed before they are published, behind idempotent `POST /v1/events` and its
batch form: of requests racing on an id (on any API replica) one alone publishes it.

A claim covers any number of ids at once, with one token: the batch route claims its events
in one statement, and confirms, renews or releases them in one more. The single route is a
batch of one.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Engine,
    Table,
    and_,
    bindparam,
    delete,
    or_,
    select,
    tuple_,
    update,
)

from hookstream.store.engine import write_transaction
from hookstream.store.purge import purge_before
from hookstream.store.rows import ClaimedEvent, EventTaken
from hookstream.store.schema import accepted_events

EventKey = tuple[str, str]  # (tenant id, event id)

# Rounds of claiming for ids released (or purged) between the claim and the look at who
# holds them: each round claims only those again.
_CLAIM_ROUNDS = 5


class EventClaims:
    def __init__(self, engine: Engine, insert: Callable[[Table], Any]) -> None:
        self._engine = engine
        self._insert = insert

    def claim(
        self, keys: Sequence[EventKey], now_ms: int, window_ms: int, lease_ms: int
    ) -> list[ClaimedEvent | EventTaken]:
        """Claim every id of `keys` (distinct) before publishing, or say who holds each.

        One upsert for all of them, so of any number of requests racing on an id exactly one
        wins it and publishes. The winner then `confirm`s (published) or `release`s (it was
        not), so a claim never reports a publish that did not happen. A record older than the
        window counts as absent; so does a claim not renewed for `lease_ms` (its replica died
        mid-publish: publishing again is the at-least-once side of that).
        """
        if len(set(keys)) != len(keys):
            raise ValueError("claim each event id once")
        token = uuid.uuid4().hex
        answers: dict[EventKey, ClaimedEvent | EventTaken] = {}
        pending = list(keys)
        for _ in range(_CLAIM_ROUNDS):
            if not pending:
                break
            pending = self._claim_round(pending, token, now_ms, window_ms, lease_ms, answers)
        if pending:
            raise RuntimeError(f"event id {pending[0][1]!r} kept changing hands; retry")
        return [answers[key] for key in keys]

    def _claim_round(
        self,
        keys: list[EventKey],
        token: str,
        now_ms: int,
        window_ms: int,
        lease_ms: int,
        answers: dict[EventKey, ClaimedEvent | EventTaken],
    ) -> list[EventKey]:
        e = accepted_events.c
        # In key order: two batches sharing ids then lock their rows in the same order, and
        # one waits for the other instead of each holding what the other needs (deadlock).
        rows = [
            {"tenant_id": t, "event_id": i, "accepted_at_ms": now_ms, "claim_token": token}
            for t, i in sorted(keys)
        ]
        # One statement executed for many rows (SQLAlchemy's insertmanyvalues): compiled
        # once and cached, where a VALUES list of each batch's length compiled anew each time.
        stmt = self._insert(accepted_events)
        stmt = stmt.on_conflict_do_update(
            index_elements=["tenant_id", "event_id"],
            set_={"accepted_at_ms": stmt.excluded.accepted_at_ms, "claim_token": token},
            where=or_(
                e.accepted_at_ms <= now_ms - window_ms,
                and_(e.claim_token.is_not(None), e.accepted_at_ms <= now_ms - lease_ms),
            ),
        )
        claimed = ClaimedEvent(token)
        # RETURNING rather than rowcount: psycopg reports no rowcount for an upsert here.
        with write_transaction(self._engine) as conn:
            returned = conn.execute(stmt.returning(e.tenant_id, e.event_id, e.claim_token), rows)
            won = {(r.tenant_id, r.event_id) for r in returned if r.claim_token == token}
            lost = [key for key in keys if key not in won]
            held = (
                {
                    (row.tenant_id, row.event_id): row.claim_token
                    for row in conn.execute(
                        select(e.tenant_id, e.event_id, e.claim_token).where(
                            tuple_(e.tenant_id, e.event_id).in_(lost)
                        )
                    )
                }
                if lost
                else {}
            )
        for key in won:
            answers[key] = claimed
        again = []
        for key in lost:
            if key not in held:
                again.append(key)  # released or purged between the two statements
            else:
                answers[key] = EventTaken.PUBLISHED if held[key] is None else EventTaken.IN_FLIGHT
        return again

    def confirm(self, claim: ClaimedEvent, keys: Sequence[EventKey]) -> int:
        """The claimed events are published: repeats in the window are duplicates from now
        on. How many were still ours (a lapsed claim may have been taken over)."""
        return self.confirm_all([(claim, keys)])

    def confirm_all(self, claims: Sequence[tuple[ClaimedEvent, Sequence[EventKey]]]) -> int:
        """`confirm` for the claims of several requests: one statement executed for every
        row, in one transaction (a statement per request cost more than the writes)."""
        rows = [
            {"b_tenant": tenant, "b_event": event, "b_token": claim.token}
            for claim, keys in claims
            for tenant, event in keys
        ]
        if not rows:
            return 0
        with write_transaction(self._engine) as conn:
            result = conn.execute(_CONFIRM_ONE, rows)
        return result.rowcount

    def renew_all(
        self, claims: Sequence[tuple[ClaimedEvent, Sequence[EventKey]]], now_ms: int
    ) -> int:
        """Their publishes are still going on: each claim's lease runs from `now_ms` again,
        where it still holds; how many rows that was. One transaction for all of them."""
        return self._update(claims, {"accepted_at_ms": now_ms})

    def release(self, claim: ClaimedEvent, keys: Sequence[EventKey]) -> None:
        """The claimed events were not published: the next request with their ids does it."""
        if keys:
            with write_transaction(self._engine) as conn:
                conn.execute(delete(accepted_events).where(*_held(claim, keys)))

    def purge(self, before_ms: int, batch_size: int = 5000) -> int:
        """Drop event claims made before `before_ms`, one short transaction per batch."""
        e = accepted_events.c
        return purge_before(
            self._engine,
            accepted_events,
            (e.tenant_id, e.event_id),
            e.accepted_at_ms,
            before_ms,
            batch_size,
        )

    def _update(
        self,
        claims: Sequence[tuple[ClaimedEvent, Sequence[EventKey]]],
        values: dict[str, object],
    ) -> int:
        """Set `values` on the rows still held by each claim, in one transaction."""
        e = accepted_events.c
        changed = 0
        with write_transaction(self._engine) as conn:
            for claim, keys in claims:
                if keys:
                    result = conn.execute(
                        update(accepted_events)
                        .where(*_held(claim, keys))
                        .values(**values)
                        .returning(e.event_id)
                    )
                    changed += len(result.all())
        return changed


_CONFIRM_ONE = (
    update(accepted_events)
    .where(
        accepted_events.c.tenant_id == bindparam("b_tenant"),
        accepted_events.c.event_id == bindparam("b_event"),
        accepted_events.c.claim_token == bindparam("b_token"),
    )
    .values(claim_token=None)
)


def _held(claim: ClaimedEvent, keys: Sequence[EventKey]) -> tuple[ColumnElement[bool], ...]:
    e = accepted_events.c
    # The key first, so the primary key finds the rows; the token says they are still ours.
    return (tuple_(e.tenant_id, e.event_id).in_(list(keys)), e.claim_token == claim.token)
