"""API keys: who is calling, and which tenant a request acts for.

A key maps to one tenant, or to `*` for a platform admin who may act for any tenant.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from hookstream.api.errors import ApiError, invalid

ADMIN = "*"
PROTECTED_PREFIX = "/v1/"


@dataclass(frozen=True, slots=True)
class Caller:
    # None for a platform admin key.
    tenant_id: str | None
    # Which configured key this is, as a digest safe to store (Idempotency-Key records);
    # stable for as long as the key is configured.
    key_id: str = ""

    @property
    def is_admin(self) -> bool:
        return self.tenant_id is None

    def sees(self, tenant_id: str) -> bool:
        return self.tenant_id is None or self.tenant_id == tenant_id

    def read_scope(self, requested: str | None) -> str | None:
        """The tenant a read is limited to; None lets an admin read every tenant."""
        if self.tenant_id is None:
            return requested
        self._check_own(requested)
        return self.tenant_id

    def write_tenant(self, requested: str | None) -> str:
        """The tenant a new resource belongs to; an admin must name it."""
        if self.tenant_id is None:
            if requested is None:
                raise invalid("tenant_id", "required when acting with an admin key")
            return requested
        self._check_own(requested)
        return self.tenant_id

    def _check_own(self, requested: str | None) -> None:
        if requested is not None and requested != self.tenant_id:
            raise invalid("tenant_id", "a tenant key acts only for its own tenant")


CALLER = web.RequestKey("caller", Caller)


class ApiKeys:
    """The configured keys, matched in constant time."""

    def __init__(self, keys: Mapping[str, str]) -> None:
        # Comparing fixed-size digests keeps the comparison independent of key lengths too.
        self._keys = [(_digest(key), tenant) for key, tenant in keys.items()]

    def caller(self, presented: str) -> Caller | None:
        return self._find(_digest(presented), lambda key_digest: key_digest)

    def fingerprint(self, presented: str, pepper: bytes) -> bytes:
        """What a console session stores instead of the key: useless without `pepper`."""
        return _fingerprint(_digest(presented), pepper)

    def session_caller(self, fingerprint: bytes, pepper: bytes) -> Caller | None:
        """The caller whose key has `fingerprint`; None once that key is no longer configured."""
        return self._find(fingerprint, lambda key_digest: _fingerprint(key_digest, pepper))

    def derive(self, purpose: bytes) -> bytes:
        """A secret for `purpose` that only a holder of every configured key could compute.

        Replicas configured alike derive the same secret, so what one signs another accepts;
        changing the keys changes it.
        """
        material = b"".join(sorted(digest + tenant.encode() for digest, tenant in self._keys))
        return hmac.new(hashlib.sha256(material).digest(), purpose, hashlib.sha256).digest()

    def _find(self, wanted: bytes, form: Callable[[bytes], bytes]) -> Caller | None:
        found: tuple[bytes, str] | None = None
        # Every key is compared, whichever matches, so timing says nothing about which did.
        for key_digest, tenant in self._keys:
            if hmac.compare_digest(wanted, form(key_digest)):
                found = (key_digest, tenant)
        if found is None:
            return None
        key_digest, tenant = found
        return Caller(None if tenant == ADMIN else tenant, _key_id(key_digest))


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()


def _key_id(key_digest: bytes) -> str:
    # Keyed with a fixed label, so the stored value is no plain hash of the key.
    return hmac.new(b"hookstream api key id", key_digest, hashlib.sha256).hexdigest()[:32]


def _fingerprint(key_digest: bytes, pepper: bytes) -> bytes:
    return hmac.new(pepper, key_digest, hashlib.sha256).digest()


def auth_middleware(api_keys: ApiKeys) -> Middleware:
    @web.middleware
    async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith(PROTECTED_PREFIX):
            request[CALLER] = _authenticate(api_keys, request)
        return await handler(request)

    return authenticate


def _authenticate(api_keys: ApiKeys, request: web.Request) -> Caller:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise _unauthorized("missing API key: send Authorization: Bearer <key>")
    caller = api_keys.caller(token.strip())
    if caller is None:
        raise _unauthorized("invalid API key")
    return caller


def _unauthorized(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": "Bearer"})


def caller(request: web.Request) -> Caller:
    return request[CALLER]
