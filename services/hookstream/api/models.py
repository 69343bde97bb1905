"""The API's request and response bodies; their JSON schemas also feed /openapi.json."""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

from hookstream.core.catalog import ALL_EVENTS, default_catalog
from hookstream.core.store import DELIVERY_STATUSES, MAX_PAGE_SIZE

MAX_GRACE_SECONDS = 7 * 24 * 3600


def _catalog_types(schema: dict[str, Any]) -> None:
    schema["enum"] = [event_type.type for event_type in default_catalog().types]


def _subscription_patterns(schema: dict[str, Any]) -> None:
    catalog = default_catalog()
    categories = sorted(catalog.categories)
    types = [event_type.type for event_type in catalog.types]
    schema["enum"] = [ALL_EVENTS, *(f"{c}.*" for c in categories), *types]


Name = Annotated[str, Field(min_length=1, max_length=200)]
Ident = Annotated[str, Field(min_length=1, max_length=200)]
Url = Annotated[str, Field(min_length=1, max_length=2048)]
Description = Annotated[str, Field(max_length=2000)]
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
DeliveryStatus = Literal["succeeded", "retrying", "failed", "skipped"]
# Spelled out for the type checker and the OpenAPI enum; kept in step with the store.
assert frozenset(get_args(DeliveryStatus)) == DELIVERY_STATUSES


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


class WebhookUpdate(Body):
    """Only the fields present change; `description: null` clears the description."""

    name: Name | None = None
    url: Url | None = None
    description: Description | None = None
    events: Events | None = None
    enabled: bool | None = None

    @model_validator(mode="after")
    def _no_null_except_description(self) -> WebhookUpdate:
        nulls = [
            name for name in self.model_fields_set - {"description"} if getattr(self, name) is None
        ]
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
    data: dict[str, Any]


class PrincipalPut(Body):
    tenant_id: TenantId = None
    permissions: Annotated[list[Name], Field(max_length=1000)]


class TenantQuery(Query):
    tenant_id: TenantId = None


class WebhookListQuery(TenantQuery):
    limit: Limit = 50
    cursor: Annotated[str, Field(max_length=512)] | None = None


class DeliveryListQuery(WebhookListQuery):
    webhook_id: Ident | None = None
    event_type: Name | None = None
    status: DeliveryStatus | None = None
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
