"""The store's tables. Migrations under `migrations/versions` must create exactly this."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

# One row per HTTP attempt, straight from the delivery-log topic; the source of truth the
# other two tables are derived from.
attempts = Table(
    "attempts",
    metadata,
    Column("attempt_id", String, primary_key=True),
    Column("delivery_id", String, nullable=False),
    Column("event_id", String, nullable=False),
    Column("webhook_id", String, nullable=False),
    Column("tenant_id", String, nullable=False),
    Column("event_type", String, nullable=False),
    Column("attempt_number", Integer, nullable=False),
    Column("trigger", String, nullable=False),
    Column("url", Text, nullable=False),
    Column("started_at_ms", BigInteger, nullable=False),
    Column("duration_ms", Integer, nullable=False),
    Column("status_code", Integer, nullable=True),
    Column("outcome", String, nullable=False),
    Column("error", Text, nullable=True),
    Column("response_body", Text, nullable=True),
    Column("next_attempt_at_ms", BigInteger, nullable=True),
    Column("webhook_disabled", Boolean, nullable=False),
    Index("ix_attempts_webhook_started", "webhook_id", "started_at_ms"),
    Index("ix_attempts_delivery_started", "delivery_id", "started_at_ms"),
    Index("ix_attempts_started", "started_at_ms"),
    Index("ix_attempts_tenant_started", "tenant_id", "started_at_ms"),
)

# One row per delivery, recomputed from `attempts` so the log can be replayed any number
# of times; the indexes serve the newest-first, filtered pages of the delivery log.
deliveries = Table(
    "deliveries",
    metadata,
    Column("delivery_id", String, primary_key=True),
    Column("tenant_id", String, nullable=False),
    Column("webhook_id", String, nullable=False),
    Column("event_id", String, nullable=False),
    Column("event_type", String, nullable=False),
    Column("status", String, nullable=False),
    Column("attempt_count", Integer, nullable=False),
    Column("last_status_code", Integer, nullable=True),
    Column("last_error", Text, nullable=True),
    Column("last_attempt_at_ms", BigInteger, nullable=False),
    Column("next_attempt_at_ms", BigInteger, nullable=True),
    Column("created_at_ms", BigInteger, nullable=False),
    Column("updated_at_ms", BigInteger, nullable=False),
    Column("body", LargeBinary, nullable=True),
    Index("ix_deliveries_tenant_created", "tenant_id", "created_at_ms", "delivery_id"),
    Index("ix_deliveries_webhook_created", "webhook_id", "created_at_ms", "delivery_id"),
    Index("ix_deliveries_webhook_status_created", "webhook_id", "status", "created_at_ms"),
    Index("ix_deliveries_event_type_created", "event_type", "created_at_ms"),
    Index("ix_deliveries_status_created", "status", "created_at_ms"),
)

webhook_health = Table(
    "webhook_health",
    metadata,
    Column("webhook_id", String, primary_key=True),
    Column("tenant_id", String, nullable=False),
    Column("last_outcome", String, nullable=False),
    Column("last_status_code", Integer, nullable=True),
    Column("last_attempt_at_ms", BigInteger, nullable=False),
    Column("failing_since_ms", BigInteger, nullable=True),
    # The failing_since_ms of the streak an auto-disable was issued for: a streak is acted
    # on once, and a new streak (after a success) gets a different value.
    Column("auto_disabled_streak_ms", BigInteger, nullable=True),
    # Once a streak was acted on, the instant from which upkeep looks at it again: a webhook
    # re-enabled without a fix, failing on, is due once it has failed that long since.
    Column("auto_disable_recheck_ms", BigInteger, nullable=True),
    Index("ix_webhook_health_failing_since", "failing_since_ms"),
)

# Event ids the API has accepted (POST /v1/events), so that a client retrying the same event
# through any API replica publishes it once; rows older than the idempotency window are purged.
accepted_events = Table(
    "accepted_events",
    metadata,
    Column("tenant_id", String, primary_key=True),
    Column("event_id", String, primary_key=True),
    Column("accepted_at_ms", BigInteger, nullable=False),
    # While the publish is in flight, the token of the request that claimed the id (it alone
    # publishes); NULL once the event is published.
    Column("claim_token", String, nullable=True),
    Index("ix_accepted_events_accepted_at", "accepted_at_ms"),
)

# The answers of API POSTs sent with an `Idempotency-Key`, so that a client repeating one
# through any API replica gets the first answer instead of a second effect. The primary key
# is the claim: the first insert wins, whichever replica makes it. A row whose `status` is
# null is a request still in flight; rows older than the window are purged.
idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    # The tenant of the calling key, or "*" for platform admin keys.
    Column("scope", String, primary_key=True),
    Column("idempotency_key", String, primary_key=True),
    # Which API key sent it, and a digest of what it asked (method, path, query, body).
    Column("principal", String, nullable=False),
    Column("fingerprint", String, nullable=False),
    # The first request's method and path, named in the 422 of a mismatching repeat.
    Column("method", String, nullable=False),
    Column("path", Text, nullable=False),
    # Who holds the claim, and since when: an abandoned claim (its replica died) is taken over.
    Column("claim_token", String, nullable=False),
    Column("claimed_at_ms", BigInteger, nullable=False),
    Column("created_at_ms", BigInteger, nullable=False),
    Column("status", Integer, nullable=True),
    # JSON object of the answer's headers, and its body sealed under the encryption key (it
    # may hold a webhook's signing secret).
    Column("headers", Text, nullable=True),
    Column("body", Text, nullable=True),
    Index("ix_idempotency_keys_created_at", "created_at_ms"),
)
