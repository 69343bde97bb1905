"""Webhook signing secrets at rest: AES-256-GCM under a key ring with key ids.

A stored secret (`WebhookSecret.value` on the `webhooks` topic) reads
`enc:v1:<kid>:<base64(nonce | ciphertext | tag)>`. The associated data binds it to its key id and
to its webhook's id, so a value copied onto another webhook does not decrypt. The key ring comes
from `HOOKSTREAM_ENCRYPTION_KEY`: comma-separated `kid:base64key` entries of 32-byte keys; the
first encrypts, every one decrypts. Rotation without downtime: deploy with the new key first and
the old one still listed, run `hookstream secrets reencrypt`, then drop the old key.

Values without the `enc:` prefix are secrets written in plaintext by an older version or straight
to the topic by another producer; they are used as they are, and `reencrypt` encrypts them.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import secrets as _random
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from hookstream.core.keys import generate_key, parse_keys
from hookstream.core.records import StoredSecret, Webhook, WebhookHeader, WebhookSecret
from hookstream.core.settings import Settings, SettingsError
from hookstream.endpoints.headers import is_sensitive

log = logging.getLogger(__name__)

# The associated data of a value, from its key id and its webhook's id.
_Aad = Callable[[str, str], bytes]

KEY_SETTING = "HOOKSTREAM_ENCRYPTION_KEY"
ENV_SETTING = "HOOKSTREAM_ENV"
PREFIX = "enc:"
VERSION = "v1"
NONCE_BYTES = 12
TAG_BYTES = 16
# Generated development keys get a unique id, so a value encrypted under another machine's (or
# container's) development key fails as "unknown key id", not as a puzzling authentication error.
DEV_KEY_PREFIX = "dev-"
DEFAULT_DEV_KEY_FILE = Path("~/.cache/hookstream/dev-encryption-key")
_AAD_LABEL = b"hookstream webhook secret " + VERSION.encode()
# A sensitive header's value is bound to its webhook and its header name, under a label of its
# own: neither a secret nor another header's value decrypts in its place.
_HEADER_AAD_LABEL = b"hookstream webhook header " + VERSION.encode()


class SecretError(Exception):
    """A stored secret cannot be turned back into plaintext; the message says why."""


class UnknownKeyError(SecretError):
    pass


class TamperedSecretError(SecretError):
    pass


class MalformedSecretError(SecretError):
    pass


def is_encrypted(value: StoredSecret) -> bool:
    return value.startswith(PREFIX)


def key_id_of(value: StoredSecret) -> str | None:
    """The key id an encrypted value names (None for a plaintext value)."""
    if not is_encrypted(value):
        return None
    parts = value.split(":", 3)
    return parts[2] if len(parts) == 4 else None


def _aad(kid: str, webhook_id: str) -> bytes:
    return b"\0".join((_AAD_LABEL, kid.encode(), webhook_id.encode()))


def _header_aad(name: str) -> _Aad:
    label = name.lower().encode()
    return lambda kid, webhook_id: b"\0".join(
        (_HEADER_AAD_LABEL, kid.encode(), webhook_id.encode(), label)
    )


class Keyring:
    """The encryption keys of signing secrets at rest: encrypts with the active key and
    decrypts with any listed one.

    Nothing decrypted is kept here: the sender holds each webhook's ready signers
    (`hookstream.sender.signers`), and the API decrypts only to show a secret's hint.
    """

    def __init__(self, keys: Sequence[tuple[str, bytes]], source: str = KEY_SETTING) -> None:
        if not keys:
            raise ValueError("a key ring needs at least one key")
        self._ciphers = {kid: AESGCM(key) for kid, key in keys}
        self.active_kid = keys[0][0]
        # Where the keys came from, for error messages (the setting, or the dev key file).
        self.source = source

    @property
    def key_ids(self) -> list[str]:
        return list(self._ciphers)

    def encrypt(self, webhook_id: str, plaintext: str, aad: _Aad = _aad) -> StoredSecret:
        kid = self.active_kid
        nonce = _random.token_bytes(NONCE_BYTES)
        sealed = self._ciphers[kid].encrypt(nonce, plaintext.encode(), aad(kid, webhook_id))
        body = base64.b64encode(nonce + sealed).decode("ascii")
        return StoredSecret(f"{PREFIX}{VERSION}:{kid}:{body}")

    def decrypt(
        self,
        webhook_id: str,
        value: StoredSecret,
        aad: _Aad = _aad,
        what: str = "signing secret",
    ) -> str:
        """The plaintext of a stored secret (a legacy plaintext value is returned as it is).

        Raises `SecretError` (unknown key id, tampered or foreign value, malformed value).
        """
        if not is_encrypted(value):
            return value
        what = f"{what} of webhook {webhook_id}"
        parts = value.split(":", 3)
        if len(parts) != 4 or parts[1] != VERSION:
            shown = parts[1] if len(parts) > 1 else ""
            raise MalformedSecretError(
                f"{what} has an unknown format "
                f"(expected enc:{VERSION}:<kid>:<base64>, got version {shown!r})"
            )
        kid, body = parts[2], parts[3]
        cipher = self._ciphers.get(kid)
        if cipher is None:
            raise UnknownKeyError(
                f"{what} is encrypted under key id {kid!r}, "
                f"which {self.source} does not list (it lists {', '.join(self._ciphers)})"
            )
        try:
            raw = base64.b64decode(body.encode("ascii"), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise MalformedSecretError(f"{what} is not valid base64: {exc}") from None
        if len(raw) < NONCE_BYTES + TAG_BYTES:
            raise MalformedSecretError(f"{what} is too short to be AES-GCM output")
        try:
            plaintext = cipher.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], aad(kid, webhook_id))
        except InvalidTag:
            raise TamperedSecretError(
                f"{what} fails authentication under key id "
                f"{kid!r}: it was altered, copied from another webhook, or the key {kid!r} "
                "is not the one it was encrypted with"
            ) from None
        return plaintext.decode()

    def seal(
        self, webhook_id: str, plaintext: str, not_after_ms: int | None = None
    ) -> WebhookSecret:
        return WebhookSecret(self.encrypt(webhook_id, plaintext), not_after_ms)

    def seal_header(self, webhook_id: str, name: str, value: str) -> WebhookHeader:
        """A custom header as stored: a sensitive one's value encrypted, bound to its name."""
        if not is_sensitive(name):
            return WebhookHeader(name, value, sensitive=False)
        return WebhookHeader(name, self.encrypt(webhook_id, value, _header_aad(name)), True)

    def open_header(self, webhook_id: str, header: WebhookHeader) -> str:
        """The value a request carries (raises `SecretError` like `decrypt`)."""
        if not header.sensitive:
            return header.value
        what = f"header {header.name!r}"
        return self.decrypt(webhook_id, StoredSecret(header.value), _header_aad(header.name), what)

    def is_current(self, value: StoredSecret) -> bool:
        """Whether `value` is already encrypted under the active key."""
        return key_id_of(value) == self.active_kid

    def reencrypted(self, webhook: Webhook) -> Webhook:
        """`webhook` with every secret and sensitive header value encrypted under the active
        key (unchanged if they are)."""

        def stale(header: WebhookHeader) -> bool:
            return header.sensitive and not self.is_current(StoredSecret(header.value))

        if not any(map(stale, webhook.headers)) and all(
            self.is_current(secret.value) for secret in webhook.secrets
        ):
            return webhook
        secrets = tuple(
            secret
            if self.is_current(secret.value)
            else self.seal(webhook.id, self.decrypt(webhook.id, secret.value), secret.not_after_ms)
            for secret in webhook.secrets
        )
        headers = tuple(
            self.seal_header(webhook.id, h.name, self.open_header(webhook.id, h)) if stale(h) else h
            for h in webhook.headers
        )
        return replace(webhook, secrets=secrets, headers=headers)


def load_keyring(settings: Settings) -> Keyring:
    """The key ring of a service that reads or writes secrets (the API, the sender, reencrypt).

    Production needs HOOKSTREAM_ENCRYPTION_KEY. Development without it uses a key generated
    once and kept in a file, shared by every service on the machine, with a loud warning.
    """
    configured = settings.encryption_key.get_secret_value().strip()
    if configured:
        return Keyring(parse_keys(configured))
    if settings.env == "production":
        raise SettingsError(
            f"{KEY_SETTING} is required when {ENV_SETTING}=production: set it to "
            "<kid>:<base64 of 32 random bytes> (`hookstream secrets generate-key` prints one)"
        )
    path = Path(settings.encryption_key_file or DEFAULT_DEV_KEY_FILE).expanduser()
    generated = _ensure_dev_key(path)
    try:
        keys = parse_keys(path.read_text(encoding="ascii"))
    except (OSError, UnicodeError, ValueError) as exc:
        raise SettingsError(
            f"the development encryption key in {path} is unusable ({exc}); delete the file "
            f"to generate a new one, or set {KEY_SETTING}"
        ) from None
    banner = "*" * 78
    log.warning(
        "\n%s\n%s is not set: DEVELOPMENT MODE encrypts webhook secrets with a key %s %s.\n"
        "Secrets encrypted with it are readable only where that file exists. NEVER run like this\n"
        "in production: set %s=production and %s=<kid>:<base64 32-byte key>.\n%s",
        banner,
        KEY_SETTING,
        "generated just now in" if generated else "kept in",
        path,
        ENV_SETTING,
        KEY_SETTING,
        banner,
    )
    return Keyring(keys, source=f"the development key file {path}")


def _ensure_dev_key(path: Path) -> bool:
    """Create the key file unless it exists; True when this call created it.

    The key is written to a private temporary file and hard-linked into place, so services
    starting at the same moment agree on one key and never read a half-written file.
    """
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{_random.token_hex(4)}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w", encoding="ascii") as handle:
            handle.write(generate_key(DEV_KEY_PREFIX + _random.token_hex(4)) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:
            return False
        return True
    finally:
        temporary.unlink(missing_ok=True)
