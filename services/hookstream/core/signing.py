"""Standard Webhooks v1 signatures and request headers, signed by the `standardwebhooks` package.

Using the reference library rather than our own HMAC code means every request verifies with
the package receivers are told to use, by construction.
"""

from __future__ import annotations

import base64
import secrets as _random
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Protocol

from standardwebhooks.webhooks import Webhook as _StandardSigner

from hookstream.core.deadletter import RejectedRecord

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32


class UnusableSecretError(ValueError):
    """A secret the signer cannot sign with (empty, or not base64 after `whsec_`)."""


class Signer(Protocol):
    """One plaintext secret, decoded once, ready to sign any number of requests.

    The reference package's own object (no wrapper, so signing costs nothing more than the
    HMAC); typed here so a ciphertext or a plaintext `str` cannot be passed where a signer
    goes. Not cached in this module: the sender keeps each webhook's signers
    (`hookstream.sender.signers`), the one place a secret is held between deliveries.
    """

    def sign(self, msg_id: str, timestamp: datetime, data: str) -> str:
        """One `v1,<base64>` entry of the `webhook-signature` header."""
        ...


def signer(secret: str) -> Signer:
    """The signer of a plaintext `whsec_...` secret; `UnusableSecretError` if it cannot sign."""
    try:
        made: Signer = _StandardSigner(secret)
    except Exception as exc:  # the library's own empty-secret error, or binascii's
        raise UnusableSecretError(f"the signing secret cannot sign: {exc}") from None
    return made


def signature_header(signers: Sequence[Signer], msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value: one `v1,<base64>` entry per signer, in the given order."""
    if not signers:
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
    return " ".join(signer.sign(msg_id, when, payload) for signer in signers)


def headers(
    signers: Sequence[Signer],
    msg_id: str,
    timestamp: int,
    body: bytes,
    user_agent: str,
) -> dict[str, str]:
    """Every header of a webhook request; `msg_id` is the event id, identical on each retry."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature_header(signers, msg_id, timestamp, body),
        "content-type": "application/json",
        "user-agent": user_agent,
    }


def new_secret() -> str:
    """A fresh signing secret: `whsec_` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(_random.token_bytes(SECRET_BYTES)).decode("ascii")
