"""The console as a sub-application mounted at /console on the API's app."""

from __future__ import annotations

from pathlib import Path

import aiohttp_jinja2
import jinja2
from aiohttp import web

from hookstream.api.auth import ApiKeys
from hookstream.api.console import deliveries, signin, webhooks
from hookstream.api.console.guard import guard_middleware
from hookstream.api.console.pages import ROOT, SESSIONS
from hookstream.api.console.session import Sessions

HERE = Path(__file__).resolve().parent
ROUTE_TABLES = (signin.routes, webhooks.routes, deliveries.routes)


def add_console(app: web.Application, api_keys: ApiKeys) -> None:
    """Mount the console; its pages stay out of the OpenAPI document, which covers /v1/."""
    console = web.Application(middlewares=[guard_middleware])
    console[SESSIONS] = Sessions(api_keys)
    aiohttp_jinja2.setup(
        console,
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        # Everything shown comes from tenants or their endpoints: escape all of it.
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    for table in ROUTE_TABLES:
        console.add_routes(table)
    console.router.add_static("/static", HERE / "static")
    app.add_subapp(ROOT, console)
