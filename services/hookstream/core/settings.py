"""Every setting hookstream reads, in one frozen model built once from the environment.

Services receive the `Settings` instance; nothing else reads `os.environ` for configuration.
"""

from __future__ import annotations

import ipaddress
import json
import socket
from functools import cached_property
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from hookstream.core.secrets import parse_keys

# Svix/SPEC default: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h, 20 h, 24 h after the first attempt.
DEFAULT_RETRY_SCHEDULE: tuple[float, ...] = (
    5,
    300,
    1800,
    7200,
    18000,
    36000,
    50400,
    72000,
    86400,
)


class SettingsError(Exception):
    """Raised when the environment holds an invalid value; the message names the setting."""


def _split_list(value: Any) -> Any:
    """Accept a JSON list or a comma-separated string for list settings."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [item.strip() for item in text.split(",") if item.strip()]
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HOOKSTREAM_", frozen=True, extra="ignore")

    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    topic_prefix: str = "hookstream."
    consumer_group_prefix: str = "hookstream."

    events_partitions: int = Field(default=6, ge=1)
    deliveries_partitions: int = Field(default=12, ge=1)
    retry_partitions: int = Field(default=6, ge=1)
    delivery_log_partitions: int = Field(default=6, ge=1)
    compacted_partitions: int = Field(default=3, ge=1)
    dlq_partitions: int = Field(default=1, ge=1)
    replication_factor: int = Field(default=1, ge=1)

    store_url: str = "sqlite:///hookstream.db"
    api_keys: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8080, ge=0, le=65535)
    # Seconds: how long a webhook write waits for Kafka and for the API's own view to apply it
    # (read-your-writes) before answering 503.
    write_timeout: float = Field(default=10.0, gt=0)
    # Seconds during which POST /v1/events with an already accepted id is not published again.
    event_idempotency_window: float = Field(default=24 * 3600, gt=0)

    retry_schedule: Annotated[tuple[float, ...], NoDecode] = DEFAULT_RETRY_SCHEDULE
    retry_jitter: float = Field(default=0.2, ge=0.0, lt=1.0)
    request_timeout: float = Field(default=30.0, gt=0)
    user_agent: str = "hookstream/0.1"
    api_version: str = "v1"
    max_payload_bytes: int = Field(default=256 * 1024, ge=1024)
    response_body_limit: int = Field(default=16 * 1024, ge=0)
    allow_private_targets: Annotated[tuple[str, ...], NoDecode] = ()

    # Webhook signing secrets are encrypted at rest (core/secrets.py): comma-separated
    # kid:base64key entries of 32-byte keys; the first encrypts, every one decrypts.
    encryption_key: SecretStr = SecretStr("")
    # production refuses to start the API or the sender without encryption_key; development
    # then generates a key once and keeps it in encryption_key_file (default
    # ~/.cache/hookstream/dev-encryption-key), shared by the services of one machine.
    env: Literal["production", "development"] = "development"
    encryption_key_file: str = ""

    # Stable per process across restarts (the router's transactional id is built from it), so a
    # restarted router fences and aborts its predecessor's open transaction at once.
    instance_id: str = Field(default_factory=socket.gethostname, min_length=1)
    router_batch_size: int = Field(default=5000, ge=1)

    # Log-sink: batch bounds, endpoint health and retention (durations in seconds).
    sink_batch_size: int = Field(default=1000, ge=1)
    sink_batch_seconds: float = Field(default=0.5, gt=0)
    auto_disable_after: float = Field(default=5 * 86400, gt=0)
    log_retention: float = Field(default=90 * 86400, gt=0)
    maintenance_interval: float = Field(default=60.0, gt=0)

    # /metrics, /healthz and /readyz of the router, sender and log-sink (0 = a free port).
    metrics_host: str = "0.0.0.0"
    metrics_port: int = Field(default=9108, ge=0, le=65535)

    # DEBUG adds one line per delivery attempt (ids only, never secrets or payloads).
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    max_in_flight: int = Field(default=256, ge=1)
    max_in_flight_per_webhook: int = Field(default=8, ge=1)
    shutdown_grace: float = Field(default=10.0, ge=0)

    @field_validator("api_keys", mode="before")
    @classmethod
    def _parse_api_keys(cls, value: Any) -> Any:
        """`{"key": "tenant"}` as JSON, or `key:tenant,key2:*`."""
        if isinstance(value, str):
            text = value.strip()
            if not text:
                return {}
            if text.startswith("{"):
                return json.loads(text)
            pairs: dict[str, str] = {}
            for item in text.split(","):
                key, sep, tenant = item.strip().partition(":")
                if not sep or not key or not tenant:
                    raise ValueError(f"expected key:tenant pairs, got {item.strip()!r}")
                pairs[key] = tenant
            return pairs
        return value

    @field_validator("store_url")
    @classmethod
    def _check_store_url(cls, value: str) -> str:
        scheme = value.partition("://")[0].split("+", 1)[0]
        if scheme not in ("sqlite", "postgresql", "postgres"):
            raise ValueError("use sqlite:///path or postgresql://user:password@host/database")
        return value

    @field_validator("retry_schedule", mode="before")
    @classmethod
    def _parse_schedule(cls, value: Any) -> Any:
        items = _split_list(value)
        if isinstance(items, list | tuple):
            return tuple(float(item) for item in items)
        return items

    @field_validator("retry_schedule")
    @classmethod
    def _check_schedule(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if any(delay <= 0 for delay in value):
            raise ValueError("every retry delay must be positive")
        if len(set(value)) != len(value):
            raise ValueError("retry delays must be distinct (one topic per tier)")
        return value

    @field_validator("encryption_key")
    @classmethod
    def _check_encryption_key(cls, value: SecretStr) -> SecretStr:
        if value.get_secret_value().strip():
            parse_keys(value.get_secret_value())
        return value

    @field_validator("allow_private_targets", mode="before")
    @classmethod
    def _parse_cidrs(cls, value: Any) -> Any:
        items = _split_list(value)
        return tuple(items) if isinstance(items, list) else items

    @field_validator("allow_private_targets")
    @classmethod
    def _check_cidrs(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for cidr in value:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError as exc:
                raise ValueError(f"{cidr!r} is not a CIDR network") from exc
        return value

    @model_validator(mode="after")
    def _check_prefix(self) -> Settings:
        if any(ch.isspace() for ch in self.topic_prefix):
            raise ValueError("topic_prefix must not contain whitespace")
        return self

    @property
    def max_attempts(self) -> int:
        return len(self.retry_schedule) + 1

    @cached_property
    def private_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        return tuple(
            ipaddress.ip_network(cidr, strict=False) for cidr in self.allow_private_targets
        )

    def masked(self) -> dict[str, Any]:
        """The effective settings with every secret replaced, for `hookstream config`."""
        shown: dict[str, Any] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if name == "api_keys":
                value = {_mask(key): tenant for key, tenant in value.items()}
            elif isinstance(value, SecretStr):
                value = "**********" if value.get_secret_value() else ""
            elif name == "store_url":
                value = _mask_url_password(value)
            elif isinstance(value, tuple):
                value = list(value)
            shown[name] = value
        return shown


def _mask(secret: str) -> str:
    return "****" + secret[-4:] if len(secret) > 8 else "****"


def _mask_url_password(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if not sep or not at or ":" not in userinfo:
        return url
    user = userinfo.split(":", 1)[0]
    return f"{scheme}://{user}:****@{host}"


def load_settings(**overrides: Any) -> Settings:
    """Build the settings; an invalid value raises `SettingsError` naming the variable."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            field = ".".join(str(part) for part in error["loc"]) or "settings"
            name = f"HOOKSTREAM_{field.split('.')[0].upper()}" if error["loc"] else field
            problems.append(f"{name}: {error['msg']}")
        raise SettingsError("invalid settings:\n  " + "\n  ".join(problems)) from None
