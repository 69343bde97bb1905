"""Every console request passes here: session, CSRF, security headers, errors as pages."""

from __future__ import annotations

import logging
import time

from aiohttp import web
from aiohttp.typedefs import Handler

from hookstream.api.auth import CALLER
from hookstream.api.console.pages import (
    ROOT,
    SESSION,
    clear_session,
    read_form,
    redirect,
    render,
    sessions_of,
    text_field,
)
from hookstream.api.console.session import CSRF_FIELD, SESSION_COOKIE
from hookstream.api.errors import ApiError

log = logging.getLogger(__name__)

SIGN_IN = f"{ROOT}/sign-in"
STATIC = f"{ROOT}/static/"

# Every asset comes from the api itself; no inline script runs even if escaping ever failed.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}

FORBIDDEN_MESSAGE = (
    "This form has expired or did not come from this console. Go back, reload the page and "
    "try again."
)


@web.middleware
async def guard_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await _guarded(request, handler)
    except ApiError as exc:
        response = error_page(request, exc.status, exc.message)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = error_page(request, exc.status, exc.reason)
    except Exception:
        log.exception("console: unhandled error on %s %s", request.method, request.path)
        response = error_page(request, 500, "Something went wrong; the API's log has the details.")
    response.headers.update(SECURITY_HEADERS)
    if not request.path.startswith(STATIC):
        # Pages show tenant data and, once, a secret: never keep them in a cache.
        response.headers["Cache-Control"] = "no-store"
    return response


async def _guarded(request: web.Request, handler: Handler) -> web.StreamResponse:
    # Reachable without a session: the sign-in form (it checks its own CSRF token) and the
    # stylesheet and script it needs.
    if request.path == SIGN_IN or request.path.startswith(STATIC):
        return await handler(request)
    session = sessions_of(request).open(request.cookies.get(SESSION_COOKIE), time.time())
    if session is None:
        response = redirect(SIGN_IN)
        if SESSION_COOKIE in request.cookies:
            clear_session(response)
        return response
    request[SESSION] = session
    # The same caller the JSON API resolves from a bearer key, for the shared domain logic.
    request[CALLER] = session.caller
    if request.method == "POST":
        await require_csrf(request, session.cookie)
    return await handler(request)


async def require_csrf(request: web.Request, binding: str) -> None:
    form = await read_form(request)
    if not sessions_of(request).csrf_ok(binding, text_field(form, CSRF_FIELD)):
        raise ApiError(403, "csrf", FORBIDDEN_MESSAGE)


def error_page(request: web.Request, status: int, message: str) -> web.Response:
    return render(request, "error.html", {"status": status, "message": message}, status=status)
