"""Custom headers: which names and values are allowed, and how credential-like ones are kept."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hookstream.core.records import StoredSecret, Webhook, WebhookHeader
from hookstream.endpoints.headers import (
    is_reserved,
    is_sensitive,
    name_problem,
    split_header_line,
    value_problem,
)
from hookstream.endpoints.secrets import Keyring, TamperedSecretError, is_encrypted

KEYRING = Keyring([("k1", bytes(range(32)))])
NEW_KEYRING = Keyring([("k2", bytes(range(100, 132))), ("k1", bytes(range(32)))])


@pytest.mark.parametrize(
    "name",
    [
        "webhook-signature",
        "Webhook-Id",
        "WEBHOOK-TIMESTAMP",
        "Content-Type",
        "content-length",
        "Host",
        "User-Agent",
        "Transfer-Encoding",
        "traceparent",
        "Proxy-Authorization",
    ],
)
def test_hookstreams_own_headers_cannot_be_overridden(name: str) -> None:
    problem = name_problem(name)
    assert problem is not None and "cannot be overridden" in problem


@pytest.mark.parametrize(
    ("name", "sensitive"),
    [
        ("Authorization", True),
        ("cookie", True),
        ("X-Api-Key", True),
        ("X-Auth-Token", True),
        ("X-Client-Secret", True),
        ("X-Tenant", False),
        ("X-Keyboard", False),
        ("Tokenizer", False),
    ],
)
def test_credential_like_names_are_sensitive(name: str, sensitive: bool) -> None:
    assert is_sensitive(name) is sensitive
    assert name_problem(name) is None


@given(st.text(max_size=40))
def test_a_name_is_accepted_only_if_it_is_a_token_and_not_reserved(name: str) -> None:
    token = bool(name) and all(
        c.isascii() and (c.isalnum() or c in "!#$%&'*+-.^_`|~") for c in name
    )
    assert (name_problem(name) is None) == (token and not is_reserved(name))


@given(st.text(max_size=60))
def test_no_value_accepted_can_break_the_header_line(value: str) -> None:
    """Whatever the text, an accepted value holds no line break, NUL or other control
    character and has no whitespace at its ends: it cannot start a second header."""
    if value_problem("X-Test", value) is None:
        assert value and value == value.strip(" \t")
        assert all(c == "\t" or 0x20 <= ord(c) <= 0x7E for c in value)


@pytest.mark.parametrize("value", ["a\r\nX-Evil: 1", "a\nb", "nul\x00", "", " padded", "é"])
def test_unsendable_values_are_refused(value: str) -> None:
    assert value_problem("X-Test", value) is not None


def test_a_sensitive_value_is_encrypted_and_bound_to_its_webhook_and_name() -> None:
    header = KEYRING.seal_header("wh_1", "Authorization", "Bearer abc")
    assert header.sensitive and is_encrypted(StoredSecret(header.value))
    assert "Bearer abc" not in header.value
    assert KEYRING.open_header("wh_1", header) == "Bearer abc"
    with pytest.raises(TamperedSecretError, match="header 'X-Api-Key' of webhook wh_1"):
        KEYRING.open_header("wh_1", replace(header, name="X-Api-Key"))
    with pytest.raises(TamperedSecretError):
        KEYRING.open_header("wh_2", header)
    # Nor does a header's ciphertext pass for a signing secret.
    with pytest.raises(TamperedSecretError):
        KEYRING.decrypt("wh_1", StoredSecret(header.value))


def test_a_plain_header_is_stored_as_it_is() -> None:
    header = KEYRING.seal_header("wh_1", "X-Tenant", "acme")
    assert header == WebhookHeader("X-Tenant", "acme", sensitive=False)
    assert KEYRING.open_header("wh_1", header) == "acme"


def test_reencryption_covers_sensitive_headers() -> None:
    webhook = Webhook(
        id="wh_1",
        tenant_id="t",
        name="n",
        url="https://example.com",
        events=("*",),
        secrets=(KEYRING.seal("wh_1", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),),
        headers=(
            KEYRING.seal_header("wh_1", "X-Tenant", "acme"),
            KEYRING.seal_header("wh_1", "X-Api-Key", "k-123"),
        ),
    )
    moved = NEW_KEYRING.reencrypted(webhook)
    plain, secret = moved.headers
    assert plain == webhook.headers[0]
    assert NEW_KEYRING.is_current(StoredSecret(secret.value))
    assert NEW_KEYRING.open_header("wh_1", secret) == "k-123"
    assert NEW_KEYRING.reencrypted(moved) is moved


@given(st.text(max_size=40))
def test_a_header_line_splits_at_its_first_colon_or_is_none(line: str) -> None:
    parsed = split_header_line(line)
    name, colon, value = line.partition(":")
    if not colon or not name.strip(" \t"):
        assert parsed is None
    else:
        assert parsed == (name.strip(" \t"), value.strip(" \t"))
