"""The delivery log in SQL: attempts, the deliveries derived from them, and endpoint health.

Synchronous on purpose: one SQLAlchemy Core code path for SQLite and PostgreSQL, which the
async API runs in a thread executor. Every write is keyed and recomputed from the attempts
table, so re-reading the delivery-log topic (after a crash, or from the beginning) leaves
the same rows.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Row,
    Select,
    Table,
    case,
    delete,
    exists,
    func,
    literal,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from hookstream.core.records import Attempt, DeliveryStatus
from hookstream.store.cursor import decode_cursor, encode_cursor
from hookstream.store.derive import (
    DELIVERY_STATUSES,
    HealthState,
    attempt_order,
    delivery_status,
    fold_health,
)
from hookstream.store.engine import make_engine, write_transaction
from hookstream.store.event_claims import EventClaims
from hookstream.store.idempotency import IdempotencyKeys
from hookstream.store.purge import IN_CHUNK
from hookstream.store.rows import (
    DeliveryDetail,
    DeliveryRow,
    FailingWebhook,
    Health,
    Page,
)
from hookstream.store.schema import attempts, deliveries, webhook_health
from hookstream.store.versioning import migrate_engine

DAY_MS = 24 * 60 * 60 * 1000
MAX_PAGE_SIZE = 1000
_T = TypeVar("_T")
Insert = postgresql.Insert | sqlite.Insert

_ATTEMPT_COLUMNS = tuple(column.name for column in attempts.columns)
_DERIVED_DELIVERY_COLUMNS = tuple(
    column.name for column in deliveries.columns if column.name not in ("delivery_id", "body")
)
_HEALTH_STATE_COLUMNS = (
    "webhook_id",
    "tenant_id",
    "last_outcome",
    "last_status_code",
    "last_attempt_at_ms",
    "failing_since_ms",
)


class Store:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        # Both dialects spell ON CONFLICT the same way but through their own Insert class.
        self._insert: Callable[[Table], Insert] = (
            postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
        )
        # The API's Idempotency-Key records and event-id claims, in modules of their own.
        self.idempotency_keys = IdempotencyKeys(engine, self._insert)
        self.event_claims = EventClaims(engine, self._insert)

    @classmethod
    def open(cls, url: str, *, migrate: bool = True) -> Store:
        engine = make_engine(url)
        try:
            if migrate:
                migrate_engine(engine)
        except BaseException:
            engine.dispose()
            raise
        return cls(engine)

    def close(self) -> None:
        self._engine.dispose()

    # -- writing --------------------------------------------------------------------------

    def record_attempts(self, attempts_in: Sequence[Attempt]) -> None:
        """Store a batch of delivery-log records in one transaction; safe to repeat."""
        batch = list({attempt.attempt_id: attempt for attempt in attempts_in}.values())
        if not batch:
            return
        with write_transaction(self._engine) as conn:
            conn.execute(
                self._insert(attempts).on_conflict_do_nothing(index_elements=["attempt_id"]),
                [_attempt_values(attempt) for attempt in batch],
            )
            self._refresh_deliveries(conn, batch)
            self._refresh_health(conn, batch)

    def _refresh_deliveries(self, conn: Connection, batch: list[Attempt]) -> None:
        bodies: dict[str, bytes] = {}
        for attempt in sorted(batch, key=attempt_order):
            if attempt.body is not None:
                bodies.setdefault(attempt.delivery_id, bytes(attempt.body))
        values: list[dict[str, Any]] = []
        for chunk in _chunks(sorted({attempt.delivery_id for attempt in batch})):
            for row in conn.execute(_latest_attempts(chunk)):
                derived = dict(row._mapping)
                derived["status"] = str(delivery_status(derived.pop("outcome")))
                derived["body"] = bodies.get(derived["delivery_id"])
                values.append(derived)
        stmt = self._insert(deliveries)
        conn.execute(
            stmt.on_conflict_do_update(
                index_elements=["delivery_id"],
                set_={
                    **{name: stmt.excluded[name] for name in _DERIVED_DELIVERY_COLUMNS},
                    # The log carries the body only on some attempts: keep the first one seen.
                    "body": func.coalesce(deliveries.c.body, stmt.excluded.body),
                },
            ),
            values,
        )

    def _refresh_health(self, conn: Connection, batch: list[Attempt]) -> None:
        by_webhook: dict[str, list[Attempt]] = defaultdict(list)
        for attempt in batch:
            by_webhook[attempt.webhook_id].append(attempt)
        stored: dict[str, HealthState] = {}
        for chunk in _chunks(sorted(by_webhook)):
            query = (
                select(*(webhook_health.c[name] for name in _HEALTH_STATE_COLUMNS))
                .where(webhook_health.c.webhook_id.in_(chunk))
                .order_by(webhook_health.c.webhook_id)
                # PostgreSQL: a concurrent writer (during a rebalance) waits instead of
                # folding from the same stale state. SQLite already holds the write lock.
                .with_for_update()
            )
            for row in conn.execute(query):
                stored[row.webhook_id] = HealthState(**row._mapping)
        changed: list[dict[str, Any]] = []
        for webhook_id, webhook_attempts in sorted(by_webhook.items()):
            before = stored.get(webhook_id)
            after = fold_health(before, webhook_attempts)
            if after is not None and after != before:
                changed.append({name: getattr(after, name) for name in _HEALTH_STATE_COLUMNS})
        if not changed:
            return
        stmt = self._insert(webhook_health)
        conn.execute(
            stmt.on_conflict_do_update(
                index_elements=["webhook_id"],
                set_={name: stmt.excluded[name] for name in _HEALTH_STATE_COLUMNS[1:]},
            ),
            changed,
        )

    def mark_auto_disabled(
        self, webhook_id: str, failing_since_ms: int, recheck_from_ms: int | None = None
    ) -> bool:
        """Record that the streak starting at `failing_since_ms` was acted on; False if it was.

        `webhooks_failing_since` offers the streak again once its cutoff reaches
        `recheck_from_ms` (never when None), so a webhook re-enabled in the same streak is
        looked at again.
        """
        h = webhook_health.c
        with write_transaction(self._engine) as conn:
            row = conn.execute(
                select(h.auto_disabled_streak_ms)
                .where(h.webhook_id == webhook_id)
                .with_for_update()
            ).first()
            if row is None:
                return False
            conn.execute(
                update(webhook_health)
                .where(h.webhook_id == webhook_id)
                .values(
                    auto_disabled_streak_ms=failing_since_ms,
                    auto_disable_recheck_ms=recheck_from_ms,
                )
            )
            return bool(row.auto_disabled_streak_ms != failing_since_ms)

    def delete_attempts_before(self, cutoff_ms: int, batch_size: int = 5000) -> int:
        """Retention: drop attempts started before `cutoff_ms`, and deliveries left empty.

        Each batch is its own short transaction, so the log sink is never blocked for long.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        a, d = attempts.c, deliveries.c
        deleted = 0
        while True:
            with write_transaction(self._engine) as conn:
                doomed = conn.execute(
                    select(a.attempt_id, a.delivery_id)
                    .where(a.started_at_ms < cutoff_ms)
                    .order_by(a.started_at_ms)
                    .limit(batch_size)
                ).all()
                for chunk in _chunks([row.attempt_id for row in doomed]):
                    conn.execute(delete(attempts).where(a.attempt_id.in_(chunk)))
                for chunk in _chunks(sorted({row.delivery_id for row in doomed})):
                    conn.execute(
                        delete(deliveries).where(
                            d.delivery_id.in_(chunk),
                            ~exists().where(a.delivery_id == d.delivery_id),
                        )
                    )
            deleted += len(doomed)
            if len(doomed) < batch_size:
                return deleted

    def ping(self) -> None:
        """Raise if the database cannot answer a query (readiness checks)."""
        with self._engine.connect() as conn:
            conn.execute(select(literal(1))).one()

    # -- reading --------------------------------------------------------------------------

    def list_deliveries(
        self,
        *,
        tenant_id: str | None,
        webhook_id: str | None = None,
        event_type: str | None = None,
        status: str | None = None,
        since_ms: int | None = None,
        until_ms: int | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page:
        """Newest first by (created_at_ms, delivery_id); `tenant_id=None` means every tenant.

        The time range applies to created_at_ms (the first attempt) and is [since, until).
        """
        if not 1 <= limit <= MAX_PAGE_SIZE:
            raise ValueError(f"limit must be between 1 and {MAX_PAGE_SIZE}, got {limit}")
        if status is not None and status not in DELIVERY_STATUSES:
            known = ", ".join(sorted(DELIVERY_STATUSES))
            raise ValueError(f"unknown delivery status {status!r}: expected one of {known}")
        d = deliveries.c
        where: list[ColumnElement[bool]] = []
        if tenant_id is not None:
            where.append(d.tenant_id == tenant_id)
        if webhook_id is not None:
            where.append(d.webhook_id == webhook_id)
        if event_type is not None:
            where.append(d.event_type == event_type)
        if status is not None:
            where.append(d.status == status)
        if since_ms is not None:
            where.append(d.created_at_ms >= since_ms)
        if until_ms is not None:
            where.append(d.created_at_ms < until_ms)
        if cursor is not None:
            created_at_ms, delivery_id = decode_cursor(cursor)
            where.append(
                tuple_(d.created_at_ms, d.delivery_id)
                < tuple_(literal(created_at_ms), literal(delivery_id))
            )
        query = (
            select(deliveries)
            .where(*where)
            .order_by(d.created_at_ms.desc(), d.delivery_id.desc())
            .limit(limit + 1)
        )
        with self._engine.connect() as conn:
            rows = [_delivery_row(row) for row in conn.execute(query)]
        if len(rows) <= limit:
            return Page(items=rows, next_cursor=None)
        items = rows[:limit]
        last = items[-1]
        return Page(items=items, next_cursor=encode_cursor(last.created_at_ms, last.delivery_id))

    def get_delivery(self, delivery_id: str, tenant_id: str | None) -> DeliveryDetail | None:
        """The delivery and its attempts, oldest first; None if absent or another tenant's."""
        d, a = deliveries.c, attempts.c
        query = select(deliveries).where(d.delivery_id == delivery_id)
        if tenant_id is not None:
            query = query.where(d.tenant_id == tenant_id)
        with self._engine.connect() as conn:
            row = conn.execute(query).first()
            if row is None:
                return None
            attempt_rows = conn.execute(
                select(attempts)
                .where(a.delivery_id == delivery_id)
                .order_by(a.started_at_ms, a.attempt_number, a.attempt_id)
            )
            return DeliveryDetail(
                delivery=_delivery_row(row),
                attempts=[Attempt(**row._mapping) for row in attempt_rows],
            )

    def failed_deliveries(
        self, webhook_id: str, since_ms: int, until_ms: int | None = None
    ) -> list[DeliveryRow]:
        """What "recover" replays: failed deliveries whose last attempt is in [since, until)."""
        d = deliveries.c
        query = select(deliveries).where(
            d.webhook_id == webhook_id,
            d.status == str(DeliveryStatus.FAILED),
            d.last_attempt_at_ms >= since_ms,
        )
        if until_ms is not None:
            query = query.where(d.last_attempt_at_ms < until_ms)
        query = query.order_by(d.created_at_ms, d.delivery_id)
        with self._engine.connect() as conn:
            return [_delivery_row(row) for row in conn.execute(query)]

    def webhook_health(self, webhook_id: str, now_ms: int) -> Health:
        """Health as of `now_ms`; the 24 h figures count attempts that reached the endpoint."""
        h, a = webhook_health.c, attempts.c
        succeeded = func.sum(case((a.outcome == "success", 1), else_=0))
        window = select(func.count(), succeeded).where(
            a.webhook_id == webhook_id,
            a.started_at_ms > now_ms - DAY_MS,
            a.started_at_ms <= now_ms,
            a.outcome != "skipped",
        )
        with self._engine.connect() as conn:
            state = conn.execute(select(webhook_health).where(h.webhook_id == webhook_id)).first()
            total, successes = conn.execute(window).one()
        return Health(
            webhook_id=webhook_id,
            last_outcome=state.last_outcome if state is not None else None,
            last_status_code=state.last_status_code if state is not None else None,
            last_attempt_at_ms=state.last_attempt_at_ms if state is not None else None,
            failing_since_ms=state.failing_since_ms if state is not None else None,
            success_rate_24h=int(successes) / total if total else None,
            attempts_24h=int(total),
        )

    def webhooks_failing_since(self, cutoff_ms: int) -> list[FailingWebhook]:
        """Webhooks failing continuously since `cutoff_ms` or earlier, not yet acted on, or
        acted on and due a recheck by `cutoff_ms`."""
        h = webhook_health.c
        acted_on = h.auto_disabled_streak_ms == h.failing_since_ms
        query = (
            select(
                h.webhook_id,
                h.tenant_id,
                h.failing_since_ms,
                h.last_attempt_at_ms,
                func.coalesce(acted_on, False).label("acted_on"),
            )
            .where(
                h.failing_since_ms <= cutoff_ms,
                or_(
                    h.auto_disabled_streak_ms.is_(None),
                    h.auto_disabled_streak_ms != h.failing_since_ms,
                    h.auto_disable_recheck_ms <= cutoff_ms,
                ),
            )
            .order_by(h.failing_since_ms, h.webhook_id)
        )
        with self._engine.connect() as conn:
            return [
                FailingWebhook(**{**row._mapping, "acted_on": bool(row.acted_on)})
                for row in conn.execute(query)
            ]


def _attempt_values(attempt: Attempt) -> dict[str, Any]:
    values = {name: getattr(attempt, name) for name in _ATTEMPT_COLUMNS}
    values["outcome"] = str(attempt.outcome)
    values["trigger"] = str(attempt.trigger)
    return values


def _latest_attempts(delivery_ids: list[str]) -> Select[Any]:
    """Per delivery: its latest attempt's facts plus aggregates over all its attempts."""
    a = attempts.c
    ranked = (
        select(
            a.delivery_id,
            a.tenant_id,
            a.webhook_id,
            a.event_id,
            a.event_type,
            a.outcome,
            a.status_code.label("last_status_code"),
            a.error.label("last_error"),
            a.started_at_ms.label("last_attempt_at_ms"),
            a.next_attempt_at_ms,
            func.row_number()
            .over(
                partition_by=a.delivery_id,
                order_by=(a.started_at_ms.desc(), a.attempt_number.desc(), a.attempt_id.desc()),
            )
            .label("recency"),
            func.count().over(partition_by=a.delivery_id).label("attempt_count"),
            func.min(a.started_at_ms).over(partition_by=a.delivery_id).label("created_at_ms"),
            # Derived, not wall-clock, so that a replay writes the same value again.
            func.max(a.started_at_ms + a.duration_ms)
            .over(partition_by=a.delivery_id)
            .label("updated_at_ms"),
        )
        .where(a.delivery_id.in_(delivery_ids))
        .subquery()
    )
    return select(*(c for c in ranked.c if c.name != "recency")).where(ranked.c.recency == 1)


def _delivery_row(row: Row[Any]) -> DeliveryRow:
    values = dict(row._mapping)
    if values["body"] is not None:
        # PostgreSQL drivers may hand back memoryview for bytea.
        values["body"] = bytes(values["body"])
    return DeliveryRow(**values)


def _chunks(values: Iterable[_T], size: int = IN_CHUNK) -> Iterator[list[_T]]:
    chunk: list[_T] = []
    for value in values:
        chunk.append(value)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
