"""Signing in with an API key, and out again."""

from __future__ import annotations

import time

from aiohttp import web

from hookstream.api.console.guard import SIGN_IN, require_csrf
from hookstream.api.console.pages import (
    ROOT,
    clear_session,
    read_form,
    redirect,
    render,
    sessions_of,
    text_field,
)
from hookstream.api.console.session import SESSION_COOKIE, SIGN_IN_COOKIE, new_sign_in_nonce

routes = web.RouteTableDef()


@routes.get("/")
async def home(request: web.Request) -> web.StreamResponse:
    return redirect(f"{ROOT}/webhooks")


@routes.get("/sign-in")
async def sign_in_form(request: web.Request) -> web.StreamResponse:
    return _sign_in_page(request)


@routes.post("/sign-in")
async def sign_in(request: web.Request) -> web.StreamResponse:
    # No session yet: the form's token is bound to a nonce cookie only this browser holds,
    # so another site cannot sign a visitor in with its own key. Without the cookie a fresh
    # nonce stands in, which no token matches.
    nonce = request.cookies.get(SIGN_IN_COOKIE) or new_sign_in_nonce()
    await require_csrf(request, _binding(nonce))
    form = await read_form(request)
    sessions = sessions_of(request)
    cookie = sessions.sign_in(text_field(form, "api_key"), time.time())
    if cookie is None:
        return _sign_in_page(request, "That API key is not valid. Check it and try again.", 401)
    response = redirect(f"{ROOT}/webhooks")
    response.set_cookie(
        SESSION_COOKIE,
        cookie,
        path=ROOT,
        max_age=sessions.lifetime,
        httponly=True,
        samesite="Strict",
        secure=request.secure,
    )
    response.del_cookie(SIGN_IN_COOKIE, path=SIGN_IN)
    return response


@routes.post("/sign-out")
async def sign_out(request: web.Request) -> web.StreamResponse:
    response = redirect(SIGN_IN, "Signed out.")
    clear_session(response)
    return response


def _sign_in_page(
    request: web.Request, error: str | None = None, status: int = 200
) -> web.Response:
    nonce = request.cookies.get(SIGN_IN_COOKIE) or new_sign_in_nonce()
    token = sessions_of(request).csrf_token(_binding(nonce))
    response = render(request, "sign_in.html", {"error": error, "sign_in_token": token}, status)
    response.set_cookie(
        SIGN_IN_COOKIE, nonce, path=SIGN_IN, httponly=True, samesite="Strict", secure=request.secure
    )
    return response


def _binding(nonce: str) -> str:
    # Distinct from every session cookie, so a sign-in token is never a session's token.
    return f"sign-in:{nonce}"
