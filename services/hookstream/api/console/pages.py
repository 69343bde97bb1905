"""Rendering console pages: the shared page context, redirects with a one-time message."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp_jinja2
from aiohttp import web
from multidict import MultiDictProxy

from hookstream.api.console.session import SESSION_COOKIE, Session, Sessions
from hookstream.api.errors import UNREADABLE_BODY, ApiError, body_in_time, unreadable

ROOT = "/console"
SESSIONS = web.AppKey("console_sessions", Sessions)
SESSION = web.RequestKey("console_session", Session)
# A message for the next page after a redirect (post/redirect/get); it holds no secret.
FLASH_COOKIE = "hookstream_flash"
# Failures an action reports on the page it came from rather than on an error page.
REPORTED_ON_PAGE = (409, 422)

Form = MultiDictProxy[str | bytes | bytearray | web.FileField]


def sessions_of(request: web.Request) -> Sessions:
    return request.config_dict[SESSIONS]


def session_of(request: web.Request) -> Session:
    return request[SESSION]


def scope_of(request: web.Request) -> str | None:
    """The tenant the signed-in key acts for; None: a platform admin sees every tenant."""
    return session_of(request).caller.tenant_id


def render(
    request: web.Request, template: str, context: dict[str, Any], status: int = 200
) -> web.Response:
    session = request.get(SESSION)
    page = {
        "session": session,
        "csrf_token": sessions_of(request).csrf_token(session.cookie) if session else "",
        "flash": _read_flash(request),
        **context,
    }
    response = aiohttp_jinja2.render_template(template, request, page, status=status)
    if FLASH_COOKIE in request.cookies:
        response.del_cookie(FLASH_COOKIE, path=ROOT)
    return response


def redirect(location: str, message: str | None = None, *, error: bool = False) -> web.Response:
    # 303: the browser follows with a GET, so reloading the next page resubmits nothing.
    response = web.Response(status=303, headers={"Location": location})
    if message is not None:
        text = ("error:" if error else "ok:") + message
        response.set_cookie(
            FLASH_COOKIE,
            base64.urlsafe_b64encode(text.encode()).decode("ascii"),
            path=ROOT,
            httponly=True,
            samesite="Strict",
        )
    return response


async def act(
    request: web.Request, back: str, action: Callable[[], Awaitable[str]]
) -> web.Response:
    """Run a state-changing action and go back to `back` saying how it went."""
    try:
        message = await action()
    except ApiError as exc:
        if exc.status not in REPORTED_ON_PAGE:
            raise
        return redirect(back, exc.message, error=True)
    return redirect(back, message)


async def read_form(request: web.Request) -> Form:
    """The submitted form (read once, then cached by aiohttp); 400 if it cannot be decoded.

    A browser sends what its form declares. Anything else (a charset Python does not know,
    bytes that are not in the declared one, multipart without or with the wrong boundary, a
    part in an unknown transfer encoding) is refused as the malformed request it is, rather
    than ending as an error page that blames the console.
    """
    try:
        return await body_in_time(request.post())
    # aiohttp's form and multipart parsers raise these for undecodable input: ValueError
    # (UnicodeDecodeError, boundaries, base64), LookupError (unknown charsets), RuntimeError
    # (unknown Content-Transfer-Encoding or Content-Encoding of a part, a bad `_charset_`).
    except (ValueError, LookupError, RuntimeError, *UNREADABLE_BODY) as exc:
        message = f"The form could not be read: {unreadable(exc)}"
        raise ApiError(400, "invalid_form", message) from None


def text_field(form: Form, name: str) -> str:
    value = form.get(name, "")
    return value.strip() if isinstance(value, str) else ""


def clear_session(response: web.StreamResponse) -> None:
    response.del_cookie(SESSION_COOKIE, path=ROOT)


def _read_flash(request: web.Request) -> dict[str, str] | None:
    raw = request.cookies.get(FLASH_COOKIE)
    if not raw:
        return None
    try:
        text = base64.urlsafe_b64decode(raw.encode("ascii")).decode()
    except (binascii.Error, ValueError):
        return None
    kind, _, message = text.partition(":")
    return {"kind": "error" if kind == "error" else "ok", "message": message}
