"""Standard Webhooks v1 signing: the SPEC test vectors and verification by the reference package."""

from __future__ import annotations

import base64
import time

import pytest
import standardwebhooks

from hookstream.core import signing


@pytest.mark.parametrize(
    ("secret", "msg_id", "timestamp", "body", "expected"),
    [
        (
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            b'{"test": 2432232314}',
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
        ),
        (
            "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
            "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
            1649367553,
            b'{"email":"test@example.com","username":"test_user"}',
            "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=",
        ),
    ],
)
def test_spec_vectors(secret: str, msg_id: str, timestamp: int, body: bytes, expected: str) -> None:
    assert signing.signature_header([signing.signer(secret)], msg_id, timestamp, body) == expected


def test_multi_secret_header_verifies_with_each_secret() -> None:
    old, new = signing.new_secret(), signing.new_secret()
    body = '{"id":"evt_1","type":"invoice.paid","data":{"amount":"12.50 €"}}'.encode()
    # The verifier rejects timestamps more than 5 minutes from its own clock.
    now = int(time.time())
    hdrs = signing.headers(
        [signing.signer(old), signing.signer(new)], "evt_1", now, body, "hookstream-test/1.0"
    )

    entries = hdrs["webhook-signature"].split(" ")
    assert len(entries) == 2
    assert all(entry.startswith("v1,") for entry in entries)
    assert entries[0] == signing.signature_header([signing.signer(old)], "evt_1", now, body)
    assert entries[1] == signing.signature_header([signing.signer(new)], "evt_1", now, body)
    for secret in (old, new):
        assert standardwebhooks.Webhook(secret).verify(body, hdrs)["id"] == "evt_1"


def test_headers_carry_every_required_field() -> None:
    secret = signing.new_secret()
    hdrs = signing.headers(
        [signing.signer(secret)], "evt_2", 1700000000, b"{}", "Zivio-Webhooks/1.0"
    )
    assert hdrs["webhook-id"] == "evt_2"
    assert hdrs["webhook-timestamp"] == "1700000000"
    assert hdrs["content-type"] == "application/json"
    assert hdrs["user-agent"] == "Zivio-Webhooks/1.0"
    assert hdrs["webhook-signature"].startswith("v1,")


def test_foreign_secret_does_not_verify() -> None:
    body = b'{"id":"evt_3"}'
    hdrs = signing.headers(
        [signing.signer(signing.new_secret())], "evt_3", int(time.time()), body, "ua"
    )
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        standardwebhooks.Webhook(signing.new_secret()).verify(body, hdrs)


@pytest.mark.parametrize("secret", ["", "whsec_", "whsec_!!!"])
def test_a_secret_that_cannot_sign_fails_as_its_signer_is_built(secret: str) -> None:
    with pytest.raises(signing.UnusableSecretError, match="cannot sign"):
        signing.signer(secret)


def test_no_secret_is_an_error() -> None:
    with pytest.raises(ValueError, match="secret"):
        signing.signature_header([], "evt_4", 1700000000, b"{}")


def test_new_secret_format_and_uniqueness() -> None:
    generated = {signing.new_secret() for _ in range(200)}
    assert len(generated) == 200
    for secret in generated:
        assert secret.startswith("whsec_")
        assert len(secret) == len("whsec_") + 44
        assert len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) == 32
