"""API keys: who is calling, and which tenant a request acts for.

A key maps to one tenant, or to `*` for a platform admin who may act for any tenant.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
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


class KeyRing:
    """The configured keys, matched in constant time."""

    def __init__(self, keys: Mapping[str, str]) -> None:
        # Comparing fixed-size digests keeps the comparison independent of key lengths too.
        self._keys = [(_digest(key), tenant) for key, tenant in keys.items()]

    def caller(self, presented: str) -> Caller | None:
        digest = _digest(presented)
        found: str | None = None
        # Every key is compared, whichever matches, so timing says nothing about which did.
        for key_digest, tenant in self._keys:
            if hmac.compare_digest(digest, key_digest):
                found = tenant
        if found is None:
            return None
        return Caller(None if found == ADMIN else found)


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()


def auth_middleware(ring: KeyRing) -> Middleware:
    @web.middleware
    async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith(PROTECTED_PREFIX):
            request[CALLER] = _authenticate(ring, request)
        return await handler(request)

    return authenticate


def _authenticate(ring: KeyRing, request: web.Request) -> Caller:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise _unauthorized("missing API key: send Authorization: Bearer <key>")
    caller = ring.caller(token.strip())
    if caller is None:
        raise _unauthorized("invalid API key")
    return caller


def _unauthorized(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": "Bearer"})


def caller(request: web.Request) -> Caller:
    return request[CALLER]
