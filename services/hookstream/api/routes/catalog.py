"""The event-type catalog, grouped by category."""

from __future__ import annotations

from aiohttp import web

from hookstream.api.bodies import respond
from hookstream.api.docs import operation
from hookstream.api.lookup import api_of
from hookstream.api.models import Catalog, CategoryOut, EventTypeOut

routes = web.RouteTableDef()


@routes.get("/v1/event-types")
@operation(
    "Every event type a webhook can subscribe to, by category, with examples",
    "catalog",
    response=Catalog,
)
async def event_types(request: web.Request) -> web.StreamResponse:
    api = api_of(request)
    catalog = api.catalog
    return respond(
        Catalog(
            # The version every webhook body's envelope carries (router and resend alike).
            api_version=api.settings.api_version,
            categories=[
                CategoryOut(
                    category=category,
                    event_types=[EventTypeOut.model_validate(t.as_dict()) for t in types],
                )
                for category, types in catalog.by_category().items()
            ],
        )
    )
