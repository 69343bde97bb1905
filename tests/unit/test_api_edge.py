"""The API's edge in isolation: what its models, times and error mapping make of bad input.

tests/integration/test_api_hostile.py sends hostile requests to a running API; these are the
rules it relies on, checked directly and fast, and the other side of the line: a bug (an
unexpected exception) is still a 500 `internal_error`, never passed off as the client's fault.
"""

from __future__ import annotations

import base64
from typing import Any

import pytest
from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage
from aiohttp.test_utils import TestClient, TestServer
from pydantic import BaseModel

from hookstream.api import models
from hookstream.api.bodies import validated
from hookstream.api.console.pages import read_form
from hookstream.api.errors import ApiError, error_middleware
from hookstream.api.times import parse_instant

MAX_MS = 253_402_300_799_999


def _cursor(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


def _refused(model: type[BaseModel], data: dict[str, Any]) -> list[str]:
    with pytest.raises(ApiError) as raised:
        validated(model, data)
    assert raised.value.status == 422
    return [problem["field"] for problem in raised.value.details]


# -- times --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "ms"),
    [
        (0, 0),
        (MAX_MS, MAX_MS),
        ("1714521600000", 1714521600000),
        (" 5 ", 5),
        ("-0", 0),
        ("0" * 5000 + "5", 5),
        ("2024-05-01T00:00:00Z", 1714521600000),
        ("2024-05-01T00:00:00z", 1714521600000),
        ("2024-05-01T02:00:00+02:00", 1714521600000),
        ("2024-05-01T00:00:00.123456Z", 1714521600123),
        # Naive text is UTC.
        ("2024-05-01T00:00:00", 1714521600000),
        ("9999-12-31T23:59:59.999Z", MAX_MS),
    ],
)
def test_instants_that_parse(value: str | int, ms: int) -> None:
    assert parse_instant("since", value) == ms


@pytest.mark.parametrize(
    "value",
    [
        -1,
        MAX_MS + 1,
        2**63,
        10**400,
        True,
        # str.isdigit() takes these, int() does not (they were 500s).
        "\u00b2",
        "--5",
        "9" * 4301,
        "-" + "9" * 4301,
        # Other digits than ASCII, and what is almost a number.
        "\u0663",
        "+5",
        "1e3",
        "0x10",
        str(MAX_MS + 1),
        # UTC values outside the years 1-9999, and what is not a datetime at all.
        "0001-01-01T00:00:00+01:00",
        "9999-12-31T23:59:59-23:59",
        "0000-01-01T00:00:00Z",
        "10000-01-01T00:00:00Z",
        "2024-05-01T24:00:00Z",
        "2024-05-01T00:00:00+24:00",
        "yesterday",
        "",
        "\x00",
        "x" * 100_000,
    ],
)
def test_instants_that_are_422_naming_the_field(value: str | int) -> None:
    with pytest.raises(ApiError) as raised:
        parse_instant("until", value)
    assert raised.value.status == 422
    assert raised.value.details[0]["field"] == "until"
    assert "until" in raised.value.message


# -- models -------------------------------------------------------------------------------


def test_data_as_deep_as_a_delivery_can_carry() -> None:
    event = {"type": "invoice.paid"}
    validated(models.EventPublish, {**event, "data": _nested(models.MAX_DATA_DEPTH)})
    too_deep = _nested(models.MAX_DATA_DEPTH + 1)
    assert _refused(models.EventPublish, {**event, "data": too_deep}) == ["data"]
    arrays: Any = 1
    for _ in range(models.MAX_DATA_DEPTH):
        arrays = [arrays]
    assert _refused(models.EventPublish, {**event, "data": {"a": arrays}}) == ["data"]


@pytest.mark.parametrize("ident", ["a\x00b", "\x1f", "a\u2028b", "\u200b", "a\x7f", "a\ud800"])
def test_ids_are_printable(ident: str) -> None:
    # The router and the sender drop records whose ids are not printable.
    body = {"type": "invoice.paid", "data": {}, "id": ident}
    assert _refused(models.EventPublish, body) == ["id"]
    assert _refused(models.DeliveryListQuery, {"webhook_id": ident}) == ["webhook_id"]
    assert _refused(models.TenantQuery, {"tenant_id": ident}) == ["tenant_id"]


@pytest.mark.parametrize(
    "url", ["https://93.184.215.14/\r\nX: 1", "https://a\x00/", "https://\x7f/"]
)
def test_urls_hold_no_control_characters(url: str) -> None:
    # urlsplit drops CR, LF and TAB, so the check would see another URL than the one stored.
    assert _refused(models.WebhookUpdate, {"url": url}) == ["url"]


def test_names_refuse_control_characters_descriptions_keep_line_breaks() -> None:
    assert _refused(models.WebhookUpdate, {"name": "a\x00"}) == ["name"]
    assert _refused(models.PrincipalPut, {"permissions": ["ok", "a\x1b[31m"]}) == ["permissions.1"]
    assert _refused(models.DeliveryListQuery, {"event_type": "a\x00"}) == ["event_type"]
    kept = validated(models.WebhookUpdate, {"description": "two\r\nlines\tand a tab"})
    assert kept.description == "two\r\nlines\tand a tab"
    assert _refused(models.WebhookUpdate, {"description": "a\x00"}) == ["description"]
    # Printable text beyond ASCII is a name like any other.
    assert validated(models.WebhookUpdate, {"name": "Zahlungen \U0001f4b6 \u00e9"}).name


@pytest.mark.parametrize("last", ['[0,"\\u0000"]', '[0,"\\ud800"]', '[0,"a\\nb"]'])
def test_cursors_that_no_page_hands_out(last: str) -> None:
    cursor = _cursor(last)
    assert _refused(models.DeliveryListQuery, {"cursor": cursor}) == ["cursor"]
    assert _refused(models.WebhookListQuery, {"cursor": cursor}) == ["cursor"]


def test_a_cursor_a_page_hands_out_is_accepted() -> None:
    cursor = _cursor('[1714521600000,"dlv_0123456789abcdef"]')
    assert validated(models.DeliveryListQuery, {"cursor": cursor}).cursor == cursor


# -- error mapping ------------------------------------------------------------------------


async def _client(handler: Any) -> TestClient[web.Request, web.Application]:
    app = web.Application(middlewares=[error_middleware])
    app.router.add_post("/", handler)
    client = TestClient(TestServer(app))
    await client.start_server()
    return client


@pytest.mark.parametrize("failure", [RuntimeError("bug"), KeyError("x"), ValueError("bug")])
async def test_an_unexpected_exception_is_still_a_500(failure: Exception) -> None:
    async def handler(request: web.Request) -> web.Response:
        raise failure

    client = await _client(handler)
    try:
        reply = await client.post("/", data=b"{}")
        assert reply.status == 500
        assert (await reply.json())["error"]["code"] == "internal_error"
    finally:
        await client.close()


async def test_an_unreadable_body_is_a_400() -> None:
    async def handler(request: web.Request) -> web.Response:
        await request.read()
        return web.Response()

    client = await _client(handler)
    try:
        reply = await client.post("/", data=b"not gzip", headers={"Content-Encoding": "gzip"})
        assert reply.status == 400
        error = (await reply.json())["error"]
        assert error["code"] == "bad_request" and "gzip" in error["message"]
    finally:
        await client.close()


async def test_a_bad_http_message_raised_by_a_handler_is_a_400() -> None:
    async def handler(request: web.Request) -> web.Response:
        raise BadHttpMessage("Too many headers received")

    client = await _client(handler)
    try:
        reply = await client.post("/")
        assert reply.status == 400
        assert "Too many headers" in (await reply.json())["error"]["message"]
    finally:
        await client.close()


async def test_only_the_form_parsers_errors_are_the_clients() -> None:
    async def handler(request: web.Request) -> web.Response:
        form = await read_form(request)
        if form.get("fail"):
            raise ValueError("a bug after the form was read")
        return web.Response(text="ok")

    client = await _client(handler)
    try:
        for headers, body in (
            ({"Content-Type": "multipart/form-data"}, b"--x\r\n"),
            ({"Content-Type": "application/x-www-form-urlencoded; charset=nope"}, b"a=b"),
            ({"Content-Type": "application/x-www-form-urlencoded"}, b"a=\xff"),
        ):
            reply = await client.post("/", data=body, headers=headers)
            assert reply.status == 400, await reply.text()
            assert (await reply.json())["error"]["code"] == "invalid_form"
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        assert (await client.post("/", data=b"a=b", headers=form)).status == 200
        assert (await client.post("/", data=b"fail=1", headers=form)).status == 500
    finally:
        await client.close()
