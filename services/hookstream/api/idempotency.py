"""`Idempotency-Key` on every POST of the API: a repeat gets the first answer, not a second effect.

A middleware, so every POST route under /v1/, today's and tomorrow's, honours the header
without code of its own. Keys are scoped by the caller's tenant (`*` for admin keys), so two
tenants' keys never meet; within a scope a key belongs to the API key that first used it, for
one method, path, query and body. The first request claims the key in the store (one atomic
upsert, whichever replica gets there first); a repeat meanwhile answers 409; once the first is
answered, repeats get that answer again, marked `Idempotent-Replayed: true`.

Not kept, so that the client may retry with the same key: 5xx answers (the server's fault, and
503 says "retry") and 409 (a conflict with the resource's state, or with a request in flight,
may be over by the next try). Every other answer is kept for the window, 4xx included: the same
request would be refused the same way, and a corrected one deserves a new key.
"""

from __future__ import annotations

import hashlib
import logging
import re
from urllib.parse import parse_qsl

import orjson
from aiohttp import hdrs, web
from aiohttp.typedefs import Handler

from hookstream.api.auth import PROTECTED_PREFIX, caller
from hookstream.api.context import API, Api
from hookstream.api.errors import ApiError, body_in_time
from hookstream.api.metrics import API_IDEMPOTENCY
from hookstream.api.times import now_ms
from hookstream.core.records import StoredSecret
from hookstream.endpoints.secrets import SecretError
from hookstream.store.idempotency import Claimed, KeyedRequest, StoredAnswer, Taken

log = logging.getLogger(__name__)

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
MAX_KEY_CHARS = 255
# Visible ASCII: what UUIDs, ULIDs and base64 tokens are made of, and safe in any log line.
KEY_PATTERN = r"^[\x21-\x7e]{1,255}$"
_KEY = re.compile(KEY_PATTERN)
ADMIN_SCOPE = "*"
# How long a claim may stay in flight before a repeat of the same request takes it over: its
# replica died mid-request. Well above what a handler takes (its Kafka writes give up after
# write_timeout), so a slow first request is never run twice.
MIN_LEASE_SECONDS = 120.0
LEASE_WRITE_TIMEOUTS = 4
# Headers that belong to one transmission of an answer, not to the answer.
_NOT_KEPT = frozenset(
    name.lower() for name in (hdrs.CONTENT_LENGTH, hdrs.DATE, hdrs.SERVER, hdrs.TRANSFER_ENCODING)
)


def honours_idempotency(method: str, path: str) -> bool:
    """Whether a route takes `Idempotency-Key`: every POST of the API (the console's forms
    have CSRF tokens and answer HTML, not this contract)."""
    return method == hdrs.METH_POST and path.startswith(PROTECTED_PREFIX)


def keeps(status: int) -> bool:
    """Whether an answer with `status` is kept for its key (see the module's docstring)."""
    return status < 500 and status != 409


@web.middleware
async def idempotency_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Inside auth (it needs the caller), outside every handler."""
    routed = request.match_info.http_exception is None
    if not (routed and honours_idempotency(request.method, request.path)):
        return await handler(request)
    key = _key_of(request)
    if key is None:
        return await handler(request)
    api = request.config_dict[API]
    keyed = await _keyed(request, key)
    claim = await api.blocking(
        api.store.idempotency_keys.claim,
        keyed,
        now_ms(),
        int(api.settings.idempotency_key_window * 1000),
        claim_lease_ms(api),
    )
    if isinstance(claim, Taken):
        return _repeat(api, keyed, claim)
    API_IDEMPOTENCY.labels("first").inc()
    return await _first(api, keyed, claim, handler, request)


def _key_of(request: web.Request) -> str | None:
    sent = request.headers.getall(HEADER, [])
    if not sent:
        return None
    if len(sent) > 1:
        raise _invalid_key(f"send one {HEADER} header, not {len(sent)}")
    key = sent[0]
    if _KEY.fullmatch(key):
        return key
    if not key:
        raise _invalid_key(f"{HEADER} is empty; send 1 to {MAX_KEY_CHARS} characters")
    if len(key) > MAX_KEY_CHARS:
        raise _invalid_key(f"{HEADER} is {len(key)} characters long; at most {MAX_KEY_CHARS}")
    found = next(char for char in key if not _KEY.fullmatch(char))
    raise _invalid_key(
        f"{HEADER} may hold only visible ASCII characters (no spaces); found U+{ord(found):04X}"
    )


def _invalid_key(message: str) -> ApiError:
    return ApiError(400, "invalid_idempotency_key", message, {"header": HEADER})


async def _keyed(request: web.Request, key: str) -> KeyedRequest:
    who = caller(request)
    # Read here, before the claim: a body too large or unreadable is refused without one.
    # aiohttp keeps the bytes, so the handler reads them again.
    body = await body_in_time(request.read())
    path = request.rel_url.raw_path
    return KeyedRequest(
        scope=ADMIN_SCOPE if who.tenant_id is None else who.tenant_id,
        key=key,
        principal=who.key_id,
        fingerprint=request_fingerprint(
            request.method, path, request.rel_url.raw_query_string, body
        ),
        method=request.method,
        path=path,
    )


def request_fingerprint(method: str, path: str, query: str, body: bytes) -> str:
    """A digest of what a request asks for. JSON bodies are compared by content, so a client
    that serialises its retry with other spacing or key order still makes the same request."""
    params = sorted(parse_qsl(query, keep_blank_values=True))
    digest = hashlib.sha256()
    for part in (method, path, orjson.dumps(params).decode()):
        digest.update(part.encode("utf-8", "surrogatepass") + b"\0")
    digest.update(_canonical_body(body))
    return digest.hexdigest()


def _canonical_body(body: bytes) -> bytes:
    # read_body takes an empty body for {}; so does this.
    try:
        data = orjson.loads(body) if body.strip() else {}
        return b"json:" + orjson.dumps(data, option=orjson.OPT_SORT_KEYS)
    except (orjson.JSONDecodeError, orjson.JSONEncodeError):
        return b"raw:" + body


def claim_lease_ms(api: Api) -> int:
    """How long a claim (a key's, or an event id's) may stay unanswered before a repeat of the
    same request takes it over."""
    seconds = max(MIN_LEASE_SECONDS, LEASE_WRITE_TIMEOUTS * api.settings.write_timeout)
    return int(seconds * 1000)


async def _first(
    api: Api, keyed: KeyedRequest, claim: Claimed, handler: Handler, request: web.Request
) -> web.StreamResponse:
    try:
        response = await handler(request)
    except ApiError as exc:
        # Rendered here rather than by the error middleware: a refusal is an answer too.
        response = exc.response()
    except BaseException:
        # A bug (500) or a cancelled request: nothing to keep, and the client may retry.
        await _release(api, keyed, claim)
        raise
    answer = _answer(api, keyed, response)
    if answer is None:
        await _release(api, keyed, claim)
        return response
    try:
        kept = await api.blocking(api.store.idempotency_keys.complete, keyed, claim, answer)
    except Exception as exc:
        # The request took effect; its answer goes out even though a repeat cannot get it.
        log.warning("api: the answer for Idempotency-Key %r was not kept: %s", keyed.key, exc)
        return response
    if not kept:
        log.warning("api: Idempotency-Key %r was taken over before its answer was kept", keyed.key)
    return response


def _answer(api: Api, keyed: KeyedRequest, response: web.StreamResponse) -> StoredAnswer | None:
    if not keeps(response.status):
        return None
    if not isinstance(response, web.Response) or not isinstance(response.body, bytes | None):
        log.warning("api: %s %s answered a stream; not kept", keyed.method, keyed.path)
        return None
    body = response.body or b""
    try:
        text = body.decode()
    except UnicodeDecodeError:
        log.warning(
            "api: %s %s answered bytes that are not UTF-8; not kept", keyed.method, keyed.path
        )
        return None
    # str(): multidict's case-insensitive names are a str subclass JSON encoders refuse.
    headers = {
        str(name): value
        for name, value in response.headers.items()
        if name.lower() not in _NOT_KEPT
    }
    # Sealed: a create's or a rotation's answer holds a signing secret in full.
    return StoredAnswer(response.status, headers, api.keyring.encrypt(_context(keyed), text))


async def _release(api: Api, keyed: KeyedRequest, claim: Claimed) -> None:
    try:
        await api.blocking(api.store.idempotency_keys.release, keyed, claim)
    except Exception as exc:
        # The claim then lapses after its lease; until then repeats answer 409.
        log.warning("api: Idempotency-Key %r could not be released: %s", keyed.key, exc)


def _repeat(api: Api, keyed: KeyedRequest, taken: Taken) -> web.Response:
    if taken.principal != keyed.principal:
        raise _reused(keyed, taken, "was first used with another API key", "different_api_key")
    if (taken.method, taken.path) != (keyed.method, keyed.path):
        first = f"{taken.method} {taken.path}"
        raise _reused(keyed, taken, f"was first used for {first}", "different_request")
    if taken.fingerprint != keyed.fingerprint:
        reason = "was first used with a different request body or query"
        raise _reused(keyed, taken, reason, "different_body")
    answer = taken.answer
    if answer is None:
        API_IDEMPOTENCY.labels("in_progress").inc()
        raise ApiError(
            409,
            "idempotency_key_in_progress",
            f"a request with this {HEADER} is in progress; retry shortly",
            {"idempotency_key": keyed.key},
            headers={hdrs.RETRY_AFTER: "1"},
        )
    try:
        body = api.keyring.decrypt(_context(keyed), StoredSecret(answer.body))
    except SecretError as exc:
        log.error("api: the kept answer for Idempotency-Key %r is unreadable: %s", keyed.key, exc)
        raise ApiError(
            500,
            "internal_error",
            f"the kept answer for this {HEADER} cannot be decrypted; see the API's log",
        ) from None
    API_IDEMPOTENCY.labels("replayed").inc()
    return web.Response(
        status=answer.status,
        body=body.encode(),
        headers={**answer.headers, REPLAYED_HEADER: "true"},
    )


def _reused(keyed: KeyedRequest, taken: Taken, problem: str, reason: str) -> ApiError:
    API_IDEMPOTENCY.labels("mismatch").inc()
    return ApiError(
        422,
        "idempotency_key_reused",
        f"{HEADER} {keyed.key!r} {problem}; a key stands for one request: use a new key",
        {"idempotency_key": keyed.key, "reason": reason},
    )


def _context(keyed: KeyedRequest) -> str:
    # What the sealed body is bound to, in the place of a webhook id: NUL cannot occur in one,
    # so a kept answer never decrypts as a webhook's secret, nor under another key.
    return "\0".join(("idempotency-key", keyed.scope, keyed.key))
