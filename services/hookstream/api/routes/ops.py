"""Operational routes: liveness, readiness, Prometheus metrics and the OpenAPI document."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from hookstream.api.bodies import respond
from hookstream.api.context import Api
from hookstream.api.docs import operation
from hookstream.api.errors import error_response
from hookstream.api.lookup import api_of
from hookstream.api.models import Status
from hookstream.core.view import ViewNotReadyError

routes = web.RouteTableDef()

TAG = "operations"
# Below common probe timeouts; a healthy broker and store answer in milliseconds.
CHECK_TIMEOUT = 2.0
OPENAPI = web.AppKey("openapi", bytes)

Probe = Callable[[Api], None]
WaitReady = Callable[[float], None]


@routes.get("/healthz")
@operation("The process is up", TAG, response=Status, public=True)
async def healthz(request: web.Request) -> web.StreamResponse:
    return respond(Status(status="ok"))


@routes.get("/readyz")
@operation(
    "Kafka and the store answer and both views have read their topics",
    TAG,
    response=Status,
    public=True,
    errors=(503,),
    description="A 503 lists each check's result in `details`.",
)
async def readyz(request: web.Request) -> web.StreamResponse:
    api = api_of(request)
    kafka, store = await asyncio.gather(_check(api, _kafka), _check(api, _store))
    checks = {
        "kafka": kafka,
        "store": store,
        "webhooks_view": _view(api.webhooks.wait_ready),
        "principals_view": _view(api.principals.wait_ready),
    }
    if all(result == "ok" for result in checks.values()):
        return respond(Status(status="ready"))
    return error_response(503, "not_ready", "not ready", checks)


@routes.get("/metrics")
@operation("Prometheus metrics of this process", TAG, public=True, media_type="text/plain")
async def metrics(request: web.Request) -> web.StreamResponse:
    # CONTENT_TYPE_LATEST carries a version parameter that aiohttp's content_type refuses.
    return web.Response(
        body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )


@routes.get("/openapi.json")
@operation("This API's OpenAPI 3.1 document", TAG, public=True)
async def openapi(request: web.Request) -> web.StreamResponse:
    return web.Response(body=request.app[OPENAPI], content_type="application/json")


async def _check(api: Api, probe: Probe) -> str:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            await api.blocking(probe, api)
    except TimeoutError:
        return f"no answer within {CHECK_TIMEOUT:g} s"
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return "ok"


def _kafka(api: Api) -> None:
    present = api.writer.producer.list_topics(timeout=CHECK_TIMEOUT).topics
    needed = (api.topics.events, api.topics.webhooks, api.topics.principals, api.topics.deliveries)
    missing = [topic for topic in needed if topic not in present]
    if missing:
        raise RuntimeError(f"missing topics: {', '.join(missing)}")


def _store(api: Api) -> None:
    api.store.ping()


def _view(wait_ready: WaitReady) -> str:
    try:
        wait_ready(0)
    except ViewNotReadyError:
        return "loading"
    except Exception as exc:
        return f"failed: {exc}"
    return "ok"
