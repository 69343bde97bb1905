"""The API's request and response bodies; their JSON schemas also feed /openapi.json."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, get_args

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from hookstream.core.records import DeliveryStatus
from hookstream.endpoints.headers import MAX_HEADERS, name_problem, value_problem
from hookstream.events.catalog import ALL_EVENTS, default_catalog
from hookstream.store import MAX_PAGE_SIZE
from hookstream.store.cursor import decode_cursor
from hookstream.store.errors import InvalidCursorError

MAX_GRACE_SECONDS = 7 * 24 * 3600
MAX_CONCURRENCY = 256
MAX_RATE_LIMIT = 100_000.0
MAX_TIMEOUT_SECONDS = 30
# What a sensitive header's value reads as; sending it back as a value is refused, so a form
# filled from a read cannot store the placeholder.
REDACTED = "********"
# orjson writes at most 254 levels of nesting, and a delivery's body wraps `data` in one more.
MAX_DATA_DEPTH = 253
_MALFORMED_CURSOR = "malformed cursor: pass back the next_cursor of a previous page unchanged"
# Control characters (C0, DEL, C1) and lone surrogates: PostgreSQL refuses NUL, a URL holding
# CR or LF is checked as another URL than the one stored (urlsplit drops them), and a name
# holding any of them is no one's intent.
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
# Free text keeps what a browser's textarea sends: tabs and line breaks.
_TEXT_CONTROLS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")


def _printable(value: str) -> str:
    """Identifiers end up in headers, Kafka keys and store columns, which is why the router
    and the sender drop records whose ids are not printable: refuse them here, visibly."""
    if not value.isprintable():
        found = next(char for char in value if not char.isprintable())
        raise PydanticCustomError(
            "not_printable",
            "must contain only printable characters; found U+{code}",
            {"code": f"{ord(found):04X}"},
        )
    if value[:1] == " " or value[-1:] == " ":
        # The router refuses such ids too: receivers strip them from the `webhook-id` header.
        raise PydanticCustomError("edge_space", "must not start or end with a space")
    return value


def _refuse(pattern: re.Pattern[str], value: str) -> str:
    found = pattern.search(value)
    if found is not None:
        raise PydanticCustomError(
            "control_character",
            "must not contain control characters; found U+{code}",
            {"code": f"{ord(found.group()):04X}"},
        )
    return value


def _no_controls(value: str) -> str:
    return _refuse(_CONTROLS, value)


def _text(value: str) -> str:
    return _refuse(_TEXT_CONTROLS, value)


def _cursor(value: str) -> str:
    """A cursor as `next_cursor` hands it out; anything else is refused before the store."""
    try:
        _, last_id = decode_cursor(value)
    except InvalidCursorError as exc:
        raise PydanticCustomError("cursor", str(exc)) from None
    # Every id a page can end on is printable (the router and the sender see to it).
    if not last_id.isprintable():
        raise PydanticCustomError("cursor", _MALFORMED_CURSOR)
    return value


def _deliverable(data: dict[str, Any]) -> dict[str, Any]:
    """`data` no more deeply nested than a delivery's body can carry."""
    pending: list[tuple[Any, int]] = [(data, 1)]
    while pending:
        value, depth = pending.pop()
        if isinstance(value, dict):
            children: Any = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        if depth > MAX_DATA_DEPTH:
            raise PydanticCustomError(
                "too_deep",
                "is nested more than {limit} levels deep, more than a delivery can carry",
                {"limit": MAX_DATA_DEPTH},
            )
        pending.extend((child, depth + 1) for child in children)
    return data


def _header_problems(headers: dict[str, str | None]) -> dict[str, str | None]:
    """Names valid and not hookstream's own, values sendable, no name twice in any case."""
    # A PATCH may remove as many as it sets (nulls); what remains is counted after the merge.
    if sum(value is not None for value in headers.values()) > MAX_HEADERS or (
        len(headers) > 2 * MAX_HEADERS
    ):
        raise PydanticCustomError(
            "too_many_headers", "at most {limit} custom headers", {"limit": MAX_HEADERS}
        )
    seen: set[str] = set()
    for name, value in headers.items():
        problem = name_problem(name)
        if problem is None and value is not None:
            problem = value_problem(name, value)
            if value == REDACTED:
                problem = f"value of header {name!r} is the redacted placeholder; send the value"
        if problem is None and name.lower() in seen:
            problem = f"header {name!r} is named twice (header names are case-insensitive)"
        if problem is not None:
            raise PydanticCustomError("invalid_header", "{problem}", {"problem": problem})
        seen.add(name.lower())
    return headers


_HEADERS_DOC = (
    f"Custom headers added to every request (at most {MAX_HEADERS}). Credential-like names "
    "(authorization, cookie, *-key, *-token, *-secret) are encrypted at rest and read back "
    f"as {REDACTED!r}"
)


def _catalog_types(schema: dict[str, Any]) -> None:
    schema["enum"] = [event_type.type for event_type in default_catalog().types]


def _subscription_patterns(schema: dict[str, Any]) -> None:
    catalog = default_catalog()
    categories = sorted(catalog.categories)
    types = [event_type.type for event_type in catalog.types]
    schema["enum"] = [ALL_EVENTS, *(f"{c}.*" for c in categories), *types]


Name = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_no_controls)]
Ident = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_printable)]
Url = Annotated[str, Field(min_length=1, max_length=2048), AfterValidator(_no_controls)]
Description = Annotated[str, Field(max_length=2000), AfterValidator(_text)]
Cursor = Annotated[str, Field(max_length=512), AfterValidator(_cursor)]
# The document lists the catalog's types and patterns; the handlers still name unknown ones.
EventTypeName = Annotated[
    str, Field(min_length=1, max_length=200, json_schema_extra=_catalog_types)
]
Pattern = Annotated[
    str, Field(min_length=1, max_length=200, json_schema_extra=_subscription_patterns)
]
Events = Annotated[list[Pattern], Field(min_length=1, max_length=200)]
Instant = Annotated[
    str | int,
    Field(description="ISO 8601 timestamp or Unix milliseconds", examples=["2024-05-01T00:00:00Z"]),
]
TenantId = Annotated[
    Ident | None,
    Field(description="Tenant to act for; only with an admin key, or the key's own tenant"),
]
Limit = Annotated[int, Field(ge=1, le=MAX_PAGE_SIZE)]
MaxConcurrency = Annotated[
    int,
    Field(
        ge=1,
        le=MAX_CONCURRENCY,
        description="Most requests in flight to this webhook; null: adaptive (grows while the "
        "endpoint answers fast, backs off on 429, 503, timeouts and rising latency)",
    ),
]
RateLimit = Annotated[
    float,
    Field(gt=0, le=MAX_RATE_LIMIT, description="Most deliveries per second; null: no limit"),
]
TimeoutSeconds = Annotated[
    int,
    Field(
        ge=1,
        le=MAX_TIMEOUT_SECONDS,
        description="Seconds one attempt may take; null: the sender's request timeout",
    ),
]
StatusFilter = Literal["succeeded", "retrying", "failed", "skipped"]
# Spelled out for the type checker and the OpenAPI enum; kept in step with the records.
assert frozenset(get_args(StatusFilter)) == frozenset(DeliveryStatus)


class Body(BaseModel):
    # Strict: a JSON body is never coerced ("true" is not a boolean); unknown fields are named.
    model_config = ConfigDict(extra="forbid", strict=True)


class Query(BaseModel):
    # Query values are text by nature, so they are coerced; an unknown (misspelt) parameter
    # is named in a 422 rather than silently ignored.
    model_config = ConfigDict(extra="forbid")


# -- requests ---------------------------------------------------------------------------


class WebhookCreate(Body):
    name: Name
    url: Url
    description: Description | None = None
    events: Events
    owner_id: Ident | None = None
    enabled: bool = True
    tenant_id: TenantId = None
    max_concurrency: MaxConcurrency | None = None
    rate_limit: RateLimit | None = None
    timeout_seconds: TimeoutSeconds | None = None
    headers: Annotated[
        dict[str, str], AfterValidator(_header_problems), Field(description=_HEADERS_DOC)
    ] = Field(default_factory=dict)


# Fields a PATCH may set to null: null clears them (back to the default).
_NULLABLE = frozenset({"description", "max_concurrency", "rate_limit", "timeout_seconds"})


class WebhookUpdate(Body):
    """Only the fields present change; null clears `description` and the delivery settings.
    `headers` is merged: a name set to null is removed, names left out stay as they are."""

    name: Name | None = None
    url: Url | None = None
    description: Description | None = None
    events: Events | None = None
    enabled: bool | None = None
    max_concurrency: MaxConcurrency | None = None
    rate_limit: RateLimit | None = None
    timeout_seconds: TimeoutSeconds | None = None
    headers: (
        Annotated[
            dict[str, str | None],
            AfterValidator(_header_problems),
            Field(description=_HEADERS_DOC + "; a header set to null is removed"),
        ]
        | None
    ) = None

    @model_validator(mode="after")
    def _only_clearable_fields_null(self) -> WebhookUpdate:
        nulls = [name for name in self.model_fields_set - _NULLABLE if getattr(self, name) is None]
        if nulls:
            raise ValueError(f"{', '.join(sorted(nulls))} cannot be null")
        return self


class RotateSecret(Body):
    grace_period_seconds: Annotated[int, Field(ge=0, le=MAX_GRACE_SECONDS)] = 0


class Recover(Body):
    since: Instant
    until: Instant | None = None


class EventPublish(Body):
    id: Ident | None = None
    type: EventTypeName
    tenant_id: TenantId = None
    occurred_at: Annotated[str, Field(max_length=64)] | None = None
    data: Annotated[
        dict[str, Any],
        AfterValidator(_deliverable),
        Field(
            description=f"The event's payload: a JSON object, nested {MAX_DATA_DEPTH} deep at most"
        ),
    ]


# Events in one `POST /v1/events/batch`.
MAX_BATCH_EVENTS = 500


class EventBatch(Body):
    """Each event is read (and refused) on its own, so one bad event refuses no other: the
    items are objects here, and each is held to EventPublish by itself."""

    events: Annotated[
        list[dict[str, Any]],
        Field(
            min_length=1,
            max_length=MAX_BATCH_EVENTS,
            description="The events, each an object as `POST /v1/events` takes "
            "(`id`, `type`, `tenant_id`, `occurred_at`, `data`)",
        ),
    ]


class PrincipalPut(Body):
    tenant_id: TenantId = None
    permissions: Annotated[list[Name], Field(max_length=1000)]


class TenantQuery(Query):
    tenant_id: TenantId = None


class WebhookListQuery(TenantQuery):
    limit: Limit = 50
    cursor: Cursor | None = None


class DeliveryListQuery(WebhookListQuery):
    webhook_id: Ident | None = None
    event_type: Name | None = None
    status: StatusFilter | None = None
    since: Annotated[str, Field(description="ISO 8601 or Unix milliseconds")] | None = None
    until: Annotated[str, Field(description="ISO 8601 or Unix milliseconds")] | None = None


# -- responses --------------------------------------------------------------------------


class WebhookOut(BaseModel):
    id: str
    tenant_id: str
    name: str
    url: str
    description: str | None
    events: list[str]
    enabled: bool
    owner_id: str | None
    disabled_reason: str | None
    secret_hint: str = Field(description="The current secret's last 4 characters")
    previous_secrets_valid_until: str | None = Field(
        description="End of a rotation's grace window, while old secrets still sign"
    )
    created_at: str | None
    updated_at: str | None
    max_concurrency: int | None = Field(description="null: adaptive concurrency")
    rate_limit: float | None = Field(description="Deliveries per second; null: no limit")
    timeout_seconds: int | None = Field(description="null: the sender's request timeout")
    headers: dict[str, str] = Field(
        description=f"Custom headers; sensitive ones read as {REDACTED!r}"
    )
    sensitive_headers: list[str] = Field(
        description="The custom headers whose values are encrypted at rest and redacted here"
    )


class WebhookWithSecret(WebhookOut):
    secret: str = Field(description="The full signing secret; shown only in this response")


class WebhookPage(BaseModel):
    data: list[WebhookOut]
    next_cursor: str | None


class TestSent(BaseModel):
    delivery_id: str
    event_id: str


class HealthOut(BaseModel):
    webhook_id: str
    enabled: bool
    disabled_reason: str | None
    last_status: str | None = Field(description="Outcome of the latest attempt")
    last_status_code: int | None
    last_attempt_at: str | None
    success_rate_24h: float | None
    attempts_24h: int
    failing_since: str | None


class Recovered(BaseModel):
    replayed: int
    skipped: int = Field(description="Failed deliveries whose body is no longer stored")


class EventTypeOut(BaseModel):
    type: str
    category: str
    description: str
    permission: str | None
    field_permissions: dict[str, str]
    example: dict[str, Any]


class CategoryOut(BaseModel):
    category: str
    event_types: list[EventTypeOut]


class Catalog(BaseModel):
    api_version: str
    categories: list[CategoryOut]


class EventAccepted(BaseModel):
    id: str
    duplicate: bool = Field(description="True when this id was already accepted and not resent")


class EventBatchItem(BaseModel):
    index: int = Field(description="The event's position in the request's `events`")
    id: str | None = Field(description="The event's id (the client's, or the one assigned)")
    status: Literal["accepted", "duplicate", "in_progress", "rejected"] = Field(
        description="accepted: published now; duplicate: this id was accepted before (or "
        "earlier in this batch) and is not published again; in_progress: another request is "
        "publishing this id, retry it; rejected: see `error`, nothing was published"
    )
    error: ErrorBody | None = None


class EventBatchResult(BaseModel):
    results: list[EventBatchItem]
    accepted: int
    duplicates: int
    in_progress: int
    rejected: int


class PrincipalOut(BaseModel):
    id: str
    tenant_id: str
    permissions: list[str]


class AttemptOut(BaseModel):
    id: str
    attempt_number: int
    trigger: str
    url: str
    started_at: str | None
    duration_ms: int
    status_code: int | None
    outcome: str
    error: str | None
    response_body: str | None
    next_attempt_at: str | None
    webhook_disabled: bool


class DeliveryOut(BaseModel):
    id: str
    tenant_id: str
    webhook_id: str
    event_id: str
    event_type: str
    status: str
    attempt_count: int
    last_status_code: int | None
    last_error: str | None
    last_attempt_at: str | None
    next_attempt_at: str | None
    created_at: str | None


class DeliveryDetailOut(DeliveryOut):
    payload: Any = Field(description="The request body: parsed JSON, or text if it is not JSON")
    attempts: list[AttemptOut]


class DeliveryPage(BaseModel):
    data: list[DeliveryOut]
    next_cursor: str | None


class Replayed(BaseModel):
    delivery_id: str
    event_id: str
    attempt: int


class Status(BaseModel):
    status: str


class ErrorBody(BaseModel):
    code: str
    message: str
    details: Any = None


class ErrorOut(BaseModel):
    error: ErrorBody
