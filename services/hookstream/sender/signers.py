"""Each webhook's ready signers and custom headers, kept between deliveries: the one cache of
a signing secret and of a sensitive header's value.

The API refuses header names and values that cannot be sent, but a record may reach the topic
by another way: each header is checked again here, and one that could override what hookstream
sends (a `webhook-*` signature header, the content type) or break the header block is left out,
with a warning, while the rest go. The signing headers are set after these, so they win anyway.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from hookstream.core.records import Webhook
from hookstream.core.signing import Signer, signer
from hookstream.endpoints.headers import name_problem, value_problem
from hookstream.endpoints.secrets import Keyring, is_encrypted

log = logging.getLogger(__name__)

# Webhooks whose signers are kept between deliveries.
WEBHOOKS_KEPT = 65536


@dataclass(frozen=True, slots=True)
class Ready:
    """What a request to a webhook needs of its secrets, as it stands from `since_ms` to
    `until_ms`: its signers and its custom headers (sensitive values decrypted)."""

    webhook: Webhook
    since_ms: int
    until_ms: int
    signers: list[Signer]
    headers: Mapping[str, str]


_NO_HEADERS: Mapping[str, str] = MappingProxyType({})


class WebhookSigners:
    """The signers of each webhook's valid secrets, decrypted once per change, not per request.

    The view replaces a webhook's object whenever it changes, so the same object means the
    same stored secrets; which of them sign changes only when one of them expires. Neither
    the keyring nor the signing module caches again, so a secret lives here and nowhere else.
    """

    def __init__(self, keyring: Keyring) -> None:
        self._keyring = keyring
        self._ready: dict[str, Ready] = {}
        self._warned_plaintext = False

    def get(self, webhook: Webhook, now_ms: int) -> Ready:
        """The signers and custom headers for requests to `webhook` at `now_ms`.

        Raises `SecretError` (a secret or a sensitive header does not decrypt) or
        `UnusableSecretError` (a plaintext cannot sign); neither is kept, so every delivery
        tries again.
        """
        ready = self._ready.get(webhook.id)
        if (
            ready is not None
            and ready.webhook is webhook
            and ready.since_ms <= now_ms < ready.until_ms
        ):
            return ready
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
        headers = self._headers(webhook)
        if len(self._ready) >= WEBHOOKS_KEPT:
            self._ready.clear()  # deleted webhooks' entries go too; the rest refill
        until_ms = _next_expiry_ms(webhook, now_ms)
        ready = self._ready[webhook.id] = Ready(webhook, now_ms, until_ms, signers, headers)
        return ready

    def _headers(self, webhook: Webhook) -> Mapping[str, str]:
        if not webhook.headers:
            return _NO_HEADERS
        headers: dict[str, str] = {}
        for header in webhook.headers:
            value = self._keyring.open_header(webhook.id, header)
            problem = name_problem(header.name) or value_problem(header.name, value)
            if problem is not None:
                log.warning("sender: webhook %s: header left out: %s", webhook.id, problem)
                continue
            headers[header.name] = value
        return MappingProxyType(headers)


def _next_expiry_ms(webhook: Webhook, now_ms: int) -> int:
    """When the set of secrets signing at `now_ms` next loses one (a rotated-out secret)."""
    expiries = [
        secret.not_after_ms
        for secret in webhook.secrets
        if secret.not_after_ms is not None and secret.not_after_ms > now_ms
    ]
    return min(expiries, default=_NEVER)


_NEVER = 2**62
