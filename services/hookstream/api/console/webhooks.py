"""Webhook pages: the list with health, create and edit, and every per-webhook action."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel

from hookstream.api.bodies import validated
from hookstream.api.console.pages import (
    ROOT,
    Form,
    act,
    read_form,
    redirect,
    render,
    scope_of,
    session_of,
    text_field,
)
from hookstream.api.context import Api
from hookstream.api.errors import ApiError, invalid
from hookstream.api.lookup import (
    api_of,
    delivery_page,
    webhook_in_scope,
    webhooks_in_scope,
)
from hookstream.api.manage import create_webhook, delete_webhook, rotate_secret, update_webhook
from hookstream.api.models import (
    MAX_CONCURRENCY,
    MAX_GRACE_SECONDS,
    MAX_TIMEOUT_SECONDS,
    REDACTED,
    DeliveryListQuery,
    Recover,
    RotateSecret,
    WebhookCreate,
    WebhookUpdate,
)
from hookstream.api.present import delivery_out, health_out, webhook_out
from hookstream.api.resend import recover_failed, send_test
from hookstream.api.times import now_ms
from hookstream.core.records import Webhook
from hookstream.endpoints.headers import split_header_line
from hookstream.events.catalog import ALL_EVENTS
from hookstream.store import Health, Store

routes = web.RouteTableDef()
M = TypeVar("M", bound=BaseModel)

RECENT_DELIVERIES = 10
# What the Recover form offers by default: everything that failed in the last day.
DEFAULT_RECOVER_WINDOW = timedelta(hours=24)
# The delivery settings' form fields; empty: the default (adaptive, no limit, the sender's).
SETTINGS = ("max_concurrency", "rate_limit", "timeout_seconds")
# A rate as a number input sends it: decimal, maybe with an exponent (no sign, no "inf").
_DECIMAL = re.compile(r"([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][-+]?[0-9]+)?")
# One problem as a 422's details list it.
Problem = dict[str, str]


def _page_of(webhook_id: str) -> str:
    return f"{ROOT}/webhooks/{webhook_id}"


@routes.get("/webhooks")
async def webhook_list(request: web.Request) -> web.StreamResponse:
    api = api_of(request)
    webhooks = webhooks_in_scope(api, scope_of(request))
    healths = await api.blocking(_healths, api.store, webhooks, now_ms())
    rows = [
        (webhook, health_out(webhook, health))
        for webhook, health in zip(webhooks, healths, strict=True)
    ]
    return render(request, "webhooks.html", {"rows": rows})


def _healths(store: Store, webhooks: list[Webhook], now: int) -> list[Health]:
    # One executor job for the whole page rather than one per webhook.
    return [store.webhook_health(webhook.id, now) for webhook in webhooks]


@routes.get("/webhooks/new")
async def new_webhook(request: web.Request) -> web.StreamResponse:
    return _form_page(request, None, {"events": []})


@routes.post("/webhooks")
async def create(request: web.Request) -> web.StreamResponse:
    api = api_of(request)
    form = await read_form(request)
    fields = _typed(form)
    if session_of(request).caller.is_admin:
        fields["tenant_id"] = text_field(form, "tenant_id") or None
    try:
        body = _create_body(fields)
        tenant_id = session_of(request).caller.write_tenant(body.tenant_id)
        webhook, secret = await create_webhook(api, tenant_id, body)
    except ApiError as exc:
        if exc.status != 422:
            raise
        return _form_page(request, None, fields, exc)
    return _secret_page(request, api, webhook, secret, "Webhook created")


@routes.get("/webhooks/{id}")
async def webhook_page(request: web.Request) -> web.StreamResponse:
    api = api_of(request)
    webhook = _webhook(request)
    now = now_ms()
    health = await api.blocking(api.store.webhook_health, webhook.id, now)
    recent = await delivery_page(
        api, webhook.tenant_id, DeliveryListQuery(webhook_id=webhook.id, limit=RECENT_DELIVERIES)
    )
    since = datetime.now(UTC) - DEFAULT_RECOVER_WINDOW
    return render(
        request,
        "webhook.html",
        {
            "webhook": webhook_out(webhook, now, api.keyring),
            "rate_limit": _number(webhook.rate_limit),
            "health": health_out(webhook, health),
            "deliveries": [delivery_out(row) for row in recent.items],
            "recover_since": since.strftime("%Y-%m-%dT%H:%M"),
        },
    )


@routes.get("/webhooks/{id}/edit")
async def edit_webhook(request: web.Request) -> web.StreamResponse:
    webhook = _webhook(request)
    return _form_page(request, webhook, _current_fields(webhook))


def _current_fields(webhook: Webhook) -> dict[str, Any]:
    """The edit form's fields as the webhook holds them; sensitive header values redacted."""
    headers = (f"{h.name}: {REDACTED if h.sensitive else h.value}" for h in webhook.headers)
    return {
        "name": webhook.name,
        "url": webhook.url,
        "description": webhook.description,
        "events": list(webhook.events),
        "max_concurrency": _number(webhook.max_concurrency),
        "rate_limit": _number(webhook.rate_limit),
        "timeout_seconds": _number(webhook.timeout_seconds),
        "headers": "\n".join(headers),
    }


@routes.post("/webhooks/{id}/edit")
async def save_webhook(request: web.Request) -> web.StreamResponse:
    webhook = _webhook(request)
    form = await read_form(request)
    fields = _typed(form)
    # The version the form was opened on: saving over someone else's change made since
    # (another user, an auto-disable) is refused, never silent.
    version = text_field(form, "version")
    if_match = (f'"v{version}"',) if version.isascii() and version.isdigit() else None
    try:
        body = _update_body(fields, webhook)
        await update_webhook(api_of(request), scope_of(request), webhook.id, body, if_match)
    except ApiError as exc:
        if exc.status == 412:
            # The form saves every field: saved again as typed, it would undo the other
            # change. So it shows the current version, to make the change on.
            current = _webhook(request)
            changed = ApiError(
                412,
                exc.code,
                "This webhook was changed by someone else while you edited it. The form now "
                "shows the current version: make your changes again and save.",
            )
            return _form_page(request, current, _current_fields(current), changed)
        if exc.status != 422:
            raise
        return _form_page(request, webhook, fields, exc)
    return redirect(_page_of(webhook.id), "Changes saved.")


@routes.post("/webhooks/{id}/enabled")
async def set_enabled(request: web.Request) -> web.StreamResponse:
    webhook = _webhook(request)
    enable = text_field(await read_form(request), "enabled") == "true"

    async def apply() -> str:
        body = WebhookUpdate(enabled=enable)
        await update_webhook(api_of(request), scope_of(request), webhook.id, body)
        return "Webhook enabled." if enable else "Webhook disabled: it receives nothing now."

    return await act(request, _page_of(webhook.id), apply)


@routes.post("/webhooks/{id}/rotate-secret")
async def rotate(request: web.Request) -> web.StreamResponse:
    api = api_of(request)
    webhook = _webhook(request)
    grace = text_field(await read_form(request), "grace_period_seconds") or "0"
    try:
        # ASCII digits only: str.isdigit() also takes "²", which int() refuses.
        if not (grace.isascii() and grace.isdigit()):
            raise invalid("grace_period_seconds", "a whole number of seconds")
        # Beyond the limit's digits the value can only be too large; int() refuses text
        # beyond 4,300 digits, so it is not converted.
        digits = grace.lstrip("0") or "0"
        too_long = len(digits) > len(str(MAX_GRACE_SECONDS))
        seconds = MAX_GRACE_SECONDS + 1 if too_long else int(digits)
        body = validated(RotateSecret, {"grace_period_seconds": seconds})
    except ApiError as exc:
        return redirect(_page_of(webhook.id), exc.message, error=True)
    rotated, secret = await rotate_secret(
        api, scope_of(request), webhook.id, body.grace_period_seconds
    )
    return _secret_page(request, api, rotated, secret, "Secret rotated")


@routes.post("/webhooks/{id}/delete")
async def delete(request: web.Request) -> web.StreamResponse:
    webhook = _webhook(request)
    await delete_webhook(api_of(request), scope_of(request), webhook.id)
    return redirect(f"{ROOT}/webhooks", f"Webhook {webhook.name!r} deleted; its history stays.")


@routes.post("/webhooks/{id}/test")
async def test(request: web.Request) -> web.StreamResponse:
    webhook = _webhook(request)

    async def apply() -> str:
        sent = await send_test(api_of(request), webhook)
        return f"Test event sent as delivery {sent.delivery_id}."

    return await act(request, _page_of(webhook.id), apply)


@routes.post("/webhooks/{id}/recover")
async def recover(request: web.Request) -> web.StreamResponse:
    webhook = _webhook(request)
    since = text_field(await read_form(request), "since")

    async def apply() -> str:
        window = validated(Recover, {"since": since})
        done = await recover_failed(api_of(request), webhook, window)
        skipped = f" ({done.skipped} no longer stored)" if done.skipped else ""
        return f"Replaying {done.replayed} failed deliveries{skipped}."

    return await act(request, _page_of(webhook.id), apply)


def _webhook(request: web.Request) -> Webhook:
    return webhook_in_scope(api_of(request), scope_of(request), request.match_info["id"])


def _webhook_fields(form: Form) -> dict[str, Any]:
    return {
        "name": text_field(form, "name"),
        "url": text_field(form, "url"),
        "description": text_field(form, "description") or None,
        "events": [value for value in form.getall("events", []) if isinstance(value, str)],
    }


def _typed(form: Form) -> dict[str, Any]:
    """The form as typed, shown again when it is refused: the webhook's fields, and the
    delivery settings and headers as text (None for a field the form did not send)."""
    typed = _webhook_fields(form)
    for name in (*SETTINGS, "headers"):
        typed[name] = text_field(form, name) if name in form else None
    return typed


def _create_body(typed: dict[str, Any]) -> WebhookCreate:
    fields = {name: typed[name] for name in ("name", "url", "description", "events")}
    if "tenant_id" in typed:
        fields["tenant_id"] = typed["tenant_id"]
    fields.update(_settings(typed))
    problems: list[Problem] = []
    if typed["headers"] is not None:
        fields["headers"], problems = _header_lines(typed["headers"])
    return _validated(WebhookCreate, fields, problems)


def _update_body(typed: dict[str, Any], webhook: Webhook) -> WebhookUpdate:
    """Every field the form sent; an empty setting clears it. Headers are merged as the
    API merges them: only the lines added or changed are sent, a sensitive header whose
    line still reads as the placeholder keeps its stored value, and a header whose line was
    deleted is sent as null (removed)."""
    fields = {name: typed[name] for name in ("name", "url", "description", "events")}
    fields.update(_settings(typed))
    problems: list[Problem] = []
    if typed["headers"] is not None:
        lines, problems = _header_lines(typed["headers"])
        changes = _header_changes(lines, webhook)
        if changes:
            fields["headers"] = changes
    return _validated(WebhookUpdate, fields, problems)


def _settings(typed: dict[str, Any]) -> dict[str, Any]:
    """The delivery settings the form sent, as the API takes them: None for an empty field,
    numbers for numbers, and text the API names as not a number otherwise."""
    settings: dict[str, Any] = {}
    for name in SETTINGS:
        text = typed[name]
        if text is None:
            continue
        if not text:
            settings[name] = None
        elif name == "rate_limit":
            settings[name] = float(text) if _DECIMAL.fullmatch(text) else text
        else:
            limit = MAX_CONCURRENCY if name == "max_concurrency" else MAX_TIMEOUT_SECONDS
            settings[name] = _whole(text, limit)
    return settings


def _whole(text: str, limit: int) -> int | str:
    """`text` as a whole number if it is one (ASCII digits); as given otherwise."""
    if not (text.isascii() and text.isdigit()):
        return text
    # Beyond the limit's digits it can only be too large; int() refuses beyond 4,300 digits.
    digits = text.lstrip("0") or "0"
    return limit + 1 if len(digits) > len(str(limit)) else int(digits)


def _number(value: float | None) -> str:
    """A setting as the form and the page show it: "" for none, 2 rather than 2.0."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _header_lines(text: str) -> tuple[dict[str, str], list[Problem]]:
    """The headers textarea, one `Name: value` per line (blank lines skipped), and what in
    it cannot be read as such. Names and values are checked by the model afterwards."""
    headers: dict[str, str] = {}
    problems: list[Problem] = []
    seen: set[str] = set()
    # Only line feeds (and CR before them) end a line: any other control character stays
    # in the value, where the model refuses it by name.
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.strip(" \t\r")
        if not line:
            continue
        parsed = split_header_line(line)
        if parsed is None:
            shown = line if len(line) <= 60 else line[:59] + "…"
            message = f"line {number} ({shown!r}) is not a header: write it as Name: value"
            problems.append({"field": "headers", "message": message})
            continue
        name, value = parsed
        if name.lower() in seen:
            message = f"header {name!r} is on more than one line (names are case-insensitive)"
            problems.append({"field": "headers", "message": message})
        else:
            seen.add(name.lower())
            headers[name] = value
    return headers, problems


def _header_changes(lines: dict[str, str], webhook: Webhook) -> dict[str, str | None]:
    """What to PATCH to turn the webhook's headers into `lines`."""
    stored = {h.name.lower(): h for h in webhook.headers}
    changes: dict[str, str | None] = {}
    for name, value in lines.items():
        held = stored.get(name.lower())
        if held is not None and held.sensitive and value == REDACTED:
            continue  # left as shown: the stored value stays
        if held is not None and not held.sensitive and (held.name, held.value) == (name, value):
            continue  # unchanged
        # Anything else is sent, the placeholder on a header that is not stored too: the
        # model refuses that, saying to send the value.
        changes[name] = value
    given = {name.lower() for name in lines}
    for header in webhook.headers:
        if header.name.lower() not in given:
            changes[header.name] = None
    return changes


def _validated(model: type[M], fields: dict[str, Any], problems: list[Problem]) -> M:
    """`validated`, with what the form's own reading found wrong in the same 422."""
    try:
        body = validated(model, fields)
    except ApiError as exc:
        if not problems or exc.status != 422:
            raise
        raise _refused([*problems, *(exc.details or ())]) from None
    if problems:
        raise _refused(problems)
    return body


def _refused(problems: list[Problem]) -> ApiError:
    names = ", ".join(dict.fromkeys(problem["field"] for problem in problems))
    return ApiError(422, "validation_error", f"invalid field(s): {names}", problems)


def _form_page(
    request: web.Request,
    webhook: Webhook | None,
    fields: dict[str, Any],
    error: ApiError | None = None,
) -> web.Response:
    api = api_of(request)
    context = {
        "webhook": webhook,
        "fields": fields,
        "selected": set(fields.get("events") or ()),
        "all_events": ALL_EVENTS,
        "categories": api.catalog.by_category(),
        "error": error,
    }
    status = 200 if error is None else error.status
    return render(request, "webhook_form.html", context, status=status)


def _secret_page(
    request: web.Request, api: Api, webhook: Webhook, secret: str, title: str
) -> web.Response:
    context = {"title": title, "webhook": webhook_out(webhook, now_ms(), api.keyring)}
    return render(request, "secret.html", {**context, "secret": secret})
