"""Every topic value as a typed, frozen record: what services pass around, and its Avro form."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields, replace
from enum import StrEnum
from typing import Any, ClassVar, NewType

# A signing secret as the `webhooks` topic holds it: `enc:v1:<kid>:<base64>` ciphertext, or a
# plaintext written before encryption at rest (or by another producer). Never signed with as it
# is: `Keyring.decrypt` turns it into the plaintext `whsec_...` that `signing.signer` takes.
StoredSecret = NewType("StoredSecret", str)

# The last millisecond of year 9999, the end of what a datetime can represent: the range of
# every Unix-millisecond field a record may carry.
MAX_UNIX_MS = 253_402_300_799_999


@dataclass(frozen=True, slots=True)
class WebhookSecret:
    value: StoredSecret
    # After this instant (ms) the secret no longer signs: the end of a rotation's grace window.
    not_after_ms: int | None = None

    def valid_at(self, now_ms: int) -> bool:
        return self.not_after_ms is None or now_ms < self.not_after_ms


@dataclass(frozen=True, slots=True)
class WebhookHeader:
    """A custom header added to every request to its webhook."""

    name: str
    # A sensitive header's value is stored encrypted (`Keyring.seal_header`), like a secret.
    value: str
    sensitive: bool = False


@dataclass(frozen=True, slots=True)
class Webhook:
    SCHEMA: ClassVar[str] = "Webhook"

    id: str
    tenant_id: str
    name: str
    url: str
    events: tuple[str, ...]
    secrets: tuple[WebhookSecret, ...]
    enabled: bool = True
    description: str | None = None
    owner_id: str | None = None
    disabled_reason: str | None = None
    created_at_ms: int = 0
    updated_at_ms: int = 0
    # Optimistic concurrency (core.versions): a write carries the version it read + 1.
    version: int = 0
    # Delivery settings; None = the sender's own (adaptive concurrency, no rate limit, the
    # global request timeout).
    max_concurrency: int | None = None
    rate_limit: float | None = None
    timeout_seconds: int | None = None
    headers: tuple[WebhookHeader, ...] = ()

    def stored_secrets_at(self, now_ms: int) -> list[StoredSecret]:
        """The stored secrets that sign at `now_ms`, in order; `Keyring.decrypt` opens them."""
        return [secret.value for secret in self.secrets if secret.valid_at(now_ms)]

    def next_version(self, now_ms: int, **changes: Any) -> Webhook:
        """This webhook with `changes`, as a write based on this version."""
        return replace(self, **changes, updated_at_ms=now_ms, version=self.version + 1)

    def disabled(self, reason: str, now_ms: int) -> Webhook:
        """A machine writer's change: only `enabled` and the reason, on this version."""
        return self.next_version(now_ms, enabled=False, disabled_reason=reason)

    def to_record(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "tenant_id": self.tenant_id,
            "name": self.name,
            "url": self.url,
            "description": self.description,
            "events": list(self.events),
            "enabled": self.enabled,
            "owner_id": self.owner_id,
            "secrets": [{"value": s.value, "not_after_ms": s.not_after_ms} for s in self.secrets],
            "disabled_reason": self.disabled_reason,
            "created_at_ms": self.created_at_ms,
            "updated_at_ms": self.updated_at_ms,
            "version": self.version,
            "max_concurrency": self.max_concurrency,
            "rate_limit": self.rate_limit,
            "timeout_seconds": self.timeout_seconds,
            "headers": [
                {"name": h.name, "value": h.value, "sensitive": h.sensitive} for h in self.headers
            ],
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Webhook:
        return cls(
            id=record["id"],
            tenant_id=record["tenant_id"],
            name=record["name"],
            url=record["url"],
            description=record.get("description"),
            events=tuple(record["events"]),
            enabled=record["enabled"],
            owner_id=record.get("owner_id"),
            secrets=tuple(
                WebhookSecret(StoredSecret(s["value"]), s.get("not_after_ms"))
                for s in record["secrets"]
            ),
            disabled_reason=record.get("disabled_reason"),
            created_at_ms=record["created_at_ms"],
            updated_at_ms=record["updated_at_ms"],
            version=record.get("version", 0),
            max_concurrency=record.get("max_concurrency"),
            rate_limit=record.get("rate_limit"),
            timeout_seconds=record.get("timeout_seconds"),
            headers=tuple(
                WebhookHeader(h["name"], h["value"], h.get("sensitive", False))
                for h in record.get("headers") or ()
            ),
        )


@dataclass(frozen=True, slots=True)
class Principal:
    """A platform user who can own webhooks; permissions come from the platform."""

    SCHEMA: ClassVar[str] = "Principal"

    id: str
    tenant_id: str
    permissions: frozenset[str]

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Principal:
        return cls(record["id"], record["tenant_id"], frozenset(record["permissions"]))

    def to_record(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "tenant_id": self.tenant_id,
            "permissions": sorted(self.permissions),
        }


# -- the vocabulary shared by every service ------------------------------------------------


class Trigger(StrEnum):
    """Why an attempt is made: the router's schedule, an operator's replay, or a test event."""

    SCHEDULED = "scheduled"
    MANUAL = "manual"
    TEST = "test"


class Outcome(StrEnum):
    """What one attempt came to (SPEC's outcome table)."""

    SUCCESS = "success"
    TEMPORARY_FAILURE = "temporary_failure"
    PERMANENT_FAILURE = "permanent_failure"
    EXHAUSTED = "exhausted"
    SKIPPED = "skipped"
    REFUSED = "refused"


class DeliveryStatus(StrEnum):
    """Where a delivery stands, from its latest attempt's outcome."""

    SUCCEEDED = "succeeded"
    RETRYING = "retrying"
    FAILED = "failed"
    SKIPPED = "skipped"


# A retry record's due time rides in this header too, so the sender can hold a record back
# (and `hookstream status` can show what waits) without decoding it.
DUE_AT_HEADER = "hookstream-due-at-ms"

# The event type of test events (`POST /v1/webhooks/{id}/test`): its deliveries' trigger is `test`.
TEST_EVENT_TYPE = "webhook.test"

# Consumer group names, before `HOOKSTREAM_CONSUMER_GROUP_PREFIX`.
ROUTER_GROUP = "router"
SENDER_GROUP = "sender"
LOG_SINK_GROUP = "log-sink"


def due_at_header(due_at_ms: int) -> tuple[str, bytes]:
    return DUE_AT_HEADER, str(due_at_ms).encode()


def due_at_from_headers(headers: Iterable[tuple[str, bytes | None]]) -> int | None:
    """The due time a retry record's header names; None without the header, 0 if unreadable."""
    for key, value in headers:
        if key == DUE_AT_HEADER:
            try:
                return int(value or b"")
            except ValueError:
                return 0
    return None


# -- one record type per topic value --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Event:
    """A domain event on the `events` topic. `data` is the JSON text of its data object."""

    SCHEMA: ClassVar[str] = "Event"

    id: str
    type: str
    tenant_id: str
    occurred_at: str
    data: str
    published_at_ms: int | None = None

    def to_record(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": self.type,
            "tenant_id": self.tenant_id,
            "occurred_at": self.occurred_at,
            "data": self.data,
            "published_at_ms": self.published_at_ms,
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Event:
        return cls(
            id=record["id"],
            type=record["type"],
            tenant_id=record["tenant_id"],
            occurred_at=record["occurred_at"],
            data=record["data"],
            published_at_ms=record.get("published_at_ms"),
        )


# The router makes one Delivery per webhook an event goes to, so Delivery and Retry are built
# and encoded cheaply: not slotted, each keeps its Avro record as its `__dict__`, set in one
# step (a frozen dataclass's generated __init__ calls `object.__setattr__` once per field), and
# `to_record` copies that dict instead of building one field by field.
_set = object.__setattr__


@dataclass(frozen=True, init=False)
class Delivery:
    """One event routed to one webhook (`deliveries`), with the exact body every attempt sends.

    `attempt` is the number of the attempt this record asks for (1 = first).
    """

    SCHEMA: ClassVar[str] = "Delivery"

    delivery_id: str
    event_id: str
    event_type: str
    tenant_id: str
    webhook_id: str
    body: bytes
    attempt: int
    trigger: Trigger
    created_at_ms: int

    def __init__(
        self,
        delivery_id: str,
        event_id: str,
        event_type: str,
        tenant_id: str,
        webhook_id: str,
        body: bytes,
        attempt: int,
        trigger: Trigger,
        created_at_ms: int,
    ) -> None:
        _set(
            self,
            "__dict__",
            {
                "delivery_id": delivery_id,
                "event_id": event_id,
                "event_type": event_type,
                "tenant_id": tenant_id,
                "webhook_id": webhook_id,
                "body": body,
                "attempt": attempt,
                "trigger": trigger,  # a StrEnum: written as its text
                # Deliveries are due at once; the Avro field is there because Retry shares
                # the names. Not a field of this class: only a Retry has a due time.
                "due_at_ms": 0,
                "created_at_ms": created_at_ms,
            },
        )

    def retry(
        self, attempt: int, due_at_ms: int, tier: str, trigger: Trigger = Trigger.SCHEDULED
    ) -> Retry:
        """This delivery waiting in retry tier `tier` until `due_at_ms`, for attempt `attempt`.

        A retry is the schedule's even after a replay or a test: only the attempt an operator
        or a test asked for is theirs. `trigger` is for putting off that very attempt.
        """
        return Retry(
            self.delivery_id,
            self.event_id,
            self.event_type,
            self.tenant_id,
            self.webhook_id,
            self.body,
            attempt,
            trigger,
            self.created_at_ms,
            due_at_ms=due_at_ms,
            tier=tier,
        )

    def to_record(self) -> dict[str, Any]:
        return self.__dict__.copy()

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Delivery:
        return cls(**_delivery_fields(record))


@dataclass(frozen=True, init=False)
class Retry(Delivery):
    """A delivery waiting in a retry tier topic: never sent before `due_at_ms`.

    A Delivery itself, so the sender treats both alike. `tier` is the tier topic's suffix (5m).
    """

    SCHEMA: ClassVar[str] = "Retry"

    due_at_ms: int
    tier: str

    def __init__(
        self,
        delivery_id: str,
        event_id: str,
        event_type: str,
        tenant_id: str,
        webhook_id: str,
        body: bytes,
        attempt: int,
        trigger: Trigger,
        created_at_ms: int,
        due_at_ms: int,
        tier: str,
    ) -> None:
        Delivery.__init__(
            self,
            delivery_id,
            event_id,
            event_type,
            tenant_id,
            webhook_id,
            body,
            attempt,
            trigger,
            created_at_ms,
        )
        self.__dict__["due_at_ms"] = due_at_ms
        self.__dict__["tier"] = tier

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Retry:
        return cls(**_delivery_fields(record), due_at_ms=record["due_at_ms"], tier=record["tier"])


def _delivery_fields(record: Mapping[str, Any]) -> dict[str, Any]:
    trigger = record["trigger"]
    try:
        trigger = Trigger(trigger)
    except ValueError:
        raise InvalidRecordError(
            f"trigger {trigger!r} is not one of {', '.join(sorted(Trigger))}"
        ) from None
    values = {name: record[name] for name in _DELIVERY_FIELDS}
    values["trigger"] = trigger
    return values


_DELIVERY_FIELDS = tuple(f.name for f in fields(Delivery))


@dataclass(frozen=True, slots=True)
class Attempt:
    """One HTTP delivery attempt, on `delivery-log`: read by the store and by analysts.

    `outcome` is an `Outcome`, or the text of one a newer sender knows and this one does not.
    `body` is set on a delivery's first attempt and on manual and test attempts.
    """

    SCHEMA: ClassVar[str] = "Attempt"

    attempt_id: str
    delivery_id: str
    event_id: str
    webhook_id: str
    tenant_id: str
    event_type: str
    attempt_number: int
    trigger: str
    url: str
    started_at_ms: int
    duration_ms: int
    outcome: str
    status_code: int | None = None
    error: str | None = None
    response_body: str | None = None
    next_attempt_at_ms: int | None = None
    webhook_disabled: bool = False
    body: bytes | None = None

    def to_record(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _ATTEMPT_FIELDS}

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Attempt:
        return cls(**{name: record[name] for name in _ATTEMPT_FIELDS if name in record})


_ATTEMPT_FIELDS = tuple(f.name for f in fields(Attempt))


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A record a service refused (`dlq`), its key, value and headers kept byte for byte."""

    SCHEMA: ClassVar[str] = "DeadLetter"

    reason: str
    detail: str
    source_topic: str
    source_partition: int
    source_offset: int
    value: bytes
    failed_at_ms: int
    key: bytes | None = None
    webhook_id: str | None = None
    delivery_id: str | None = None
    event_id: str | None = None
    error_type: str | None = None
    service: str | None = None
    headers: tuple[tuple[str, bytes | None], ...] = ()

    def to_record(self) -> dict[str, Any]:
        record = {name: getattr(self, name) for name in _DEAD_LETTER_FIELDS}
        record["headers"] = [{"key": key, "value": value} for key, value in self.headers]
        return record

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> DeadLetter:
        values = {name: record[name] for name in _DEAD_LETTER_FIELDS if name in record}
        headers = tuple((h["key"], h.get("value")) for h in record.get("headers") or ())
        return cls(**values, headers=headers)


_DEAD_LETTER_FIELDS = tuple(f.name for f in fields(DeadLetter) if f.name != "headers")

TopicRecord = Event | Delivery | Retry | Attempt | DeadLetter | Webhook | Principal


class InvalidRecordError(ValueError):
    """A decoded record whose values its type does not allow; the message says which."""
