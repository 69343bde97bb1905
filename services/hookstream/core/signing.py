"""Standard Webhooks v1 signatures and request headers, signed by the `standardwebhooks` package.

Using the reference library rather than our own HMAC code means every request verifies with
the package receivers are told to use, by construction.
"""

from __future__ import annotations

import base64
import secrets as _random
from collections.abc import Sequence
from datetime import UTC, datetime
from functools import lru_cache

from standardwebhooks.webhooks import Webhook as _Signer

from hookstream.core.deadletter import RejectedRecord

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32


class UnusableSecretError(ValueError):
    """A secret the signer cannot sign with (empty, or not base64 after `whsec_`)."""


@lru_cache(maxsize=4096)
def _signer(secret: str) -> _Signer:
    # Building a signer base64-decodes the secret; cached so the hot path only does the HMAC.
    try:
        return _Signer(secret)
    except Exception as exc:  # the library's own empty-secret error, or binascii's
        raise UnusableSecretError(f"the signing secret cannot sign: {exc}") from None


def check_secrets(secrets: Sequence[str]) -> None:
    """Raise `UnusableSecretError` unless every secret can sign (a webhook record written by
    hand may hold anything)."""
    for secret in secrets:
        _signer(secret)


def signature_header(secrets: Sequence[str], msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value: one `v1,<base64>` entry per secret, in the given order."""
    if not secrets:
        raise ValueError("at least one signing secret is required")
    # The library signs text; the body is UTF-8 JSON, so decoding and its re-encoding are exact.
    try:
        payload = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        # Only a hand-made delivery record gets here (the router and the API write JSON).
        raise RejectedRecord(
            "invalid_delivery", f"the body is not UTF-8, so it cannot be signed: {exc}"
        ) from None
    when = datetime.fromtimestamp(timestamp, tz=UTC)
    return " ".join(_signer(secret).sign(msg_id, when, payload) for secret in secrets)


def headers(
    secrets: Sequence[str],
    msg_id: str,
    timestamp: int,
    body: bytes,
    user_agent: str,
) -> dict[str, str]:
    """Every header of a webhook request; `msg_id` is the event id, identical on each retry."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature_header(secrets, msg_id, timestamp, body),
        "content-type": "application/json",
        "user-agent": user_agent,
    }


def new_secret() -> str:
    """A fresh signing secret: `whsec_` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(_random.token_bytes(SECRET_BYTES)).decode("ascii")
