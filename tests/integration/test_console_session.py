"""The console's sessions and CSRF checks over real HTTP, with nothing but an HTTP client.

One api, sender and log-sink serve the module; every failure path answers as a browser
needs: a sign-in page, a redirect to it, a 403 or a 404 page, never another tenant's data.
"""

from __future__ import annotations

import re
import time
import urllib.parse
from collections.abc import Iterator
from http.cookies import SimpleCookie
from typing import Any

import pytest

from hookstream.api.auth import ApiKeys
from hookstream.api.console.session import SESSION_COOKIE, SESSION_SECONDS, Sessions
from tests.browser.stack import (
    ADMIN,
    KEY_A,
    KEY_B,
    TENANT_B,
    ConsoleStack,
    console_stack,
)
from tests.helpers import Reply, wait_for

pytestmark = pytest.mark.integration

SIGN_IN = "/console/sign-in"
_CSRF = re.compile(r'name="csrf_token" value="([^"]*)"')


@pytest.fixture(scope="module")
def stack(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleStack]:
    directory = tmp_path_factory.mktemp("console-session")
    with console_stack(kafka_bootstrap, directory, ("api", "sender", "log-sink")) as built:
        yield built


def sessions(stack: ConsoleStack) -> Sessions:
    """The console's own session logic, configured like the running api."""
    return Sessions(ApiKeys(stack.settings.api_keys))


def cookies_of(reply: Reply) -> dict[str, Any]:
    jar: SimpleCookie = SimpleCookie()
    for header in reply.headers.get_all("Set-Cookie") or []:
        jar.load(header)
    return {name: jar[name] for name in jar}


def csrf_of(reply: Reply) -> str:
    match = _CSRF.search(reply.text)
    assert match, reply.text
    return match.group(1)


def form(stack: ConsoleStack, path: str, fields: dict[str, str], cookies: dict[str, str]) -> Reply:
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "Cookie": "; ".join(f"{k}={v}" for k, v in cookies.items()),
    }
    return stack.request("POST", path, urllib.parse.urlencode(fields).encode(), headers)


def get(stack: ConsoleStack, path: str, session: str | None) -> Reply:
    headers = {"Cookie": f"{SESSION_COOKIE}={session}"} if session else {}
    return stack.request("GET", path, headers=headers)


def submit_sign_in(stack: ConsoleStack, key: str) -> Reply:
    """Fill in the sign-in form as a browser would: its token, its nonce cookie, the key."""
    page = stack.request("GET", SIGN_IN)
    nonce = cookies_of(page)["hookstream_sign_in"].value
    return form(
        stack,
        SIGN_IN,
        {"csrf_token": csrf_of(page), "api_key": key},
        {"hookstream_sign_in": nonce},
    )


def sign_in(stack: ConsoleStack, key: str) -> str:
    reply = submit_sign_in(stack, key)
    assert reply.status == 303 and reply.headers["Location"] == "/console/webhooks"
    value: str = cookies_of(reply)[SESSION_COOKIE].value
    return value


def test_sign_in_sets_a_strict_http_only_cookie_without_the_key(stack: ConsoleStack) -> None:
    reply = submit_sign_in(stack, KEY_A)
    assert reply.status == 303
    cookie = cookies_of(reply)[SESSION_COOKIE]
    assert cookie["httponly"] and cookie["samesite"] == "Strict" and cookie["path"] == "/console"
    assert KEY_A not in cookie.value
    listing = get(stack, "/console/webhooks", cookie.value)
    assert listing.status == 200 and "Tenant tenant_a" in listing.text
    assert listing.headers["Cache-Control"] == "no-store"
    assert "default-src 'none'" in listing.headers["Content-Security-Policy"]


def test_a_wrong_key_shows_the_sign_in_page_with_an_error(stack: ConsoleStack) -> None:
    reply = submit_sign_in(stack, "not-a-key")
    assert reply.status == 401
    assert "That API key is not valid" in reply.text
    assert SESSION_COOKIE not in cookies_of(reply)


def test_sign_in_without_its_csrf_token_or_nonce_is_403(stack: ConsoleStack) -> None:
    page = stack.request("GET", SIGN_IN)
    nonce = cookies_of(page)["hookstream_sign_in"].value
    token = csrf_of(page)
    for fields, cookies in (
        ({"api_key": KEY_A}, {"hookstream_sign_in": nonce}),
        ({"api_key": KEY_A, "csrf_token": "forged"}, {"hookstream_sign_in": nonce}),
        # A token lifted from another browser's page is useless without that browser's nonce.
        ({"api_key": KEY_A, "csrf_token": token}, {}),
        ({"api_key": KEY_A, "csrf_token": token}, {"hookstream_sign_in": "other"}),
    ):
        reply = form(stack, SIGN_IN, fields, cookies)
        assert reply.status == 403, (fields, cookies)
        assert SESSION_COOKIE not in cookies_of(reply)


def test_every_post_needs_the_sessions_csrf_token(stack: ConsoleStack) -> None:
    session = sign_in(stack, KEY_A)
    other_session = sign_in(stack, KEY_B)
    created = stack.api(
        "POST",
        "/v1/webhooks",
        {"name": "csrf", "url": stack.receiver.url("/csrf"), "events": ["*"]},
        key=KEY_A,
    ).json
    page = get(stack, f"/console/webhooks/{created['id']}", session)
    token = csrf_of(page)
    other_token = csrf_of(get(stack, "/console/webhooks", other_session))
    cookies = {SESSION_COOKIE: session}
    for path in (
        f"/console/webhooks/{created['id']}/delete",
        f"/console/webhooks/{created['id']}/enabled",
        "/console/webhooks",
        "/console/sign-out",
    ):
        for fields in ({}, {"csrf_token": ""}, {"csrf_token": other_token}):
            reply = form(stack, path, fields, cookies)
            assert reply.status == 403, (path, fields)
            assert "did not come from this console" in reply.text
    # Nothing happened: the webhook is still there, and the right token works.
    assert stack.api("GET", f"/v1/webhooks/{created['id']}", key=KEY_A).status == 200
    reply = form(stack, f"/console/webhooks/{created['id']}/delete", {"csrf_token": token}, cookies)
    assert reply.status == 303
    assert stack.api("GET", f"/v1/webhooks/{created['id']}", key=KEY_A).status == 404


def test_missing_expired_forged_or_revoked_sessions_go_to_sign_in(stack: ConsoleStack) -> None:
    good = sign_in(stack, KEY_A)
    expires, fingerprint, mac = good.split(".")
    admin_fingerprint = sessions(stack).sign_in(ADMIN, time.time())
    assert admin_fingerprint is not None
    revoked = Sessions(ApiKeys({**stack.settings.api_keys, "gone-key-0123456789": "tenant_a"}))
    candidates = {
        "missing": None,
        "garbage": "not-a-session",
        "expired": sessions(stack).sign_in(KEY_A, time.time() - SESSION_SECONDS - 5),
        "later expiry, old signature": f"{int(expires) + 3600}.{fingerprint}.{mac}",
        "another key's fingerprint": f"{expires}.{admin_fingerprint.split('.')[1]}.{mac}",
        "bad signature": f"{expires}.{fingerprint}.{mac[::-1]}",
        # Signed with another set of API keys: the running api derives another secret.
        "other keys": revoked.sign_in("gone-key-0123456789", time.time()),
    }
    for what, session in candidates.items():
        for method, path in (("GET", "/console/webhooks"), ("POST", "/console/webhooks")):
            headers = {"Cookie": f"{SESSION_COOKIE}={session}"} if session else {}
            reply = stack.request(method, path, headers=headers)
            assert reply.status == 303, what
            assert reply.headers["Location"] == SIGN_IN, what


def test_a_tenant_key_cannot_open_another_tenants_webhook_or_delivery(
    stack: ConsoleStack,
) -> None:
    path = "/tenant-b"
    stack.receiver.expect(path, [])
    created = stack.api(
        "POST",
        "/v1/webhooks",
        {"name": "b's", "url": stack.receiver.url(path), "events": ["*"], "tenant_id": TENANT_B},
    ).json

    def test_delivery() -> str | None:
        # The sender may not have the new webhook yet: send again until one is delivered.
        sent = stack.api("POST", f"/v1/webhooks/{created['id']}/test").json
        logged = wait_for(
            lambda: stack.api("GET", f"/v1/deliveries/{sent['delivery_id']}").status == 200,
            what="the test delivery in the log",
        )
        return str(sent["delivery_id"]) if logged and stack.receiver.received(path) else None

    delivery_id = wait_for(test_delivery, what="a delivered test event")
    session_a = sign_in(stack, KEY_A)
    session_b = sign_in(stack, KEY_B)
    assert created["id"] in get(stack, "/console/webhooks", session_b).text
    assert created["id"] not in get(stack, "/console/webhooks", session_a).text
    for page in (
        f"/console/webhooks/{created['id']}",
        f"/console/webhooks/{created['id']}/edit",
        f"/console/deliveries/{delivery_id}",
    ):
        assert get(stack, page, session_b).status == 200, page
        reply = get(stack, page, session_a)
        assert reply.status == 404, page
        assert "Not found" in reply.text and "b&#39;s" not in reply.text
    token = csrf_of(get(stack, "/console/webhooks", session_a))
    for action in (
        f"/console/webhooks/{created['id']}/delete",
        f"/console/webhooks/{created['id']}/test",
        f"/console/deliveries/{delivery_id}/replay",
    ):
        reply = form(stack, action, {"csrf_token": token}, {SESSION_COOKIE: session_a})
        assert reply.status == 404, action
    listing = get(stack, f"/console/deliveries?webhook_id={created['id']}", session_a)
    assert delivery_id not in listing.text
    assert stack.api("GET", f"/v1/webhooks/{created['id']}").status == 200


def test_the_openapi_document_leaves_the_console_out(stack: ConsoleStack) -> None:
    document = stack.request("GET", "/openapi.json").json
    assert document["paths"] and all(path.startswith("/") for path in document["paths"])
    assert not [path for path in document["paths"] if path.startswith("/console")]
