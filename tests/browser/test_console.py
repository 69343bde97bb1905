"""The web console in a real browser: headless Chromium against a running pipeline.

Each test starts from a fresh browser profile; the pipeline (api, router, sender, log-sink
and a receiver) is shared by the module. Screenshots of the main screens go to
test-artifacts/console/.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from playwright.sync_api import Browser, Locator, Page, expect

from tests.browser.conftest import DESKTOP
from tests.browser.stack import ADMIN, KEY_A, KEY_B, TENANT_A, TENANT_B, ConsoleStack
from tests.helpers import http_request, wait_for
from tests.receiver import Behaviour, Received

pytestmark = pytest.mark.integration

SCRIPT = "<script>window.__pwned = 1</script>"
PHONE = {"width": 390, "height": 844}


def sign_in(page: Page, key: str) -> None:
    page.goto("/console/")
    expect(page).to_have_url(re.compile(r"/console/sign-in$"))
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Webhooks")).to_be_visible()


def shot(page: Page, artifacts: Path, name: str) -> None:
    page.screenshot(path=str(artifacts / f"{name}.png"), full_page=True)


def until_shown(page: Page, find: Callable[[], Locator], what: str, timeout: float = 30) -> None:
    """Reload until `find()` is visible: the log-sink stores attempts a moment after them."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            expect(find()).to_be_visible(timeout=500)
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise AssertionError(f"not shown within {timeout:.0f} s: {what}") from None
            page.reload()


def create_webhook(page: Page, stack: ConsoleStack, events: list[str]) -> tuple[str, str, str]:
    """Create a webhook through the form; returns its id, its secret and its receiver path."""
    path = f"/console-{uuid.uuid4().hex[:8]}"
    page.goto("/console/webhooks")
    page.get_by_role("link", name="New webhook").click()
    page.get_by_label("Name").fill(f"receiver {path}")
    page.get_by_label("URL").fill(stack.receiver.url(path))
    for pattern in events:
        page.locator(f"input[name=events][value='{pattern}']").check()
    page.get_by_role("button", name="Create webhook").click()
    expect(page.get_by_role("heading", name=re.compile("Webhook created"))).to_be_visible()
    secret = page.get_by_label("Signing secret").input_value()
    stack.receiver.expect(path, [secret])
    page.get_by_role("link", name="Continue to the webhook").click()
    expect(page.get_by_role("button", name="Send test event")).to_be_visible()
    return page.url.rsplit("/", 1)[1], secret, path


def send_until_received(
    stack: ConsoleStack,
    path: str,
    send: Callable[[], None],
    wanted: Callable[[Received], bool] = lambda request: True,
) -> None:
    """Send until the receiver sees a verified (and `wanted`) request: the router's and the
    sender's views apply a webhook's change tens of milliseconds after the API's, and a send
    may overtake them."""

    def delivered() -> bool:
        send()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if any(r.verified and wanted(r) for r in stack.receiver.received(path)):
                return True
            time.sleep(0.05)
        return False

    wait_for(delivered, timeout=45, what=f"a verified request at {path}")


def test_sign_in_refuses_a_wrong_key_and_works_from_the_keyboard(
    page: Page, artifacts: Path
) -> None:
    page.goto("/console/webhooks")
    expect(page).to_have_url(re.compile(r"/console/sign-in$"))
    shot(page, artifacts, "01-sign-in")
    page.get_by_label("API key").fill("not-a-key")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("That API key is not valid")
    # Keyboard only: the key field has focus, Enter submits.
    expect(page.get_by_label("API key")).to_be_focused()
    page.keyboard.type(KEY_A)
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Webhooks")).to_be_visible()
    expect(page.get_by_text(f"Tenant {TENANT_A}")).to_be_visible()
    # The first Tab stop skips the navigation.
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_text("Signed out.")).to_be_visible()
    page.goto("/console/webhooks")
    expect(page).to_have_url(re.compile(r"/console/sign-in$"))


def test_create_copy_the_secret_and_see_a_test_event_delivered(
    page: Page, stack: ConsoleStack, artifacts: Path
) -> None:
    sign_in(page, KEY_A)
    page.get_by_role("link", name="New webhook").click()
    shot(page, artifacts, "02-new-webhook")
    path = f"/copied-{uuid.uuid4().hex[:8]}"
    page.get_by_label("Name").fill("my laptop")
    page.get_by_label("URL").fill(stack.receiver.url(path))
    page.get_by_label("Every invoice event").check()
    page.get_by_role("button", name="Create webhook").click()

    secret_field = page.get_by_label("Signing secret")
    secret = secret_field.input_value()
    assert secret.startswith("whsec_")
    page.get_by_role("button", name="Copy").click()
    expect(page.get_by_text("Copied to the clipboard.")).to_be_visible()
    assert page.evaluate("navigator.clipboard.readText()") == secret
    shot(page, artifacts, "03-secret-shown-once")
    stack.receiver.expect(path, [secret])

    page.get_by_role("link", name="Continue to the webhook").click()
    expect(page.locator("#secret-hint")).to_have_text("…" + secret[-4:])
    assert secret not in page.content()

    def send_test() -> None:
        page.get_by_role("button", name="Send test event").click()
        expect(page.get_by_role("status")).to_contain_text("Test event sent as delivery")

    send_until_received(stack, path, send_test)
    until_shown(page, lambda: page.locator("td .badge-succeeded"), "a succeeded delivery")
    shot(page, artifacts, "04-webhook")

    page.goto("/console/webhooks")
    row = page.get_by_role("row").filter(has_text="my laptop")
    expect(row).to_contain_text("invoice.*")
    expect(row).to_contain_text("enabled")
    expect(row.locator(".badge-success")).to_be_visible()
    expect(row).to_contain_text("100% of")
    shot(page, artifacts, "05-webhooks")

    page.get_by_role("link", name="my laptop").click()
    page.locator("td a[href^='/console/deliveries/']").first.click()
    expect(page.locator("#payload")).to_contain_text('"type": "webhook.test"')
    expect(page.get_by_role("heading", name=re.compile("#1"))).to_contain_text("success")
    expect(page.locator(".attempt")).to_contain_text("204")


def test_a_failing_delivery_is_replayed_after_the_receiver_recovers(
    page: Page, stack: ConsoleStack, artifacts: Path
) -> None:
    sign_in(page, KEY_A)
    webhook_id, _, path = create_webhook(page, stack, ["*"])
    # The receiver fails, and answers with markup that must show as text.
    stack.receiver.behave(path, Behaviour(status=500, body=f"{SCRIPT}<b>boom</b>"))

    def publish() -> None:
        event = {"type": "invoice.paid", "data": {"invoice_id": "inv_1", "note": SCRIPT}}
        assert stack.api("POST", "/v1/events", event, key=KEY_A).status == 202

    send_until_received(stack, path, publish)

    page.get_by_role("link", name="Deliveries", exact=True).click()
    page.get_by_label("Webhook").select_option(webhook_id)
    page.get_by_label("Status").select_option("failed")
    page.get_by_label("Event type").select_option("invoice.paid")
    page.get_by_role("button", name="Filter").click()
    until_shown(page, lambda: page.locator("td .badge-failed").first, "a failed delivery")
    shot(page, artifacts, "06-deliveries")
    page.locator("td a[href^='/console/deliveries/']").first.click()

    # Payload and response body show the markup as text; nothing of it runs or renders.
    expect(page.locator("#payload")).to_contain_text(SCRIPT.replace('"', '\\"'))
    expect(page.locator(".response").first).to_have_text(f"{SCRIPT}<b>boom</b>")
    assert page.locator("main script, main b").count() == 0
    assert page.evaluate("window.__pwned") is None
    expect(page.locator(".attempt").first).to_contain_text("500")
    shot(page, artifacts, "07-delivery-failed")

    stack.receiver.behave(path, Behaviour(status=204))
    page.get_by_role("button", name="Replay").click()
    expect(page.get_by_role("status")).to_contain_text("Replay queued as attempt")
    until_shown(
        page, lambda: page.locator(".facts .badge-succeeded").first, "the replay succeeding"
    )
    expect(page.get_by_role("heading", name=re.compile("manual"))).to_contain_text("success")
    shot(page, artifacts, "08-delivery-replayed")


def test_edit_rotate_disable_recover_and_delete(page: Page, stack: ConsoleStack) -> None:
    sign_in(page, KEY_A)
    _, secret, _ = create_webhook(page, stack, ["invoice.paid"])

    page.get_by_role("link", name="Edit").click()
    page.get_by_label("Name").fill("renamed")
    page.get_by_label("Every offer event").check()
    page.get_by_role("button", name="Save changes").click()
    expect(page.get_by_role("status")).to_have_text("Changes saved.")
    expect(page.get_by_role("heading", name="renamed")).to_be_visible()
    expect(page.locator(".facts")).to_contain_text("invoice.paid, offer.*")

    # A form error keeps what was typed and names the field.
    page.get_by_role("link", name="Edit").click()
    checked = page.locator("input[name=events]:checked")
    while checked.count():
        checked.first.uncheck()
    page.get_by_role("button", name="Save changes").click()
    expect(page.get_by_role("alert")).to_contain_text("events")
    page.get_by_role("link", name="Cancel").click()

    # Rotation asks first; dismissing changes nothing.
    page.once("dialog", lambda dialog: dialog.dismiss())
    page.get_by_role("button", name="Rotate secret").click()
    expect(page.locator("#secret-hint")).to_have_text("…" + secret[-4:])
    page.get_by_label("Grace period in seconds").fill("3600")
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Rotate secret").click()
    expect(page.get_by_text("The previous secret keeps signing until")).to_be_visible()
    rotated = page.get_by_label("Signing secret").input_value()
    assert rotated.startswith("whsec_") and rotated != secret
    page.get_by_role("link", name="Continue to the webhook").click()
    expect(page.locator("#secret-hint")).to_have_text("…" + rotated[-4:])

    page.get_by_role("button", name="Disable").click()
    expect(page.get_by_role("status")).to_contain_text("Webhook disabled")
    page.get_by_role("button", name="Send test event").click()
    expect(page.get_by_role("alert")).to_contain_text("is disabled")
    page.get_by_role("button", name="Enable").click()
    expect(page.get_by_role("status")).to_have_text("Webhook enabled.")

    page.get_by_role("button", name="Recover").click()
    expect(page.get_by_role("status")).to_have_text("Replaying 0 failed deliveries.")

    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Delete webhook").click()
    expect(page.get_by_role("status")).to_contain_text("deleted")
    expect(page.get_by_role("link", name="renamed")).to_have_count(0)


def test_saving_over_a_change_made_meanwhile_is_refused_and_shows_it(
    page: Page, stack: ConsoleStack
) -> None:
    sign_in(page, KEY_A)
    webhook_id, _, _ = create_webhook(page, stack, ["invoice.paid"])
    page.get_by_role("link", name="Edit").click()
    # While the form is open, someone else changes the webhook through the API.
    headers = {"Authorization": f"Bearer {KEY_A}", "Content-Type": "application/json"}
    body = orjson.dumps({"description": "changed elsewhere"})
    path = f"/v1/webhooks/{webhook_id}"
    assert http_request(stack.settings.api_port, "PATCH", path, body, headers).status == 200
    page.get_by_label("Name").fill("mine")
    page.get_by_role("button", name="Save changes").click()
    expect(page.get_by_role("alert")).to_contain_text("changed by someone else")
    # The form now holds the current version; saved from there, both changes stand.
    expect(page.get_by_label("Description (optional)")).to_have_value("changed elsewhere")
    page.get_by_label("Name").fill("mine")
    page.get_by_role("button", name="Save changes").click()
    expect(page.get_by_role("status")).to_have_text("Changes saved.")
    expect(page.get_by_role("heading", name="mine")).to_be_visible()
    reply = http_request(stack.settings.api_port, "GET", path, None, headers)
    saved = orjson.loads(reply.body)
    assert (saved["name"], saved["description"]) == ("mine", "changed elsewhere")


def test_delivery_settings_and_custom_headers_in_the_forms(
    page: Page, stack: ConsoleStack, artifacts: Path
) -> None:
    sign_in(page, KEY_A)
    token = f"Bearer tok-{uuid.uuid4().hex}"
    path = f"/settings-{uuid.uuid4().hex[:8]}"
    page.get_by_role("link", name="New webhook").click()
    page.get_by_label("Name").fill("tuned")
    page.get_by_label("URL").fill(stack.receiver.url(path))
    page.get_by_label("Every invoice event").check()
    page.get_by_label("Max concurrency").fill("4")
    page.get_by_label("Rate limit per second").fill("2.5")
    page.get_by_label("Timeout in seconds").fill("7")
    headers = page.get_by_label("Custom headers")
    headers.fill(f"Authorization: {token}\nX-Tenant: acme")
    # Every setting explains itself to assistive technology too.
    for label in ("Max concurrency", "Rate limit per second", "Timeout in seconds"):
        expect(page.get_by_label(label)).to_have_accessible_description(re.compile("Empty: "))
    expect(headers).to_have_accessible_description(re.compile("one Name: value per line"))
    shot(page, artifacts, "12-new-webhook-settings")
    page.get_by_role("button", name="Create webhook").click()
    secret = page.get_by_label("Signing secret").input_value()
    stack.receiver.expect(path, [secret])
    page.get_by_role("link", name="Continue to the webhook").click()
    webhook_id = page.url.rsplit("/", 1)[1]

    # The page shows the settings and the header names; the credential nowhere in its HTML.
    expect(page.locator("#max-concurrency")).to_have_text("4 at once")
    expect(page.locator("#rate-limit")).to_have_text("2.5 per second")
    expect(page.locator("#timeout")).to_have_text("7 s")
    shown = page.locator("#headers li")
    expect(shown).to_have_count(2)
    expect(shown.nth(0)).to_have_text("Authorization: ******** (value encrypted, not shown)")
    expect(shown.nth(1)).to_have_text("X-Tenant: acme")
    assert "tok-" not in page.content()
    shot(page, artifacts, "13-webhook-settings")

    # Edit: the sensitive line reads as the placeholder; kept as it is, the value stays.
    page.get_by_role("link", name="Edit").click()
    expect(headers).to_have_value("Authorization: ********\nX-Tenant: acme")
    expect(page.get_by_label("Max concurrency")).to_have_value("4")
    expect(page.get_by_label("Rate limit per second")).to_have_value("2.5")
    assert "tok-" not in page.content()
    headers.fill("Authorization: ********\nX-Tenant: globex")
    page.get_by_label("Max concurrency").fill("")
    page.get_by_role("button", name="Save changes").click()
    expect(page.get_by_role("status")).to_have_text("Changes saved.")
    expect(page.locator("#max-concurrency")).to_have_text("adaptive")
    expect(shown.nth(1)).to_have_text("X-Tenant: globex")
    saved = stack.api("GET", f"/v1/webhooks/{webhook_id}", key=KEY_A).json
    assert saved["headers"] == {"Authorization": "********", "X-Tenant": "globex"}
    assert saved["sensitive_headers"] == ["Authorization"]
    assert (saved["max_concurrency"], saved["rate_limit"], saved["timeout_seconds"]) == (
        None,
        2.5,
        7,
    )

    # The receiver gets the stored credential, unchanged by the edit, and the new X-Tenant.
    def send_test() -> None:
        page.get_by_role("button", name="Send test event").click()
        expect(page.get_by_role("status")).to_contain_text("Test event sent as delivery")

    def edited(request: Received) -> bool:
        return request.headers.get("x-tenant") == "globex"

    send_until_received(stack, path, send_test, edited)
    request = next(r for r in stack.receiver.received(path) if edited(r))
    assert request.headers["authorization"] == token

    # An invalid header name is refused, named next to the form, and what was typed stays.
    page.get_by_role("link", name="Edit").click()
    typed = "Authorization: ********\nX-Tenant: globex\nBad Header: x"
    headers.fill(typed)
    page.get_by_role("button", name="Save changes").click()
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("headers")
    expect(alert).to_contain_text("'Bad Header' is not a valid field name")
    expect(headers).to_have_value(typed)
    shot(page, artifacts, "14-webhook-header-refused")
    # hookstream's own headers and the placeholder on a header not stored are refused too.
    for line, reason in (
        ("Webhook-Signature: v1,x", "'Webhook-Signature' is set by hookstream itself"),
        ("X-Api-Key: ********", "the redacted placeholder"),
        ("no colon here", "is not a header"),
    ):
        headers.fill(f"Authorization: ********\n{line}")
        page.get_by_role("button", name="Save changes").click()
        expect(page.get_by_role("alert")).to_contain_text(reason)
    unchanged = stack.api("GET", f"/v1/webhooks/{webhook_id}", key=KEY_A).json
    assert unchanged["headers"] == saved["headers"]

    # A deleted line removes its header: the credential goes.
    headers.fill("X-Tenant: globex")
    page.get_by_role("button", name="Save changes").click()
    expect(page.get_by_role("status")).to_have_text("Changes saved.")
    expect(shown).to_have_count(1)
    final = stack.api("GET", f"/v1/webhooks/{webhook_id}", key=KEY_A).json
    assert final["headers"] == {"X-Tenant": "globex"} and final["sensitive_headers"] == []


def test_tenant_keys_see_only_their_tenant(
    page: Page, browser: Browser, stack: ConsoleStack, artifacts: Path
) -> None:
    # An admin key acts for any tenant: the form asks which.
    sign_in(page, ADMIN)
    page.get_by_role("link", name="New webhook").click()
    page.get_by_label("Tenant").fill(TENANT_B)
    page.get_by_label("Name").fill("tenant b's endpoint")
    page.get_by_label("URL").fill(stack.receiver.url("/b-only"))
    page.get_by_label("All events").check()
    page.get_by_role("button", name="Create webhook").click()
    page.get_by_role("link", name="Continue to the webhook").click()
    webhook_id = page.url.rsplit("/", 1)[1]
    page.goto("/console/webhooks")
    expect(page.get_by_role("row").filter(has_text="tenant b's endpoint")).to_contain_text(TENANT_B)

    for key, sees in ((KEY_B, True), (KEY_A, False)):
        context = browser.new_context(base_url=stack.url, viewport=DESKTOP)
        try:
            other = context.new_page()
            sign_in(other, key)
            expect(other.get_by_text("tenant b's endpoint")).to_have_count(1 if sees else 0)
            response = other.goto(f"/console/webhooks/{webhook_id}")
            assert response is not None and response.status == (200 if sees else 404)
            if not sees:
                expect(other.get_by_role("heading", name="Not found")).to_be_visible()
                assert "tenant b" not in other.content()
                shot(other, artifacts, "09-other-tenant-not-found")
        finally:
            context.close()


def test_readable_on_a_phone(browser: Browser, stack: ConsoleStack, artifacts: Path) -> None:
    context = browser.new_context(base_url=stack.url, viewport=PHONE, is_mobile=True)
    try:
        page = context.new_page()
        sign_in(page, KEY_A)
        for name, url in (
            ("10-phone-webhooks", "/console/webhooks"),
            ("11-phone-deliveries", "/console/deliveries"),
        ):
            page.goto(url)
            # Wide tables scroll inside their box; the page itself never scrolls sideways.
            assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
            shot(page, artifacts, name)
    finally:
        context.close()
