"""Console sessions: a signed cookie instead of server-side state, and CSRF tokens bound to it.

The cookie carries an expiry and a fingerprint of the API key (never the key itself), signed
with a secret derived from the configured keys. Any API replica configured with the same keys
accepts it, and every request resolves the caller through the configured keys again, so removing a
key from the configuration ends its sessions at once.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from dataclasses import dataclass

from hookstream.api.auth import ApiKeys, Caller

SESSION_COOKIE = "hookstream_session"
# Binds the sign-in form's CSRF token before there is a session to bind it to.
SIGN_IN_COOKIE = "hookstream_sign_in"
# A working day; signing in again costs one paste of the key.
SESSION_SECONDS = 8 * 3600
CSRF_FIELD = "csrf_token"

_SIGNING_PURPOSE = b"hookstream console session signing v1"
_FINGERPRINT_PURPOSE = b"hookstream console key fingerprint v1"


@dataclass(frozen=True, slots=True)
class Session:
    caller: Caller
    # The cookie value as sent; CSRF tokens are derived from it.
    cookie: str
    expires_at: int


class Sessions:
    """Issues and checks session cookies and CSRF tokens for one set of API keys."""

    def __init__(self, api_keys: ApiKeys, lifetime: int = SESSION_SECONDS) -> None:
        self._api_keys = api_keys
        self._lifetime = lifetime
        self._signing_key = api_keys.derive(_SIGNING_PURPOSE)
        self._pepper = api_keys.derive(_FINGERPRINT_PURPOSE)

    @property
    def lifetime(self) -> int:
        return self._lifetime

    def sign_in(self, presented_key: str, now: float) -> str | None:
        """A session cookie for a configured key; None for any other text."""
        if self._api_keys.caller(presented_key) is None:
            return None
        expires_at = int(now) + self._lifetime
        fingerprint = _encode(self._api_keys.fingerprint(presented_key, self._pepper))
        unsigned = f"{expires_at}.{fingerprint}"
        return f"{unsigned}.{_encode(self._mac(b'session', unsigned))}"

    def open(self, cookie: str | None, now: float) -> Session | None:
        """The session a cookie stands for; None when it is forged, expired or its key is gone."""
        if not cookie:
            return None
        parts = cookie.split(".")
        if len(parts) != 3:
            return None
        expires_text, fingerprint_text, mac_text = parts
        mac = _decode(mac_text)
        expected = self._mac(b"session", f"{expires_text}.{fingerprint_text}")
        if mac is None or not hmac.compare_digest(mac, expected):
            return None
        if not expires_text.isdigit() or int(expires_text) <= now:
            return None
        fingerprint = _decode(fingerprint_text)
        if fingerprint is None:
            return None
        caller = self._api_keys.session_caller(fingerprint, self._pepper)
        if caller is None:
            return None
        return Session(caller=caller, cookie=cookie, expires_at=int(expires_text))

    def csrf_token(self, binding: str) -> str:
        """The token every form carries: the session cookie (or sign-in nonce) signed."""
        return _encode(self._mac(b"csrf", binding))

    def csrf_ok(self, binding: str, token: str) -> bool:
        return hmac.compare_digest(self.csrf_token(binding).encode(), token.encode())

    def _mac(self, kind: bytes, text: str) -> bytes:
        return hmac.new(self._signing_key, kind + b"\0" + text.encode(), hashlib.sha256).digest()


def new_sign_in_nonce() -> str:
    return secrets.token_urlsafe(18)


def _encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _decode(text: str) -> bytes | None:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None
