"""Console session cookies and CSRF tokens: pure logic, no server."""

from __future__ import annotations

from hookstream.api.auth import ApiKeys
from hookstream.api.console.session import SESSION_SECONDS, Sessions

KEYS = {"key-tenant-a-0123456789": "tenant_a", "key-admin-0123456789": "*"}
NOW = 1_800_000_000.0


def test_a_session_resolves_its_caller_and_never_holds_the_key() -> None:
    sessions = Sessions(ApiKeys(KEYS))
    cookie = sessions.sign_in("key-tenant-a-0123456789", NOW)
    assert cookie is not None and "key-tenant-a" not in cookie
    session = sessions.open(cookie, NOW + 60)
    assert session is not None and session.caller.tenant_id == "tenant_a"
    assert session.expires_at == int(NOW) + SESSION_SECONDS
    admin = sessions.open(sessions.sign_in("key-admin-0123456789", NOW), NOW)
    assert admin is not None and admin.caller.is_admin


def test_unknown_keys_expired_forged_and_revoked_sessions_are_refused() -> None:
    sessions = Sessions(ApiKeys(KEYS))
    assert sessions.sign_in("nope", NOW) is None
    assert sessions.sign_in("", NOW) is None
    cookie = sessions.sign_in("key-tenant-a-0123456789", NOW)
    assert cookie is not None
    assert sessions.open(cookie, NOW + SESSION_SECONDS) is None
    expires, fingerprint, mac = cookie.split(".")
    for forged in (
        f"{int(expires) + 1}.{fingerprint}.{mac}",
        f"{expires}.{fingerprint[::-1]}.{mac}",
        f"{expires}.{fingerprint}.{mac[::-1]}",
        f"{expires}.{fingerprint}",
        "",
        "a.b.c",
        "!!.!!.!!",
    ):
        assert sessions.open(forged, NOW) is None, forged
    # Another replica with the same keys accepts it; one with another key set does not.
    assert Sessions(ApiKeys(dict(KEYS))).open(cookie, NOW) is not None
    assert Sessions(ApiKeys({"key-tenant-a-0123456789": "tenant_a"})).open(cookie, NOW) is None


def test_csrf_tokens_are_bound_to_their_session() -> None:
    sessions = Sessions(ApiKeys(KEYS))
    one = sessions.sign_in("key-tenant-a-0123456789", NOW)
    two = sessions.sign_in("key-tenant-a-0123456789", NOW + 1)
    assert one is not None and two is not None
    token = sessions.csrf_token(one)
    assert sessions.csrf_ok(one, token)
    assert not sessions.csrf_ok(two, token)
    assert not sessions.csrf_ok(one, "")
    assert not sessions.csrf_ok(one, token[:-1] + "é")
