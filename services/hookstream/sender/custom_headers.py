"""Each webhook's custom headers as its requests carry them, decrypted once per change.

The API refuses names and values that cannot be sent, but a record may reach the topic by
another way: here every header is checked again, and one that could override what hookstream
sends (a `webhook-*` signature header, the content type) or break the header block is left out,
with a warning, while the rest go. The signing headers are set after these, so they win anyway.
"""

from __future__ import annotations

import logging
from types import MappingProxyType

from hookstream.core.records import Webhook
from hookstream.endpoints.headers import name_problem, value_problem
from hookstream.endpoints.secrets import Keyring

log = logging.getLogger(__name__)

# Webhooks whose decrypted headers are kept between deliveries.
WEBHOOKS_KEPT = 65536

_NONE: MappingProxyType[str, str] = MappingProxyType({})


class CustomHeaders:
    def __init__(self, keyring: Keyring) -> None:
        self._keyring = keyring
        # The view replaces a webhook's object whenever it changes: same object, same headers.
        self._ready: dict[str, tuple[Webhook, MappingProxyType[str, str]]] = {}

    def get(self, webhook: Webhook) -> MappingProxyType[str, str]:
        """The headers to add to a request to `webhook`.

        Raises `SecretError` when a sensitive value does not decrypt; nothing is kept then,
        so every delivery tries again (the attempt fails as a secret's would).
        """
        if not webhook.headers:
            return _NONE
        ready = self._ready.get(webhook.id)
        if ready is not None and ready[0] is webhook:
            return ready[1]
        headers: dict[str, str] = {}
        for header in webhook.headers:
            value = self._keyring.open_header(webhook.id, header)
            problem = name_problem(header.name) or value_problem(header.name, value)
            if problem is not None:
                log.warning("sender: webhook %s: header left out: %s", webhook.id, problem)
                continue
            headers[header.name] = value
        if len(self._ready) >= WEBHOOKS_KEPT:
            self._ready.clear()
        frozen = MappingProxyType(headers)
        self._ready[webhook.id] = (webhook, frozen)
        return frozen
