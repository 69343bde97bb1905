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

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32


@lru_cache(maxsize=4096)
def _signer(secret: str) -> _Signer:
    # Building a signer base64-decodes the secret; cached so the hot path only does the HMAC.
    return _Signer(secret)


def signature_header(secrets: Sequence[str], msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value: one `v1,<base64>` entry per secret, in the given order."""
    if not secrets:
        raise ValueError("at least one signing secret is required")
    # The library signs text; the body is UTF-8 JSON, so decoding and its re-encoding are exact.
    payload = body.decode("utf-8")
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
