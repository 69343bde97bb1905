"""Every setting hookstream reads, in one frozen model built once from the environment.

Services receive the `Settings` instance; nothing else reads `os.environ` for configuration.
"""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
import socket
from functools import cached_property
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from hookstream.core.keys import parse_keys

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


# Drawn once per process: containers sharing a host name (host networking, a fixed
# `hostname:`) each run their service as pid 1, so host name and pid alone can coincide.
_PROCESS_TOKEN = secrets.token_hex(4)


def default_instance_id() -> str:
    """`<host name>-<pid>-<random>`: unique per process, the same for every load within it.

    The pid keeps a forked child apart from its parent, which shares the random part.
    """
    return f"{socket.gethostname()}-{os.getpid()}-{_PROCESS_TOKEN}"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HOOKSTREAM_", frozen=True, extra="ignore")

    kafka_bootstrap_servers: str = Field(
        default="127.0.0.1:9092",
        description="Kafka bootstrap servers (host:port, comma-separated).",
    )
    topic_prefix: str = Field(
        default="hookstream.",
        description="Prefix of every topic name (`<prefix>events`, `<prefix>deliveries`, …); "
        "no whitespace.",
    )
    consumer_group_prefix: str = Field(
        default="hookstream.",
        description="Prefix of every consumer group id and of the router's transactional id.",
    )

    events_partitions: int = Field(
        default=6, ge=1, description="Partitions of the `events` topic, created by `topics create`."
    )
    deliveries_partitions: int = Field(
        default=12,
        ge=1,
        description="Partitions of the `deliveries` topic: the upper bound of useful sender "
        "replicas.",
    )
    retry_partitions: int = Field(
        default=6, ge=1, description="Partitions of each `retry.<delay>` topic."
    )
    delivery_log_partitions: int = Field(
        default=6,
        ge=1,
        description="Partitions of the `delivery-log` topic: the upper bound of useful log-sink "
        "replicas.",
    )
    compacted_partitions: int = Field(
        default=3,
        ge=1,
        description="Partitions of the compacted `webhooks` and `principals` topics.",
    )
    dlq_partitions: int = Field(default=1, ge=1, description="Partitions of the `dlq` topic.")
    replication_factor: int = Field(
        default=1, ge=1, description="Replication factor of topics created by `topics create`."
    )
    min_insync_replicas: int | None = Field(
        default=None,
        ge=1,
        description="`min.insync.replicas` of topics created by `topics create` when the "
        "replication factor is above 1: how many copies a write is on before Kafka acknowledges "
        "it (every producer uses acks=all). Unset: 2 from a replication factor of 3, else 1.",
    )

    store_url: str = Field(
        default="sqlite:///hookstream.db",
        description="The delivery-log store: `sqlite:///path` or "
        "`postgresql://user:password@host/database`.",
    )
    api_keys: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=dict,
        description="API keys and what they may act for: `key:tenant,key2:*` or a JSON object; "
        "`*` is a platform admin.",
    )
    api_host: str = Field(default="127.0.0.1", description="Address the API listens on.")
    api_port: int = Field(default=8080, ge=0, le=65535, description="Port the API listens on.")
    write_timeout: float = Field(
        default=10.0,
        gt=0,
        description="Seconds a webhook write waits for Kafka and for the API's own view to "
        "apply it (read-your-writes) before answering 503.",
    )
    event_idempotency_window: float = Field(
        default=24 * 3600,
        gt=0,
        description="Seconds during which `POST /v1/events` with an already accepted id is not "
        "published again.",
    )
    idempotency_key_window: float = Field(
        default=12 * 3600,
        gt=0,
        description="Seconds an API `POST` answer is kept for its `Idempotency-Key` header: a "
        "repeat with the same key within them gets the stored answer instead of acting again.",
    )

    retry_schedule: Annotated[tuple[float, ...], NoDecode] = Field(
        default=DEFAULT_RETRY_SCHEDULE,
        description="Seconds before each retry after a failed attempt (comma-separated or a "
        "JSON list); one `retry.<delay>` topic per entry, so entries must be distinct. "
        "Attempts = entries + 1.",
    )
    retry_jitter: float = Field(
        default=0.2,
        ge=0.0,
        lt=1.0,
        description="Random spread of each retry delay, as a fraction (0.2 = ±20 %).",
    )
    request_timeout: float = Field(
        default=30.0, gt=0, description="Seconds one delivery attempt may take (the HTTP request)."
    )
    user_agent: str = Field(
        default="hookstream/0.1", description="`User-Agent` header of webhook requests."
    )
    send_traceparent: bool = Field(
        default=False,
        description="Send the W3C `traceparent` (and `tracestate`) header with webhook "
        "requests, so a receiver's traces continue hookstream's. Off: it tells receivers "
        "trace ids of your platform.",
    )
    api_version: str = Field(
        default="v1",
        description="`api_version` written into every webhook body's envelope "
        "and reported by `GET /v1/event-types`.",
    )
    max_payload_bytes: int = Field(
        default=256 * 1024,
        ge=1024,
        description="Largest accepted event in bytes: the API refuses a larger one, the router "
        "dead-letters it.",
    )
    response_body_limit: int = Field(
        default=16 * 1024,
        ge=0,
        description="Bytes of a receiver's response body kept in the attempt record.",
    )
    allow_private_targets: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description="CIDR networks webhooks may target although private or loopback "
        "(development only, e.g. `127.0.0.0/8`).",
    )

    # Webhook signing secrets are encrypted at rest (endpoints/secrets.py): comma-separated
    # kid:base64key entries of 32-byte keys; the first encrypts, every one decrypts.
    encryption_key: SecretStr = Field(
        default=SecretStr(""),
        description="Keys encrypting webhook secrets at rest: comma-separated "
        "`kid:base64(32 bytes)` entries; the first encrypts, every one decrypts.",
    )
    # production refuses to start the API or the sender without encryption_key; development
    # then generates a key once and keeps it in encryption_key_file (default
    # ~/.cache/hookstream/dev-encryption-key), shared by the services of one machine.
    env: Literal["production", "development"] = Field(
        default="development",
        description="`production` refuses to start the API or the sender without an "
        "encryption key; `development` generates one into the key file.",
    )
    encryption_key_file: str = Field(
        default="",
        description="Development only: where the generated encryption key is kept (empty: "
        "`~/.cache/hookstream/dev-encryption-key`).",
    )

    # The router's transactional id is built from it. Configured, it should be stable per
    # replica across restarts, so that a restarted router fences and aborts its predecessor's
    # open transaction at once. Unset, it must still be unique per process: two routers on
    # one host with the same id would fence each other in turn, for ever.
    instance_id: str = Field(
        default_factory=default_instance_id,
        min_length=1,
        description="This process's identity (default: `<host name>-<pid>-<random>`, unique "
        "per process); the router's transactional id is built from it. Set a stable one per "
        "replica (e.g. the pod name) so that a restarted router aborts its predecessor's "
        "open transaction at once instead of after the transaction timeout.",
    )
    router_batch_size: int = Field(
        default=5000, ge=1, description="Most events the router routes in one Kafka transaction."
    )
    router_batch_seconds: float = Field(
        default=0.05,
        ge=0,
        description="Shortest time between the starts of two routing transactions. An event "
        "that finds the router idle is routed at once; under load, events gather until this "
        "long after the previous transaction started. Every commit costs the broker about "
        "the same whatever its size (markers on each partition it wrote), so this keeps "
        "transactions to at most 1/router_batch_seconds per second (unless batches fill up).",
    )

    # Log-sink: batch bounds, endpoint health and retention (durations in seconds).
    sink_batch_size: int = Field(
        default=1000, ge=1, description="Most attempt records the log-sink writes per transaction."
    )
    sink_batch_seconds: float = Field(
        default=0.5, gt=0, description="Longest the log-sink waits to fill a batch, in seconds."
    )
    auto_disable_after: float = Field(
        default=5 * 86400,
        gt=0,
        description="Seconds of continuous failure (no success) after which the log-sink "
        "disables a webhook.",
    )
    log_retention: float = Field(
        default=90 * 86400,
        gt=0,
        description="Seconds attempts are kept in the store (not the topic: that is Kafka's "
        "retention).",
    )
    maintenance_interval: float = Field(
        default=60.0,
        gt=0,
        description="Seconds between upkeep runs: auto-disable and retention in the log-sink, "
        "expired event ids and Idempotency-Keys in the API.",
    )

    metrics_host: str = Field(
        default="0.0.0.0",
        description="Address of the `/metrics`, `/healthz` and `/readyz` listener of the "
        "router, sender and log-sink.",
    )
    metrics_port: int = Field(
        default=9108,
        ge=0,
        le=65535,
        description="Port of that listener (0: any free port); `run all` counts up from it.",
    )

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO",
        description="Log level; `DEBUG` adds one line per attempt (ids only, never secrets or "
        "payloads).",
    )

    log_format: Literal["auto", "json", "text"] = Field(
        default="auto",
        description="`json`: one JSON object per line; `text`: short lines for people "
        "(time, level, logger, message, ids); `auto`: text when stderr is a terminal, "
        "else JSON.",
    )

    max_in_flight: int = Field(
        default=256, ge=1, description="Most HTTP requests one sender process has in flight."
    )
    max_in_flight_per_webhook: int = Field(
        default=128,
        ge=1,
        description="Most requests in flight to one webhook per sender process: the ceiling of "
        "the adaptive limit of webhooks without their own max_concurrency (which starts at 8 "
        "and grows while the endpoint answers fast).",
    )
    slow_webhook_seconds: float = Field(
        default=1.0,
        gt=0,
        description="A webhook whose recent answers take this long on average (seconds) is "
        "slow: its requests share the slow lane, and its records beyond that wait in the first "
        "retry tier rather than in the sender's memory.",
    )
    slow_webhook_share: float = Field(
        default=0.25,
        gt=0,
        le=1,
        description="Share of max_in_flight that slow webhooks may hold together, so the rest "
        "stays free for healthy ones.",
    )
    shutdown_grace: float = Field(
        default=10.0,
        ge=0,
        description="Seconds the sender and the API give in-flight work to finish on SIGTERM.",
    )

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
        if (self.min_insync_replicas or 1) > self.replication_factor:
            raise ValueError(
                f"min_insync_replicas ({self.min_insync_replicas}) cannot exceed "
                f"replication_factor ({self.replication_factor}): no write would be acknowledged"
            )
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
