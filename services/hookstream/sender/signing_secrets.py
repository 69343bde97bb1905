"""The decrypted signing secrets of each webhook, kept between deliveries."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from hookstream.core.records import Webhook
from hookstream.core.secrets import Keyring, is_encrypted

log = logging.getLogger(__name__)

# Webhooks whose decrypted signing secrets are kept between deliveries.
PLAINTEXTS_KEPT = 65536


@dataclass(frozen=True, slots=True)
class _Plaintexts:
    """A webhook's decrypted signing secrets, as they stand from `since_ms` to `until_ms`."""

    webhook: Webhook
    since_ms: int
    until_ms: int
    secrets: list[str]


class SigningSecrets:
    """The plaintext secrets each webhook signs with, decrypted once per change, not per request.

    The view replaces a webhook's object whenever it changes, so the same object means the
    same stored secrets; which of them sign changes only when one of them expires.
    """

    def __init__(self, keyring: Keyring) -> None:
        self._keyring = keyring
        self._known: dict[str, _Plaintexts] = {}
        self._warned_plaintext = False

    def get(self, webhook: Webhook, now_ms: int) -> list[str]:
        """The plaintext secrets signing requests to `webhook` at `now_ms`; or `SecretError`."""
        known = self._known.get(webhook.id)
        if (
            known is not None
            and known.webhook is webhook
            and known.since_ms <= now_ms < known.until_ms
        ):
            return known.secrets
        secrets = self._keyring.signing_secrets(webhook, now_ms)
        if not self._warned_plaintext and not all(is_encrypted(s.value) for s in webhook.secrets):
            self._warned_plaintext = True
            log.warning(
                "sender: webhook %s (and perhaps others) has a plaintext signing secret on the "
                "webhooks topic; run `hookstream secrets reencrypt` to encrypt them",
                webhook.id,
            )
        if len(self._known) >= PLAINTEXTS_KEPT:
            self._known.clear()  # deleted webhooks' entries go too; the rest refill
        self._known[webhook.id] = _Plaintexts(
            webhook, now_ms, _next_expiry_ms(webhook, now_ms), secrets
        )
        return secrets


def _next_expiry_ms(webhook: Webhook, now_ms: int) -> int:
    """When the set of secrets signing at `now_ms` next loses one (a rotated-out secret)."""
    expiries = [
        secret.not_after_ms
        for secret in webhook.secrets
        if secret.not_after_ms is not None and secret.not_after_ms > now_ms
    ]
    return min(expiries, default=_NEVER)


_NEVER = 2**62
