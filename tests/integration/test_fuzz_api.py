"""Property test: any bytes POSTed as a request body end in a 4xx from `read_body`, never a 500.

Each API body model sits behind a route of a real aiohttp application served on loopback;
the requests are real HTTP. The routes do only what every API handler does first
(`read_body(request, Model)`), so what is tested is the body boundary, not route logic.
"""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from hookstream.api import models
from hookstream.api.bodies import read_body
from hookstream.api.errors import ApiError

BODY_MODELS = [
    m
    for m in vars(models).values()
    if isinstance(m, type) and issubclass(m, models.Body) and m is not models.Body
]
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=15,
)


def _route(model: type[BaseModel]) -> Any:
    async def handler(request: web.Request) -> web.Response:
        try:
            await read_body(request, model)
        except ApiError as exc:
            return exc.response()
        return web.Response(status=204)

    return handler


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    app = web.Application()
    for model in BODY_MODELS:
        app.router.add_post(f"/{model.__name__}", _route(model))
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server = TestServer(app, host="127.0.0.1", port=0)
    asyncio.run_coroutine_threadsafe(server.start_server(), loop).result(10)
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        asyncio.run_coroutine_threadsafe(server.close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def _post(url: str, body: bytes) -> tuple[int, bytes]:
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _fields_of(model: type[BaseModel]) -> st.SearchStrategy[bytes]:
    names = [*sorted(model.model_fields), "unknown"]
    return st.dictionaries(st.sampled_from(names), JSON, max_size=len(names)).map(
        lambda d: json.dumps(d).encode()
    )


@pytest.mark.parametrize("model", BODY_MODELS, ids=lambda m: m.__name__)
def test_any_body_is_a_4xx_with_a_json_error(base_url: str, model: type[BaseModel]) -> None:
    @settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(
        body=st.binary(max_size=300)
        | JSON.map(lambda v: json.dumps(v).encode())
        | _fields_of(model)
    )
    def check(body: bytes) -> None:
        status, payload = _post(f"{base_url}/{model.__name__}", body)
        assert status in (204, 400, 422), (status, payload)
        if status != 204:
            error = json.loads(payload)
            assert error["error"]["code"] in ("invalid_json", "invalid_body", "validation_error")

    check()
