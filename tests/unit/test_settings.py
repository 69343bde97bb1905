from __future__ import annotations

import pytest

from hookstream.core.settings import SettingsError, load_settings
from hookstream.core.topics import tier_name, topic_specs


def test_defaults_follow_the_spec(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HOOKSTREAM_RETRY_SCHEDULE", "HOOKSTREAM_TOPIC_PREFIX"):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings()
    assert settings.topic_prefix == "hookstream."
    assert settings.retry_schedule == (5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400)
    assert settings.max_attempts == 10
    assert settings.request_timeout == 30
    assert settings.max_payload_bytes == 256 * 1024
    assert settings.store_url.startswith("sqlite:///")


def test_environment_is_read_with_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOOKSTREAM_TOPIC_PREFIX", "acme.")
    monkeypatch.setenv("HOOKSTREAM_RETRY_SCHEDULE", "0.2, 0.5,1")
    monkeypatch.setenv("HOOKSTREAM_API_KEYS", "k-tenant-one:tenant_1,k-admin-key:*")
    monkeypatch.setenv("HOOKSTREAM_ALLOW_PRIVATE_TARGETS", '["127.0.0.0/8", "::1/128"]')
    settings = load_settings()
    assert settings.topic_prefix == "acme."
    assert settings.retry_schedule == (0.2, 0.5, 1.0)
    assert settings.api_keys == {"k-tenant-one": "tenant_1", "k-admin-key": "*"}
    assert [str(n) for n in settings.private_networks] == ["127.0.0.0/8", "::1/128"]


def test_api_keys_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOOKSTREAM_API_KEYS", '{"abc": "t1"}')
    assert load_settings().api_keys == {"abc": "t1"}


@pytest.mark.parametrize(
    ("variable", "value", "reason"),
    [
        ("HOOKSTREAM_RETRY_SCHEDULE", "5,-1", "positive"),
        ("HOOKSTREAM_RETRY_SCHEDULE", "5,5", "distinct"),
        ("HOOKSTREAM_EVENTS_PARTITIONS", "0", "greater than or equal to 1"),
        ("HOOKSTREAM_REQUEST_TIMEOUT", "soon", "valid number"),
        ("HOOKSTREAM_ALLOW_PRIVATE_TARGETS", "10.0.0.0/33", "not a CIDR"),
        ("HOOKSTREAM_API_KEYS", "justakey", "key:tenant"),
        ("HOOKSTREAM_TOPIC_PREFIX", "has space.", "whitespace"),
        ("HOOKSTREAM_STORE_URL", "mysql://db/x", "sqlite:///path or postgresql://"),
    ],
)
def test_invalid_values_name_the_setting(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, reason: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert reason in message
    if variable != "HOOKSTREAM_TOPIC_PREFIX":
        assert variable in message


def test_masked_hides_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOOKSTREAM_API_KEYS", "supersecretkey1:t1")
    monkeypatch.setenv("HOOKSTREAM_STORE_URL", "postgresql://hook:pa55word@db/hookstream")
    shown = load_settings().masked()
    assert "supersecretkey1" not in str(shown)
    assert "pa55word" not in str(shown)
    assert shown["api_keys"] == {"****key1": "t1"}
    assert shown["store_url"] == "postgresql://hook:****@db/hookstream"


def test_tier_names_are_readable() -> None:
    assert [tier_name(d) for d in (5, 300, 1800, 7200, 86400, 0.2, 1.5)] == [
        "5s",
        "5m",
        "30m",
        "2h",
        "24h",
        "200ms",
        "1500ms",
    ]


def test_every_architecture_topic_is_specified() -> None:
    settings = load_settings(topic_prefix="x.", retry_schedule=(1, 60))
    names = {spec.name: spec for spec in topic_specs(settings)}
    assert set(names) == {
        "x.events",
        "x.webhooks",
        "x.principals",
        "x.deliveries",
        "x.retry.1s",
        "x.retry.1m",
        "x.dlq",
        "x.delivery-log",
    }
    assert names["x.webhooks"].compacted and names["x.principals"].compacted
    assert not names["x.deliveries"].compacted
