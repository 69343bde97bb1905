"""Idempotency-Key records: who claimed a key first, and the answer it got.

A key is claimed by one statement (an upsert on the primary key), so of any number of API
replicas racing on one key exactly one wins, without a read-then-write in between. The claim
holder runs the request and then completes the row with its answer, or releases it (the answer
is not to be kept, e.g. a server error); everyone else is shown the row as it is.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import Engine, Table, and_, delete, or_, select, update

from hookstream.store.engine import write_transaction
from hookstream.store.purge import purge_before
from hookstream.store.schema import idempotency_keys

# A claim can vanish between the failed upsert and the read that follows (released by its
# holder, or purged); then claiming again is right, and it settles within a try or two.
_CLAIM_TRIES = 5

Insert = Callable[[Table], Any]
_KEY_COLUMNS = ("scope", "idempotency_key")


@dataclass(frozen=True, slots=True)
class KeyedRequest:
    """One POST sent with an Idempotency-Key, as the store tells repeats apart."""

    scope: str
    key: str
    principal: str
    fingerprint: str
    method: str
    path: str


@dataclass(frozen=True, slots=True)
class StoredAnswer:
    status: int
    headers: dict[str, str]
    # Sealed by the API; the store never sees it in the clear.
    body: str


@dataclass(frozen=True, slots=True)
class Claimed:
    """This caller holds the key: run the request, then `complete` or `release`."""

    token: str


@dataclass(frozen=True, slots=True)
class Taken:
    """Someone claimed the key first; `answer` is None while that request is in flight."""

    principal: str
    fingerprint: str
    method: str
    path: str
    answer: StoredAnswer | None


class IdempotencyKeys:
    def __init__(self, engine: Engine, insert: Insert) -> None:
        self._engine = engine
        self._insert = insert

    def claim(
        self, request: KeyedRequest, now_ms: int, window_ms: int, lease_ms: int
    ) -> Claimed | Taken:
        """Claim the key for `request`, or say who has it.

        A row created before the window counts as absent and is overwritten. So is a claim in
        flight for longer than `lease_ms` (its replica died mid-request) when the same caller
        repeats the same request: waiting for it any longer would only keep answering 409.
        """
        for _ in range(_CLAIM_TRIES):
            token = uuid.uuid4().hex
            if self._upsert(request, token, now_ms, window_ms, lease_ms):
                return Claimed(token)
            taken = self._read(request)
            if taken is not None:
                return taken
        raise RuntimeError(f"Idempotency-Key {request.key!r} kept changing hands; retry")

    def _upsert(
        self, request: KeyedRequest, token: str, now_ms: int, window_ms: int, lease_ms: int
    ) -> bool:
        k = idempotency_keys.c
        values = {
            "scope": request.scope,
            "idempotency_key": request.key,
            "principal": request.principal,
            "fingerprint": request.fingerprint,
            "method": request.method,
            "path": request.path,
            "claim_token": token,
            "claimed_at_ms": now_ms,
            "created_at_ms": now_ms,
            "status": None,
            "headers": None,
            "body": None,
        }
        stmt = self._insert(idempotency_keys).values(**values)
        stmt = stmt.on_conflict_do_update(
            index_elements=["scope", "idempotency_key"],
            set_={name: stmt.excluded[name] for name in values if name not in _KEY_COLUMNS},
            where=or_(
                k.created_at_ms <= now_ms - window_ms,
                and_(
                    k.status.is_(None),
                    k.claimed_at_ms <= now_ms - lease_ms,
                    k.principal == request.principal,
                    k.fingerprint == request.fingerprint,
                ),
            ),
        )
        # RETURNING rather than rowcount: psycopg reports no rowcount for an upsert.
        with write_transaction(self._engine) as conn:
            won = conn.execute(stmt.returning(k.claim_token)).first()
        return won is not None and won.claim_token == token

    def _read(self, request: KeyedRequest) -> Taken | None:
        k = idempotency_keys.c
        with self._engine.connect() as conn:
            row = conn.execute(
                select(idempotency_keys).where(
                    k.scope == request.scope, k.idempotency_key == request.key
                )
            ).first()
        if row is None:
            return None
        answer = None
        if row.status is not None:
            answer = StoredAnswer(row.status, _headers(row.headers), row.body or "")
        return Taken(row.principal, row.fingerprint, row.method, row.path, answer)

    def complete(self, request: KeyedRequest, claim: Claimed, answer: StoredAnswer) -> bool:
        """Keep `answer` for the key; False if the claim was lost meanwhile (taken over)."""
        k = idempotency_keys.c
        with write_transaction(self._engine) as conn:
            result = conn.execute(
                update(idempotency_keys)
                .where(*self._held(request, claim))
                .values(
                    status=answer.status,
                    headers=orjson.dumps(answer.headers).decode(),
                    body=answer.body,
                )
                .returning(k.claim_token)
            )
            return result.first() is not None

    def release(self, request: KeyedRequest, claim: Claimed) -> None:
        """Forget the claim, so that the next repeat runs the request anew."""
        with write_transaction(self._engine) as conn:
            conn.execute(delete(idempotency_keys).where(*self._held(request, claim)))

    def purge(self, before_ms: int, batch_size: int = 1000) -> int:
        """Drop keys first used before `before_ms`, one short transaction per batch."""
        k = idempotency_keys.c
        return purge_before(
            self._engine,
            idempotency_keys,
            (k.scope, k.idempotency_key),
            k.created_at_ms,
            before_ms,
            batch_size,
        )

    @staticmethod
    def _held(request: KeyedRequest, claim: Claimed) -> tuple[Any, ...]:
        k = idempotency_keys.c
        return (
            k.scope == request.scope,
            k.idempotency_key == request.key,
            k.claim_token == claim.token,
        )


def _headers(stored: str | None) -> dict[str, str]:
    if not stored:
        return {}
    loaded = orjson.loads(stored)
    return {str(name): str(value) for name, value in loaded.items()}
