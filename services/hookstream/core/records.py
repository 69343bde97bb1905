"""Every topic value as a typed, frozen record: what services pass around, and its Avro form."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, NewType

# A signing secret as the `webhooks` topic holds it: `enc:v1:<kid>:<base64>` ciphertext, or a
# plaintext written before encryption at rest (or by another producer). Never signed with as it
# is: `Keyring.decrypt` turns it into the plaintext `whsec_...` that `signing.signer` takes.
StoredSecret = NewType("StoredSecret", str)


@dataclass(frozen=True, slots=True)
class WebhookSecret:
    value: StoredSecret
    # After this instant (ms) the secret no longer signs: the end of a rotation's grace window.
    not_after_ms: int | None = None

    def valid_at(self, now_ms: int) -> bool:
        return self.not_after_ms is None or now_ms < self.not_after_ms


@dataclass(frozen=True, slots=True)
class Webhook:
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

    def stored_secrets_at(self, now_ms: int) -> list[StoredSecret]:
        """The stored secrets that sign at `now_ms`, in order; `Keyring.decrypt` opens them."""
        return [secret.value for secret in self.secrets if secret.valid_at(now_ms)]

    def disabled(self, reason: str, now_ms: int) -> Webhook:
        return replace(self, enabled=False, disabled_reason=reason, updated_at_ms=now_ms)

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
        )


@dataclass(frozen=True, slots=True)
class Principal:
    """A platform user who can own webhooks; permissions come from the platform."""

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
