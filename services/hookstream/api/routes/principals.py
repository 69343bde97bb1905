"""PUT /v1/principals/{id}: a webhook owner's tenant and permissions, on `principals`."""

from __future__ import annotations

from aiohttp import web

from hookstream.api.auth import caller
from hookstream.api.bodies import path_ident, read_body, respond
from hookstream.api.docs import operation
from hookstream.api.errors import not_found
from hookstream.api.lookup import api_of
from hookstream.api.models import PrincipalOut, PrincipalPut
from hookstream.core.records import Principal

routes = web.RouteTableDef()


@routes.put("/v1/principals/{id}")
@operation(
    "Set a principal's tenant and permissions; later events are routed with them",
    "principals",
    response=PrincipalOut,
    body=PrincipalPut,
    errors=(400, 404, 413, 422, 503),
    description="A tenant key may write only principals of its own tenant.",
)
async def put_principal(request: web.Request) -> web.StreamResponse:
    api = api_of(request)
    body = await read_body(request, PrincipalPut)
    who = caller(request)
    tenant_id = who.write_tenant(body.tenant_id)
    principal_id = path_ident(request)
    async with api.lock("principal", principal_id):
        api.require_ready(api.principals, "principals")
        existing = api.principals.get(principal_id)
        # Taking over another tenant's principal would cut its webhooks off; only admins may.
        if existing is not None and not who.sees(existing.tenant_id):
            raise not_found("principal", principal_id)
        principal = Principal(principal_id, tenant_id, frozenset(body.permissions))
        value = api.codec.write(principal)
        await api.write_through(
            api.principals, api.topics.principals, "principal", principal_id, value
        )
    return respond(PrincipalOut(**principal.to_record()))
