"""Secrets at rest: AES-GCM with key ids, the key ring's errors, and where keys come from."""

from __future__ import annotations

import base64
import logging
import stat
from dataclasses import replace
from pathlib import Path

import pytest

from hookstream.api.present import secret_hint
from hookstream.core.records import Webhook, WebhookSecret
from hookstream.core.settings import SettingsError, load_settings
from hookstream.endpoints.secrets import (
    Keyring,
    MalformedSecretError,
    SecretError,
    TamperedSecretError,
    UnknownKeyError,
    generate_key,
    is_encrypted,
    key_id_of,
    load_keyring,
    parse_keys,
)

KEY_1 = bytes(range(32))
KEY_2 = bytes(range(100, 132))
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def ring(*kids: str) -> Keyring:
    keys = {"k1": KEY_1, "k2": KEY_2}
    return Keyring([(kid, keys[kid]) for kid in kids])


def entry(kid: str, key: bytes) -> str:
    return f"{kid}:{base64.b64encode(key).decode()}"


def webhook(*secrets: WebhookSecret, webhook_id: str = "wh_1") -> Webhook:
    return Webhook(webhook_id, "t", "n", "https://example.com/h", ("*",), secrets)


def test_round_trip_and_format() -> None:
    keyring = ring("k1")
    stored = keyring.encrypt("wh_1", SECRET)
    assert stored.startswith("enc:v1:k1:")
    assert SECRET not in stored and SECRET.removeprefix("whsec_") not in stored
    assert is_encrypted(stored) and key_id_of(stored) == "k1"
    raw = base64.b64decode(stored.split(":", 3)[3])
    assert len(raw) == 12 + len(SECRET) + 16  # nonce | ciphertext | tag
    assert keyring.decrypt("wh_1", stored) == SECRET
    # A fresh nonce every time: the same secret never encrypts to the same value.
    assert keyring.encrypt("wh_1", SECRET) != stored


def test_plaintext_values_pass_through() -> None:
    assert ring("k1").decrypt("wh_1", SECRET) == SECRET
    assert not is_encrypted(SECRET) and key_id_of(SECRET) is None


def test_a_secret_copied_to_another_webhook_does_not_decrypt() -> None:
    keyring = ring("k1")
    stored = keyring.encrypt("wh_1", SECRET)
    with pytest.raises(TamperedSecretError) as caught:
        keyring.decrypt("wh_2", stored)
    message = str(caught.value)
    assert "wh_2" in message and "copied from another webhook" in message
    assert SECRET not in message


def test_unknown_key_id_names_it_and_the_known_ones() -> None:
    stored = ring("k2").encrypt("wh_1", SECRET)
    with pytest.raises(UnknownKeyError) as caught:
        ring("k1").decrypt("wh_1", stored)
    message = str(caught.value)
    assert "'k2'" in message and "HOOKSTREAM_ENCRYPTION_KEY" in message and "k1" in message


def test_a_kid_pointing_at_the_wrong_key_fails_authentication() -> None:
    stored = ring("k1").encrypt("wh_1", SECRET)
    impostor = Keyring([("k1", KEY_2)])
    with pytest.raises(TamperedSecretError, match="fails authentication under key id 'k1'"):
        impostor.decrypt("wh_1", stored)


@pytest.mark.parametrize("position", [0, 5, 12, 20, -1])
def test_tampered_ciphertext_is_detected(position: int) -> None:
    keyring = ring("k1")
    stored = keyring.encrypt("wh_1", SECRET)
    head, body = stored.rsplit(":", 1)
    raw = bytearray(base64.b64decode(body))
    raw[position] ^= 0x01
    with pytest.raises(TamperedSecretError):
        keyring.decrypt("wh_1", f"{head}:{base64.b64encode(bytes(raw)).decode()}")


def test_changing_the_kid_in_the_header_is_detected() -> None:
    # The key id is part of the associated data, not just a label.
    keyring = Keyring([("k1", KEY_1), ("k1b", KEY_1)])
    stored = keyring.encrypt("wh_1", SECRET)
    with pytest.raises(TamperedSecretError):
        keyring.decrypt("wh_1", stored.replace(":k1:", ":k1b:"))


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("enc:v2:k1:AAAA", "unknown format"),
        ("enc:v1:k1", "unknown format"),
        ("enc:v1:k1:not base64!", "not valid base64"),
        ("enc:v1:k1:" + base64.b64encode(b"short").decode(), "too short"),
    ],
)
def test_malformed_values_say_what_is_wrong(value: str, reason: str) -> None:
    with pytest.raises(MalformedSecretError, match=reason):
        ring("k1").decrypt("wh_1", value)


def test_rotation_decrypts_old_and_encrypts_under_the_first_key() -> None:
    old = ring("k1").encrypt("wh_1", SECRET)
    rotated = ring("k2", "k1")
    assert rotated.active_kid == "k2" and rotated.key_ids == ["k2", "k1"]
    assert rotated.decrypt("wh_1", old) == SECRET
    assert key_id_of(rotated.encrypt("wh_1", SECRET)) == "k2"


def test_reencrypted_moves_every_secret_to_the_active_key() -> None:
    old = ring("k1")
    grace = WebhookSecret(old.encrypt("wh_1", "whsec_old"), not_after_ms=123)
    legacy = WebhookSecret("whsec_plain")
    hook = webhook(WebhookSecret(old.encrypt("wh_1", SECRET)), grace, legacy)
    rotated = ring("k2", "k1")
    moved = rotated.reencrypted(hook)
    assert [key_id_of(s.value) for s in moved.secrets] == ["k2", "k2", "k2"]
    assert [s.not_after_ms for s in moved.secrets] == [None, 123, None]
    assert [rotated.decrypt("wh_1", s.value) for s in moved.secrets] == [
        SECRET,
        "whsec_old",
        "whsec_plain",
    ]
    assert replace(moved, secrets=hook.secrets) == hook  # nothing else changed
    # Already current: the very same object, so callers can tell nothing needs writing.
    assert rotated.reencrypted(moved) is moved


def test_reencrypted_fails_clearly_without_the_old_key() -> None:
    hook = webhook(WebhookSecret(ring("k1").encrypt("wh_1", SECRET)))
    with pytest.raises(UnknownKeyError):
        ring("k2").reencrypted(hook)


def test_a_rotated_out_secret_stops_signing_at_its_not_after() -> None:
    keyring = ring("k1")
    current = keyring.encrypt("wh_1", SECRET)
    gone = keyring.encrypt("wh_1", "whsec_gone")
    hook = webhook(WebhookSecret(current), WebhookSecret(gone, not_after_ms=1000))
    assert hook.stored_secrets_at(999) == [current, gone]
    assert hook.stored_secrets_at(1000) == [current]
    assert [keyring.decrypt("wh_1", value) for value in hook.stored_secrets_at(500)] == [
        SECRET,
        "whsec_gone",
    ]


def test_secret_hint_shows_the_end_of_the_plaintext() -> None:
    keyring = ring("k1")
    hook = webhook(WebhookSecret(keyring.encrypt("wh_1", SECRET)))
    assert secret_hint(hook, keyring) == "…" + SECRET[-4:]
    assert secret_hint(webhook(WebhookSecret("whsec_abcdWXYZ")), keyring) == "…WXYZ"
    assert secret_hint(hook, ring("k2")) == ""
    assert secret_hint(webhook(), keyring) == ""


def test_parse_keys_accepts_lists_and_urlsafe_base64() -> None:
    urlsafe = base64.urlsafe_b64encode(KEY_2).decode().rstrip("=")
    keys = parse_keys(f" {entry('k1', KEY_1)} , k2:{urlsafe} ")
    assert keys == [("k1", KEY_1), ("k2", KEY_2)]
    kid, _, key = generate_key("fresh").partition(":")
    assert kid == "fresh" and len(base64.b64decode(key)) == 32


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "got nothing"),
        (base64.b64encode(KEY_1).decode(), "not kid:base64key"),
        (f"bad kid:{base64.b64encode(KEY_1).decode()}", "key id must be"),
        ("k1:%%%%", "not base64"),
        (f"k1:{base64.b64encode(KEY_1[:16]).decode()}", "16 bytes"),
        (f"{entry('k1', KEY_1)},{entry('k1', KEY_2)}", "appears twice"),
    ],
)
def test_bad_keys_are_refused_without_echoing_them(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason) as caught:
        parse_keys(text)
    assert base64.b64encode(KEY_1).decode() not in str(caught.value)


def test_the_setting_is_validated_and_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOOKSTREAM_ENCRYPTION_KEY", "k1:c2hvcnQ=")
    with pytest.raises(SettingsError, match=r"HOOKSTREAM_ENCRYPTION_KEY: .*5 bytes"):
        load_settings()
    monkeypatch.setenv("HOOKSTREAM_ENCRYPTION_KEY", f"{entry('k2', KEY_2)},{entry('k1', KEY_1)}")
    monkeypatch.setenv("HOOKSTREAM_ENV", "production")
    settings = load_settings()
    assert settings.masked()["encryption_key"] == "**********"
    keyring = load_keyring(settings)
    assert keyring.key_ids == ["k2", "k1"]
    monkeypatch.setenv("HOOKSTREAM_ENV", "staging")
    with pytest.raises(SettingsError, match="HOOKSTREAM_ENV"):
        load_settings()


def test_production_without_a_key_is_an_error_naming_the_setting(tmp_path: Path) -> None:
    settings = load_settings(
        env="production", encryption_key="", encryption_key_file=str(tmp_path / "key")
    )
    with pytest.raises(SettingsError, match="HOOKSTREAM_ENCRYPTION_KEY is required"):
        load_keyring(settings)
    assert not (tmp_path / "key").exists()


def test_development_generates_a_key_once_and_reuses_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "cache" / "hookstream" / "dev-key"
    settings = load_settings(env="development", encryption_key="", encryption_key_file=str(path))
    with caplog.at_level(logging.WARNING, logger="hookstream.endpoints.secrets"):
        first = load_keyring(settings)
    assert "DEVELOPMENT MODE" in caplog.text and "generated just now" in caplog.text
    assert str(path) in caplog.text and "HOOKSTREAM_ENCRYPTION_KEY" in caplog.text
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert first.active_kid.startswith("dev-")
    stored = first.encrypt("wh_1", SECRET)

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="hookstream.endpoints.secrets"):
        second = load_keyring(settings)
    assert "kept in" in caplog.text
    # Another process (another service) on the same machine reads what the first wrote.
    assert second.decrypt("wh_1", stored) == SECRET
    assert [p.name for p in path.parent.iterdir()] == ["dev-key"]


def test_a_broken_development_key_file_says_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "dev-key"
    path.write_text("garbage\n")
    settings = load_settings(encryption_key="", encryption_key_file=str(path))
    with pytest.raises(SettingsError, match="delete the file"):
        load_keyring(settings)


def test_errors_are_secret_errors() -> None:
    for error in (UnknownKeyError, TamperedSecretError, MalformedSecretError):
        assert issubclass(error, SecretError)
