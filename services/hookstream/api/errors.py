"""One error shape for every failure: `{"error": {"code", "message", "details"}}`, never a trace."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any, TypeVar

import orjson
from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage
from aiohttp.typedefs import Handler

log = logging.getLogger(__name__)

# aiohttp answers larger request bodies with 413 before any handler parses them.
MAX_REQUEST_BYTES = 1024 * 1024

# aiohttp's own HTTP errors (routing, body size) mapped onto stable codes.
_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
}


# What reading a request's body raises when its bytes are not what its headers say (a body
# that does not decompress as its Content-Encoding says, a broken chunk): the client's to
# fix, so a 400, never the 500 of an unexpected exception.
UNREADABLE_BODY = (BadHttpMessage, web.RequestPayloadError)

# Longest a request's body may take to arrive once its headers have; past it the answer is 408.
# A client that stops sending mid-body holds a handler no longer than this, and neither does
# a body aiohttp's decoder never finishes: a `Content-Encoding: deflate` body that is not
# deflate, sent apart from its headers, leaves `request.read()` waiting for good (aiohttp
# 3.14; the parser's error reaches the log, not the waiting handler).
BODY_SECONDS = 10.0

T = TypeVar("T")


async def body_in_time(read: Awaitable[T]) -> T:
    """`read` (of the request's body), or a 408 once BODY_SECONDS have passed."""
    try:
        async with asyncio.timeout(BODY_SECONDS):
            return await read
    except TimeoutError:
        raise ApiError(
            408, "body_timeout", f"the request body did not arrive within {BODY_SECONDS:g} s"
        ) from None


class ApiError(Exception):
    """A client-visible failure; the middleware renders it with its status."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers

    def response(self) -> web.Response:
        return error_response(self.status, self.code, self.message, self.details, self.headers)


def error_response(
    status: int,
    code: str,
    message: str,
    details: Any = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    body = {"error": {"code": code, "message": message, "details": details}}
    return web.Response(
        status=status,
        body=orjson.dumps(body),
        content_type="application/json",
        headers=headers,
    )


def not_found(what: str, ident: str) -> ApiError:
    return ApiError(404, "not_found", f"{what} {ident!r} not found")


def invalid(field: str, message: str, **extra: Any) -> ApiError:
    """A 422 naming the offending field, in the same shape as body validation errors."""
    return ApiError(
        422,
        "validation_error",
        f"invalid field {field}: {message}",
        [{"field": field, "message": message, **extra}],
    )


def precondition_failed(what: str, ident: str, etag: str) -> ApiError:
    """412: the request's If-Match does not name the current version."""
    return ApiError(
        412,
        "precondition_failed",
        f"{what} {ident!r} has changed since the version If-Match names; read it again",
        {"etag": etag},
        {"ETag": etag},
    )


def conflict(message: str, details: Any = None) -> ApiError:
    return ApiError(409, "conflict", message, details)


def unavailable(message: str, details: Any = None) -> ApiError:
    return ApiError(503, "unavailable", message, details)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return exc.response()
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        code = _HTTP_CODES.get(exc.status, "http_error")
        return error_response(exc.status, code, _http_message(request, exc), headers=headers)
    except UNREADABLE_BODY as exc:
        return error_response(400, "bad_request", f"malformed request body: {unreadable(exc)}")
    except Exception:
        # The trace goes to the log only; clients get a stable, uninformative 500.
        log.exception("api: unhandled error on %s %s", request.method, request.path)
        return error_response(500, "internal_error", "internal error; see the API's log")


def unreadable(exc: Exception) -> str:
    """What is wrong with an unreadable body; aiohttp words it "400, message:\n  <reason>"."""
    return str(exc).rsplit("message:", 1)[-1].strip() or type(exc).__name__


def _http_message(request: web.Request, exc: web.HTTPException) -> str:
    if exc.status == 404:
        return f"no route for {request.method} {request.path}"
    if exc.status == 405:
        return f"{request.method} is not allowed on {request.path}"
    if exc.status == 413:
        return f"request body is larger than {MAX_REQUEST_BYTES} bytes"
    return exc.reason
