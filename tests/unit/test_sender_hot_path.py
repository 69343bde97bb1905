"""The sender's per-delivery shortcuts behave exactly like the work they save."""

from __future__ import annotations

import pytest

from hookstream.core.records import Outcome, StoredSecret, Webhook
from hookstream.core.signing import (
    Signer,
    UnusableSecretError,
    new_secret,
    signature_header,
    signer,
)
from hookstream.endpoints.secrets import Keyring, SecretError
from hookstream.sender import metrics
from hookstream.sender.service import _attempts_counter
from hookstream.sender.signers import WebhookSigners

KEY = bytes(range(32))


# -- signers -----------------------------------------------------------------------------

NEW, OLD = new_secret(), new_secret()


def _webhook(keyring: Keyring, *secrets: tuple[str, int | None]) -> Webhook:
    return Webhook(
        id="wh_1",
        tenant_id="tnt_1",
        name="hook",
        url="https://example.com/hook",
        events=("invoice.paid",),
        secrets=tuple(keyring.seal("wh_1", plain, until) for plain, until in secrets),
    )


def _signed_by(signers: list[Signer]) -> str:
    return signature_header(signers, "evt_1", 1_700_000_000, b"{}")


def _signed_with(*plaintexts: str) -> str:
    return _signed_by([signer(plain) for plain in plaintexts])


class _CountingKeyring(Keyring):
    decrypted = 0

    def decrypt(self, webhook_id: str, value: StoredSecret) -> str:
        self.decrypted += 1
        return super().decrypt(webhook_id, value)


def test_signers_follow_a_rotation_window() -> None:
    keyring = _CountingKeyring([("k1", KEY)])
    signers = WebhookSigners(keyring)
    hook = _webhook(keyring, (NEW, None), (OLD, 2_000))
    assert _signed_by(signers.get(hook, 1_000).signers) == _signed_with(NEW, OLD)
    assert signers.get(hook, 1_999) is signers.get(hook, 1_000)  # kept: a dict lookup
    assert keyring.decrypted == 2
    assert _signed_by(signers.get(hook, 2_000).signers) == _signed_with(
        NEW
    )  # the old one's window closed
    assert _signed_by(signers.get(hook, 1_500).signers) == _signed_with(
        NEW, OLD
    )  # the clock stepped back


def test_signers_follow_a_changed_webhook() -> None:
    keyring = Keyring([("k1", KEY)])
    signers = WebhookSigners(keyring)
    assert _signed_by(signers.get(_webhook(keyring, (NEW, None)), 1_000).signers) == _signed_with(
        NEW
    )
    assert _signed_by(signers.get(_webhook(keyring, (OLD, None)), 1_000).signers) == _signed_with(
        OLD
    )


def test_an_undecryptable_secret_fails_every_time() -> None:
    other = Keyring([("k2", KEY)])
    signers = WebhookSigners(Keyring([("k1", KEY)]))
    hook = _webhook(other, (NEW, None))
    for _ in range(2):
        with pytest.raises(SecretError):
            signers.get(hook, 1_000)


def test_a_secret_that_cannot_sign_fails_every_time() -> None:
    keyring = Keyring([("k1", KEY)])
    signers = WebhookSigners(keyring)
    hook = _webhook(keyring, ("whsec_", None))
    for _ in range(2):
        with pytest.raises(UnusableSecretError):
            signers.get(hook, 1_000)


# -- metrics -------------------------------------------------------------------------------


def test_attempt_counters_are_the_labelled_children() -> None:
    assert _attempts_counter(Outcome.SUCCESS, 204) is metrics.ATTEMPTS.labels("success", "2xx")
    assert _attempts_counter(Outcome.SKIPPED, None) is metrics.ATTEMPTS.labels("skipped", "none")
