"""Each webhook's ready signers, kept between deliveries: the one cache of a signing secret."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from hookstream.core.records import Webhook
from hookstream.core.signing import Signer, signer
from hookstream.endpoints.secrets import Keyring, is_encrypted

log = logging.getLogger(__name__)

# Webhooks whose signers are kept between deliveries.
WEBHOOKS_KEPT = 65536


@dataclass(frozen=True, slots=True)
class _Ready:
    """A webhook's signers, as they stand from `since_ms` to `until_ms`."""

    webhook: Webhook
    since_ms: int
    until_ms: int
    signers: list[Signer]


class WebhookSigners:
    """The signers of each webhook's valid secrets, decrypted once per change, not per request.

    The view replaces a webhook's object whenever it changes, so the same object means the
    same stored secrets; which of them sign changes only when one of them expires. Neither
    the keyring nor the signing module caches again, so a secret lives here and nowhere else.
    """

    def __init__(self, keyring: Keyring) -> None:
        self._keyring = keyring
        self._ready: dict[str, _Ready] = {}
        self._warned_plaintext = False

    def get(self, webhook: Webhook, now_ms: int) -> list[Signer]:
        """The signers for requests to `webhook` at `now_ms`.

        Raises `SecretError` (a secret does not decrypt) or `UnusableSecretError` (a plaintext
        cannot sign); neither is kept, so every delivery tries again.
        """
        ready = self._ready.get(webhook.id)
        if (
            ready is not None
            and ready.webhook is webhook
            and ready.since_ms <= now_ms < ready.until_ms
        ):
            return ready.signers
        signers = [
            signer(self._keyring.decrypt(webhook.id, value))
            for value in webhook.stored_secrets_at(now_ms)
        ]
        if not self._warned_plaintext and not all(is_encrypted(s.value) for s in webhook.secrets):
            self._warned_plaintext = True
            log.warning(
                "sender: webhook %s (and perhaps others) has a plaintext signing secret on the "
                "webhooks topic; run `hookstream secrets reencrypt` to encrypt them",
                webhook.id,
            )
        if len(self._ready) >= WEBHOOKS_KEPT:
            self._ready.clear()  # deleted webhooks' entries go too; the rest refill
        self._ready[webhook.id] = _Ready(webhook, now_ms, _next_expiry_ms(webhook, now_ms), signers)
        return signers


def _next_expiry_ms(webhook: Webhook, now_ms: int) -> int:
    """When the set of secrets signing at `now_ms` next loses one (a rotated-out secret)."""
    expiries = [
        secret.not_after_ms
        for secret in webhook.secrets
        if secret.not_after_ms is not None and secret.not_after_ms > now_ms
    ]
    return min(expiries, default=_NEVER)


_NEVER = 2**62
