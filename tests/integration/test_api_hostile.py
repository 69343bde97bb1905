"""Hostile input to every API route that reads a body, a query string or an id: never a 5xx.

A real `hookstream run api` process (real broker, PostgreSQL store, no pipeline behind it)
gets targeted requests: timestamps at and beyond every edge and in every spelling, numbers
beyond 64 bits, NaN and Infinity tokens, nesting beyond orjson's limits, huge strings,
control characters, lone surrogates, invalid UTF-8, duplicate keys, JSON of every type where
an object belongs, wrong Content-Types, and query strings and ids made of the same.

The property: no answer is a 5xx, and every 4xx of /v1/ is the documented error JSON that
names the problem (a 422 names each bad field in its details and its message). The console's
forms answer pages, not JSON, so they are held to "no 5xx" only. A 5xx is a bug either way:
bad input is the client's to fix, and a 500 means the API failed to say what was wrong.

Every case hypothesis found is kept as an explicit regression case (`REGRESSIONS`, and the
`@example`s), run on every CI run whatever the generated examples are.

Out of the app's reach, and so out of the property: what aiohttp's HTTP parser refuses before
any middleware runs (a request line above 8190 bytes, a broken chunk) gets its plain-text 400.
The requests here are well-formed HTTP carrying hostile content, except where a regression
case says otherwise.
"""

from __future__ import annotations

import base64
import concurrent.futures
import json
import socket
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from hookstream.api.auth import ApiKeys
from hookstream.api.console.session import CSRF_FIELD, SESSION_COOKIE, Sessions
from hookstream.api.errors import BODY_SECONDS
from hookstream.events.catalog import default_catalog
from tests.helpers import Reply, fresh_store_url, http_request
from tests.pipeline import Service, lone_api_settings, running_api

pytestmark = pytest.mark.integration

KEY = "key-hostile-tenant-0123456789"
ADMIN = "key-hostile-admin-0123456789"
TENANT = "tenant_hostile"
# A public address as a literal: URL checks need no DNS, and nothing is ever sent there.
PUBLIC_URL = "https://93.184.215.14/hooks"
# The largest instant Python's datetime can hold, in Unix milliseconds (9999-12-31T23:59:59.999Z).
MAX_MS = 253_402_300_799_999
EVENT_TYPES = [event_type.type for event_type in default_catalog().types]

# Deterministic: the same requests on every run, nothing remembered between runs.
_HOSTILE = settings(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)


def hostile(examples: int) -> settings:
    return settings(_HOSTILE, max_examples=examples)


# The code each 4xx status may carry; a 4xx with any other code is an undocumented answer.
ERROR_CODES = {
    400: {"invalid_json", "invalid_body", "bad_request"},
    401: {"unauthorized"},
    404: {"not_found"},
    405: {"method_not_allowed"},
    409: {"webhook_disabled", "webhook_deleted", "body_unavailable"},
    413: {"payload_too_large"},
    422: {"validation_error", "unknown_event_type", "unknown_event_types"},
}


# -- the API under test -------------------------------------------------------------------


@dataclass
class Target:
    port: int
    service: Service
    # Webhooks of TENANT for the routes that act on one; each route has its own, so one
    # route's examples (a PATCH that disables, a recover) do not change what another sees.
    webhooks: dict[str, str]
    # Console sessions (cookie, CSRF token) by key, made the way the console makes them.
    sessions: dict[str, tuple[str, str]]

    def send(
        self,
        method: str,
        target: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        return http_request(self.port, method, target, body, headers)

    def api(
        self,
        method: str,
        target: str,
        body: bytes | None = None,
        *,
        key: str = KEY,
        content_type: str | None = "application/json",
    ) -> Reply:
        headers = {"Authorization": f"Bearer {key}"}
        if content_type is not None:
            headers["Content-Type"] = content_type
        return self.send(method, target, body, headers)

    def console(
        self,
        method: str,
        target: str,
        body: bytes | None = None,
        *,
        key: str = KEY,
        content_type: str | None = "application/x-www-form-urlencoded",
    ) -> Reply:
        cookie, _ = self.sessions[key]
        headers = {"Cookie": f"{SESSION_COOKIE}={cookie}"}
        if content_type is not None:
            headers["Content-Type"] = content_type
        return self.send(method, target, body, headers)

    def csrf(self, key: str = KEY) -> str:
        return self.sessions[key][1]

    def log_tail(self) -> str:
        return self.service.log()[-6000:]


@pytest.fixture(scope="module")
def target(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    directory: Path = tmp_path_factory.mktemp("api-hostile")
    # PostgreSQL, as deployed: it refuses some text (NUL) that SQLite stores.
    with fresh_store_url("postgresql", directory) as store_url:
        configured = lone_api_settings(kafka_bootstrap, store_url, {KEY: TENANT, ADMIN: "*"})
        issuer = Sessions(ApiKeys(configured.api_keys))
        sessions = {}
        for key in (KEY, ADMIN):
            cookie = issuer.sign_in(key, time.time())
            assert cookie is not None
            sessions[key] = (cookie, issuer.csrf_token(cookie))
        with running_api(configured, directory) as service:
            built = Target(configured.api_port, service, {}, sessions)
            for role in ("patch", "rotate", "recover", "console_edit", "console_recover"):
                reply = built.api(
                    "POST",
                    "/v1/webhooks",
                    orjson.dumps(
                        {"name": role, "url": PUBLIC_URL, "events": ["invoice.paid"]},
                    ),
                )
                assert reply.status == 201, reply.body
                built.webhooks[role] = orjson.loads(reply.body)["id"]
            yield built


def check(target: Target, reply: Reply, sent: str, *, console: bool = False) -> None:
    """The property: never a 5xx; on /v1/ every 4xx is the documented error naming the problem."""
    context = f"request: {sent}\nanswer: {reply.status} {reply.body[:600]!r}"
    assert reply.status < 500, f"{context}\n--- api log ---\n{target.log_tail()}"
    if console or reply.status < 400:
        return
    assert reply.headers.get_content_type() == "application/json", context
    body = orjson.loads(reply.body)
    assert set(body) == {"error"}, context
    error = body["error"]
    assert set(error) == {"code", "message", "details"}, context
    assert error["code"] in ERROR_CODES.get(reply.status, set()), context
    assert isinstance(error["message"], str) and error["message"], context
    if reply.status == 422:
        details = error["details"]
        assert isinstance(details, list) and details, context
        for problem in details:
            assert isinstance(problem, dict), context
            assert isinstance(problem.get("field"), str) and problem["field"], context
            assert isinstance(problem.get("message"), str) and problem["message"], context
            if error["code"] == "validation_error":
                assert problem["field"] in error["message"], context


def describe(method: str, path: str, body: bytes | None, headers: Any = None) -> str:
    shown = body if body is None or len(body) <= 400 else body[:400] + b"..."
    return f"{method} {path[:400]} {headers or ''} body={shown!r}"


# -- hostile values -----------------------------------------------------------------------

# Timestamps in every spelling: years at and beyond datetime's range, offsets up to +-23:59
# (and beyond), naive, with and without fractions, separators fromisoformat may or may not take.
ISO_TEXT = st.builds(
    "{}-{}-{}{}{}:{}:{}{}{}".format,
    st.sampled_from(["0000", "0001", "0002", "1969", "1970", "2024", "9999", "10000", "-001"]),
    st.sampled_from(["01", "02", "12", "13", "00"]),
    st.sampled_from(["01", "28", "29", "31", "32", "00"]),
    st.sampled_from(["T", "t", " ", "_"]),
    st.sampled_from(["00", "23", "24"]),
    st.sampled_from(["00", "59", "60"]),
    st.sampled_from(["00", "59", "60", "61"]),
    st.sampled_from(["", ".0", ".123", ".999999", ".1234567", ",5"]),
    st.sampled_from(
        [
            "",
            "Z",
            "z",
            "+00:00",
            "-00:00",
            "+23:59",
            "-23:59",
            "+24:00",
            "-24:00",
            "+0100",
            "+01",
            "+01:00:00",
            "+01:00:00.5",
            " UTC",
            "+99:99",
        ]
    ),
)
ISO_SPECIAL = st.sampled_from(
    [
        "0001-01-01T00:00:00+01:00",
        "9999-12-31T23:59:59.999999-23:59",
        "0001-01-01T00:00:00-23:59",
        "9999-12-31T23:59:59+23:59",
        "0001-01-01",
        "9999-12-31",
        "2024-W01-1",
        "2024-001",
        "20240501T000000Z",
        "T00:00:00",
        "00:00",
        "now",
        "",
        " ",
        "Z",
        "2024-05-01T00:00:00Z\x00",
        "2024-05-01T00:00:00\u2028",
        "\uff12\uff10\uff12\uff14-05-01T00:00:00Z",  # full-width digits
        "2024-05-01T00:00:00Z" * 4,
    ]
)
# Text that is (almost) Unix milliseconds: str.isdigit() takes more than int() does.
DIGIT_TEXT = st.sampled_from(
    [
        "0",
        "-0",
        "-1",
        "--5",
        "-",
        "+5",
        " 5 ",
        "5\n",
        "\u00a05",
        "٣",
        "²",
        "①",
        "\U0001d7d8",  # mathematical double-struck zero
        "1e3",
        "0x10",
        "1_000",
        "1.5",
        str(MAX_MS),
        str(MAX_MS + 1),
        str(2**63),
        str(2**64),
        "9" * 30,
        "9" * 4301,
        "-" + "9" * 4301,
        "0" * 5000 + "5",
    ]
)
INSTANT_TEXT = ISO_TEXT | ISO_SPECIAL | DIGIT_TEXT
NUMBERS = st.sampled_from(
    [
        0,
        -1,
        1,
        2**31,
        2**53 + 1,
        MAX_MS,
        MAX_MS + 1,
        2**63 - 1,
        2**63,
        2**64,
        -(2**63),
        -(2**63) - 1,
        10**30,
        10**400,
        1.5,
        -0.0,
        1e308,
        float("nan"),
        float("inf"),
        float("-inf"),
        True,
        False,
    ]
)
SPECIAL_TEXT = st.sampled_from(
    [
        "",
        " ",
        "\x00",
        "a\x00b",
        "\x01",
        "\x1f",
        "\x7f",
        "\t",
        "\n",
        "\r\n",
        "\u0085",
        "\u2028",
        "\u202e",
        "\ufeff",
        "\ufffd",
        "\ud800",
        "\udfff",
        "x\udc80y",
        "\ud83d\ude00",
        "😀",
        "e\u0301",
        "%00",
        "%ff",
        "../..",
        "/",
        "<script>alert(1)</script>",
        "' OR 1=1 --",
        "{{7*7}}",
        "null",
        "*",
        "invoice.*",
        "webhook.test",
        "invoice.paid",
    ]
)
LONG_TEXT = st.builds(
    lambda unit, count: unit * count,
    st.sampled_from(["a", "é", "😀", "\x00", "9", " "]),
    st.sampled_from([199, 200, 201, 2000, 2001, 2048, 2049, 5000]),
)
# Any character at all, surrogates and controls included (json.dumps escapes them).
ANY_TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=20)
TEXT = SPECIAL_TEXT | LONG_TEXT | ANY_TEXT | INSTANT_TEXT

# Destinations without DNS: literals, malformed hosts that fail before any look-up, localhost.
URLS = st.sampled_from(
    [
        PUBLIC_URL,
        "https://93.184.215.14:443/h?x=1#f",
        "http://93.184.215.14/",
        "HTTPS://93.184.215.14/",
        "https://user:pw@93.184.215.14/",
        "https://127.0.0.1/",
        "https://[::1]/",
        "https://[::ffff:127.0.0.1]/",
        "https://[64:ff9b::7f00:1]/",
        "https://[fe80::1%25eth0]/",
        "https://0x7f.1/",
        "https://2130706433/",
        "https://①②⑦。0。0。1/",
        "https://localhost/",
        "https://",
        "https:///path",
        "https:93.184.215.14",
        "//93.184.215.14/",
        "93.184.215.14",
        "https://[::1",
        "https://[v7.x]/",
        "https://[93.184.215.14]/",
        "https://93.184.215.14:99999/",
        "https://93.184.215.14:-1/",
        "https://93.184.215.14:0/",
        "https://93.184.215.14:abc/",
        "https://93.184.215.14:" + "9" * 5000 + "/",
        "file:///etc/passwd",
        "javascript:alert(1)",
        "data:text/plain,x",
        "ftp://93.184.215.14/",
        "https://a..b/",
        "https://.",
        "https://" + "a" * 64 + ".invalid/",
        "https://" + "a." * 130 + "invalid/",
        "https://xn--/",
        "https://xn--zz/",
        "https://\x00/",
        "https://93.184.215.14\x00.x/",
        "https://93.184.215.14/\r\nX-Injected: 1",
        "https://\ud800/",
        "https://%00/",
        "https://%zz/",
        "https://ex ample/",
        "https://93.184.215.14/" + "a" * 2030,
        "https://93.184.215.14/" + "a" * 2048,
    ]
)
URL_TEXT = URLS | st.builds(lambda path: f"{PUBLIC_URL}/{path}", TEXT) | TEXT

EVENT_NAME = st.sampled_from([*EVENT_TYPES[:3], "*", "invoice.*", "nope.*", "x" * 201]) | TEXT
EVENTS = (
    st.lists(EVENT_NAME, max_size=3)
    | st.builds(lambda name, count: [name] * count, EVENT_NAME, st.sampled_from([200, 201]))
    | st.lists(st.integers() | st.none() | st.lists(st.text(max_size=3), max_size=2), max_size=2)
)

JSON_ANY = st.recursive(
    st.none() | st.booleans() | NUMBERS | st.integers() | st.floats() | TEXT,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(TEXT, children, max_size=3),
    max_leaves=8,
)


@dataclass(frozen=True)
class Raw:
    """JSON text placed as is where a value goes: what json.dumps would not (or could not) write."""

    text: str


def nested(kind: str, depth: int) -> Raw:
    opening, closing = {"array": ("[", "]"), "object": ('{"a":', "}")}[kind]
    return Raw(opening * depth + "1" + closing * depth)


# Nesting on either side of orjson's limits: it writes 254 levels and reads 1024.
DEEP = st.builds(
    nested,
    st.sampled_from(["array", "object"]),
    st.sampled_from([100, 253, 254, 255, 256, 300, 1000, 1023, 1024, 1025, 5000]),
)
RAW_TOKENS = st.sampled_from(
    [
        Raw(text)
        for text in (
            *("NaN", "Infinity", "-Infinity", "1e400", "-1e400", "-0", "1" + "0" * 400),
            *("18446744073709551616", "0.1e-400", "01", "1.", ".5", "+1", "tru", "nul", "'x'"),
            *('"\\ud800"', '"\\udc00\\ud800"', '"\\u0000"', '"\\x41"'),
        )
    ]
)
BIG_DATA = st.builds(
    lambda count, value: {f"k{i}": value for i in range(count)},
    st.sampled_from([1000, 20_000]),
    st.sampled_from([0, "x" * 40, [None] * 10]),
)
DATA = DEEP | BIG_DATA | RAW_TOKENS | JSON_ANY | st.dictionaries(TEXT, JSON_ANY, max_size=4)
VALUE = JSON_ANY | RAW_TOKENS | DEEP | TEXT | NUMBERS


def encode(value: Any, *, ascii_only: bool = True, duplicate: str | None = None) -> bytes:
    """`value` as JSON, `Raw` parts written as they are.

    `ascii_only=False` writes lone surrogates as their (invalid) UTF-8 bytes instead of
    escapes; `duplicate` repeats that key of a top-level object with a second value.
    """
    raws: dict[str, str] = {}

    def swap(part: Any) -> Any:
        if isinstance(part, Raw):
            token = f"@@raw{len(raws)}@@"
            raws[token] = part.text
            return token
        if isinstance(part, dict):
            return {key: swap(item) for key, item in part.items()}
        if isinstance(part, list):
            return [swap(item) for item in part]
        return part

    text = json.dumps(swap(value), ensure_ascii=ascii_only)
    if duplicate is not None and isinstance(value, dict) and text.startswith("{"):
        text = "{" + json.dumps(duplicate) + ': "dup", ' + text[1:] if len(text) > 2 else text
    for token, raw in raws.items():
        text = text.replace(f'"{token}"', raw)
    return text.encode("utf-8", "surrogatepass")


CONTENT_TYPES = st.sampled_from(
    [
        "application/json",
        "application/json",
        "application/json; charset=latin-1",
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "multipart/form-data",
        "garbage",
        None,
    ]
)


@st.composite
def json_bodies(draw: st.DrawFn, base: dict[str, Any], fields: dict[str, Any]) -> bytes:
    """`base` with some fields set to hostile values, left out or joined by unknown ones."""
    body = dict(base)
    names = draw(st.lists(st.sampled_from([*fields, "unknown"]), min_size=1, max_size=3))
    for name in names:
        if name == "unknown":
            body[draw(TEXT)] = draw(VALUE)
        elif draw(st.integers(0, 9)) == 0:
            body.pop(name, None)
        else:
            body[name] = draw(fields[name] | VALUE)
    duplicate = draw(st.none() | st.sampled_from([*fields]))
    return encode(body, ascii_only=draw(st.booleans()), duplicate=duplicate)


# Whole bodies that are not the object asked for, or not JSON, or not UTF-8.
OTHER_BODIES = st.one_of(
    st.sampled_from(
        [
            b"",
            b"   ",
            b"\n",
            b"null",
            b"[]",
            b"{}",
            b"0",
            b"true",
            b'"x"',
            b"NaN",
            b"{",
            b'{"a":}',
            b"\xff\xfe{\x00}\x00",
            b"\xef\xbb\xbf{}",
            b'{"name":"\xff"}',
            b'{"name":"\xed\xa0\x80"}',
            b'{"\xc3":1}',
            b"{}{}",
            b"{} x",
            b"\x00",
            b"[" * 1025 + b"]" * 1025,
            b'{"a":' * 300 + b"1" + b"}" * 300,
            b"1" * 5000,
            b"x" * (1024 * 1024 + 1),
            b'{"data":"' + b"x" * (1024 * 1024) + b'"}',
        ]
    ),
    st.binary(max_size=64),
    JSON_ANY.map(encode),
)


def bodies(base: dict[str, Any], fields: dict[str, Any]) -> st.SearchStrategy[bytes]:
    return json_bodies(base, fields) | OTHER_BODIES


# -- the routes and their bodies ------------------------------------------------------------

INSTANT = INSTANT_TEXT | NUMBERS
PATTERN = st.sampled_from(["invoice.paid", "invoice.*", "*"])


@dataclass(frozen=True)
class BodyRoute:
    method: str
    # Filled in with the id of the target's webhook of this role, if any.
    path: str
    base: dict[str, Any]
    fields: dict[str, Any]

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


BODY_ROUTES = [
    BodyRoute(
        "POST",
        "/v1/events",
        {"type": "invoice.paid", "data": {}},
        {"id": TEXT, "type": TEXT, "tenant_id": TEXT, "occurred_at": INSTANT, "data": DATA},
    ),
    BodyRoute(
        "POST",
        "/v1/webhooks",
        {"name": "hostile", "url": PUBLIC_URL, "events": ["invoice.paid"]},
        {
            "name": TEXT,
            "url": URL_TEXT,
            "description": TEXT,
            "events": EVENTS,
            "owner_id": TEXT,
            "enabled": NUMBERS,
            "tenant_id": TEXT,
        },
    ),
    BodyRoute(
        "PATCH",
        "/v1/webhooks/{patch}",
        {},
        {
            "name": TEXT,
            "url": URL_TEXT,
            "description": TEXT,
            "events": EVENTS,
            "enabled": NUMBERS,
        },
    ),
    BodyRoute(
        "POST",
        "/v1/webhooks/{rotate}/rotate-secret",
        {},
        {
            "grace_period_seconds": NUMBERS
            | st.sampled_from([0, 1, 7 * 24 * 3600, 7 * 24 * 3600 + 1])
        },
    ),
    BodyRoute(
        "POST",
        "/v1/webhooks/{recover}/recover",
        {"since": 0},
        {"since": INSTANT, "until": INSTANT},
    ),
    BodyRoute(
        "PUT",
        "/v1/principals/usr_hostile",
        {"permissions": []},
        {"tenant_id": TEXT, "permissions": st.lists(TEXT, max_size=3) | st.just(["x"] * 1001)},
    ),
]


@pytest.mark.parametrize("route", BODY_ROUTES, ids=str)
@hostile(120)
@given(
    body=st.data(),
    key=st.sampled_from([KEY, ADMIN]),
    content_type=CONTENT_TYPES,
)
def test_hostile_bodies_are_4xx(
    target: Target, route: BodyRoute, body: st.DataObject, key: str, content_type: str | None
) -> None:
    sent = body.draw(bodies(route.base, route.fields), label="body")
    path = route.path.format(**target.webhooks)
    reply = target.api(route.method, path, sent, key=key, content_type=content_type)
    check(target, reply, describe(route.method, path, sent, content_type))


# -- query strings and ids ------------------------------------------------------------------


def quoted(text: str) -> str:
    """`text` percent-encoded as UTF-8; a lone surrogate becomes its (invalid) UTF-8 bytes."""
    return urllib.parse.quote_from_bytes(text.encode("utf-8", "surrogatepass"), safe="")


def _short(text: str) -> str:
    # aiohttp's HTTP parser refuses request lines above 8190 bytes before the app sees them
    # (test_overlong_request_lines_are_400 checks that answer), so each part stays well below.
    return text[:700]


# What a query value or id may be: hostile text, raw bytes, or malformed percent-encoding.
QUERY_TEXT = TEXT.map(quoted).map(_short) | st.binary(max_size=16).map(
    urllib.parse.quote_from_bytes
)
QUERY_RAW = st.sampled_from(["%", "%z", "%zz", "%ff", "%ED%A0%80", "%00", "+", "a+b", "%2B", "="])
QUERY_VALUE = QUERY_TEXT | QUERY_RAW | INSTANT_TEXT.map(quoted).map(_short) | NUMBERS.map(str)
LIST_QUERY = ["limit", "cursor", "tenant_id"]
DELIVERY_QUERY = [*LIST_QUERY, "webhook_id", "event_type", "status", "since", "until"]
# Cursors that decode (base64 of JSON) to what next_cursor never holds.
CURSORS = st.sampled_from(
    [
        base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")
        for text in (
            '[0,""]',
            '[-1,"x"]',
            f'[{2**63 - 1},"x"]',
            f'[{2**63},"x"]',
            '[0,"\\u0000"]',
            '[0,"\\ud800"]',
            '[1.5,"x"]',
            "[null,null]",
            '[0,"x",1]',
            "{}",
        )
    ]
)


@st.composite
def query_strings(draw: st.DrawFn) -> str:
    pairs = draw(
        st.lists(
            st.tuples(
                st.sampled_from([*DELIVERY_QUERY, "unknown"]) | QUERY_TEXT,
                QUERY_VALUE | CURSORS,
            ),
            max_size=4,
        )
    )
    # A name twice, a name without "=", empty pairs: what a hand-written URL may hold.
    parts = [f"{name}={value}" for name, value in pairs]
    parts += draw(st.lists(st.sampled_from(["", "limit", "since=", "&", "=x"]), max_size=2))
    return "&".join(parts)


@pytest.mark.parametrize("path", ["/v1/deliveries", "/v1/webhooks"])
@hostile(80)
@given(query=query_strings(), key=st.sampled_from([KEY, ADMIN]))
@example(query="cursor=WzAsIlx1MDAwMCJd", key=KEY)  # [0,"\u0000"]: NUL into PostgreSQL
@example(query="cursor=WzAsIlx1ZDgwMCJd", key=KEY)  # [0,"\ud800"]: not UTF-8 at all
@example(query="webhook_id=%00", key=KEY)
@example(query="event_type=a%00", key=KEY)
@example(query="tenant_id=%00", key=ADMIN)
@example(query="since=%C2%B2", key=KEY)  # "²".isdigit(), but int("²") fails
@example(query="until=--5", key=KEY)
@example(query="since=" + "9" * 4301, key=KEY)  # beyond int()'s 4,300 digits
@example(query="since=0001-01-01T00:00:00%2B01:00", key=KEY)
def test_hostile_list_queries_are_4xx(target: Target, path: str, query: str, key: str) -> None:
    reply = target.api("GET", f"{path}?{query}", key=key, content_type=None)
    check(target, reply, describe("GET", f"{path}?{query}", None))


# Every route that names a resource by id; {id} is hostile, or a real webhook's id with a
# hostile tenant_id. DELETE and the actions that change state get hostile ids only.
ID_ROUTES = [
    ("GET", "/v1/webhooks/{id}", True),
    ("GET", "/v1/webhooks/{id}/health", True),
    ("POST", "/v1/webhooks/{id}/test", False),
    ("DELETE", "/v1/webhooks/{id}", False),
    ("PATCH", "/v1/webhooks/{id}", False),
    ("POST", "/v1/webhooks/{id}/rotate-secret", False),
    ("POST", "/v1/webhooks/{id}/recover", False),
    ("GET", "/v1/deliveries/{id}", True),
    ("POST", "/v1/deliveries/{id}/replay", False),
    ("PUT", "/v1/principals/{id}", False),
]
ID_TEXT = QUERY_TEXT | QUERY_RAW | st.sampled_from(["%2F", "..", ".", "%2E%2E", "a%2Fb"])


@pytest.mark.parametrize(("method", "path", "real"), ID_ROUTES, ids=lambda v: str(v))
@hostile(25)
@given(
    ident=ID_TEXT,
    query=st.none() | QUERY_VALUE,
    key=st.sampled_from([KEY, ADMIN]),
    use_real=st.booleans(),
)
@example(ident="%00", query=None, key=KEY, use_real=False)  # NUL into PostgreSQL
@example(ident="a%00b", query="%00", key=ADMIN, use_real=False)
@example(ident="x", query="%00", key=ADMIN, use_real=True)
def test_hostile_ids_and_tenant_queries_are_4xx(
    target: Target,
    method: str,
    path: str,
    real: bool,
    ident: str,
    query: str | None,
    key: str,
    use_real: bool,
) -> None:
    if real and use_real:
        ident = target.webhooks["patch"]
    sent = path.format(id=ident) + ("" if query is None else f"?tenant_id={query}")
    body = {"POST": b"{}", "PATCH": b"{}", "PUT": b'{"permissions": []}'}.get(method)
    if path.endswith("/recover"):
        body = b'{"since": 0}'
    reply = target.api(method, sent, body, key=key)
    check(target, reply, describe(method, sent, body))


# -- the console's forms --------------------------------------------------------------------

# Part headers a hand-written multipart body may carry; aiohttp's parser refuses several.
PART_HEADERS = st.sampled_from(
    [
        "",
        "Content-Type: text/plain; charset=nope\r\n",
        "Content-Type: text/plain; charset=utf-16\r\n",
        "Content-Type: application/octet-stream\r\n",
        "Content-Transfer-Encoding: nope\r\n",
        "Content-Transfer-Encoding: base64\r\n",
        "Content-Transfer-Encoding: quoted-printable\r\n",
        "Content-Encoding: gzip\r\n",
        "Content-Encoding: nope\r\n",
        "Content-Type: multipart/mixed; boundary=inner\r\n",
    ]
)


@st.composite
def form_bodies(
    draw: st.DrawFn, base: dict[str, str], fields: dict[str, Any], csrf: str
) -> tuple[bytes, str | None]:
    """`base` (and its CSRF token) with some fields hostile, in an encoding a browser or a
    hand-written client may send, or a malformed one."""
    values = {CSRF_FIELD: csrf, **base}
    extra: list[tuple[str, str]] = []
    for name in draw(st.lists(st.sampled_from([*fields, "unknown"]), min_size=1, max_size=3)):
        value = draw(fields.get(name, TEXT) | TEXT)
        if name in values and draw(st.booleans()):
            values[name] = value
        else:
            # A field twice (as a browser sends checkboxes), or one no form has.
            extra.append((name if name != "unknown" else draw(TEXT), value))
    pairs = [*values.items(), *extra]
    kind = draw(st.sampled_from(["urlencoded", "urlencoded", "multipart", "raw"]))
    if kind == "urlencoded":
        text = "&".join(f"{quoted(name)}={quoted(value)}" for name, value in pairs)
        text += draw(st.sampled_from(["", "&%", "&%zz=%ff", "&a=%ED%A0%80", "&&=", "&x"]))
        charset = draw(st.sampled_from(["", "; charset=utf-8", "; charset=latin-1", "; charset=x"]))
        return text.encode("ascii"), "application/x-www-form-urlencoded" + charset
    if kind == "multipart":
        boundary = "hostile-boundary"
        parts = []
        for name, value in pairs:
            headers = draw(PART_HEADERS) if draw(st.integers(0, 3)) == 0 else ""
            disposition = draw(
                st.sampled_from(
                    [f'form-data; name="{name}"'] * 4
                    + [f'form-data; name="{name}"; filename="x"', "form-data", "inline"]
                )
            )
            head = f"--{boundary}\r\nContent-Disposition: {disposition}\r\n{headers}\r\n"
            parts.append(
                head.encode("utf-8", "surrogatepass")
                + value.encode("utf-8", "surrogatepass")
                + b"\r\n"
            )
        if draw(st.integers(0, 5)) == 0:
            charset = draw(st.sampled_from([b"nope", b"x" * 40, b"\xff", b"latin-1"]))
            parts.insert(
                0,
                f'--{boundary}\r\nContent-Disposition: form-data; name="_charset_"\r\n\r\n'.encode()
                + charset
                + b"\r\n",
            )
        tail = draw(
            st.sampled_from([f"--{boundary}--\r\n".encode()] * 3 + [b"", b"--x--", b"\xff"])
        )
        header = draw(
            st.sampled_from(
                [f"multipart/form-data; boundary={boundary}"] * 3
                + [
                    "multipart/form-data",
                    "multipart/form-data; boundary=",
                    "multipart/form-data; boundary=other",
                    "multipart/form-data; boundary=" + "b" * 80,
                    "multipart/form-data; boundary=\u00e9",
                    "multipart/mixed; boundary=" + boundary,
                ]
            )
        )
        return b"".join(parts) + tail, header
    raw = draw(st.binary(max_size=64) | st.sampled_from([b"", b"\xff\xfe", b"%", b"=" * 10]))
    return raw, draw(CONTENT_TYPES)


@dataclass(frozen=True)
class FormRoute:
    path: str
    base: dict[str, str]
    fields: dict[str, Any]

    def __str__(self) -> str:
        return self.path


WEBHOOK_FORM = {"name": "console", "url": PUBLIC_URL, "events": "invoice.paid"}
WEBHOOK_FIELDS = {"name": TEXT, "url": URL_TEXT, "description": TEXT, "events": PATTERN | TEXT}
FORM_ROUTES = [
    FormRoute("/console/webhooks", WEBHOOK_FORM, {**WEBHOOK_FIELDS, "tenant_id": TEXT}),
    FormRoute("/console/webhooks/{console_edit}/edit", WEBHOOK_FORM, WEBHOOK_FIELDS),
    FormRoute(
        "/console/webhooks/{console_edit}/enabled",
        {"enabled": "true"},
        {"enabled": st.sampled_from(["true", "false"]) | TEXT},
    ),
    FormRoute(
        "/console/webhooks/{console_edit}/rotate-secret",
        {"grace_period_seconds": "0"},
        {"grace_period_seconds": DIGIT_TEXT | NUMBERS.map(str) | TEXT},
    ),
    FormRoute(
        "/console/webhooks/{console_recover}/recover",
        {"since": "2024-05-01T00:00"},
        {"since": INSTANT_TEXT | TEXT},
    ),
    FormRoute("/console/sign-in", {"api_key": KEY}, {"api_key": TEXT}),
]


@pytest.mark.parametrize("route", FORM_ROUTES, ids=str)
@hostile(40)
@given(data=st.data(), key=st.sampled_from([KEY, ADMIN]))
def test_hostile_console_forms_are_not_5xx(
    target: Target, route: FormRoute, data: st.DataObject, key: str
) -> None:
    form = form_bodies(route.base, route.fields, target.csrf(key))
    body, content_type = data.draw(form, label="form")
    path = route.path.format(**target.webhooks)
    reply = target.console("POST", path, body, key=key, content_type=content_type)
    check(target, reply, describe("POST", path, body, content_type), console=True)


@hostile(50)
@given(query=query_strings(), key=st.sampled_from([KEY, ADMIN]))
@example(query="since=%C2%B2", key=KEY)
@example(query="webhook_id=%00&cursor=WzAsIlx1MDAwMCJd", key=KEY)
def test_hostile_console_delivery_filters_are_not_5xx(target: Target, query: str, key: str) -> None:
    path = f"/console/deliveries?{query}"
    reply = target.console("GET", path, key=key, content_type=None)
    check(target, reply, describe("GET", path, None), console=True)


CONSOLE_ID_ROUTES = [
    ("GET", "/console/webhooks/{id}"),
    ("GET", "/console/webhooks/{id}/edit"),
    ("GET", "/console/deliveries/{id}"),
    ("POST", "/console/deliveries/{id}/replay"),
    ("POST", "/console/webhooks/{id}/delete"),
    ("POST", "/console/webhooks/{id}/test"),
]


@pytest.mark.parametrize(("method", "path"), CONSOLE_ID_ROUTES, ids=lambda v: str(v))
@hostile(20)
@given(ident=ID_TEXT, key=st.sampled_from([KEY, ADMIN]))
@example(ident="%00", key=KEY)
def test_hostile_console_ids_are_not_5xx(
    target: Target, method: str, path: str, ident: str, key: str
) -> None:
    sent = path.format(id=ident)
    body = f"{CSRF_FIELD}={target.csrf(key)}".encode() if method == "POST" else None
    reply = target.console(method, sent, body, key=key)
    check(target, reply, describe(method, sent, body), console=True)


# -- regressions: every 5xx found, as it was found --------------------------------------------


@dataclass(frozen=True)
class Case:
    """One request that once answered a 5xx, and what it must answer now."""

    name: str
    method: str
    # Filled in with the target's webhook ids; "{console_edit}" etc.
    path: str
    body: bytes | None
    status: int
    # The field a /v1/ 422 must name, or the code its error must carry.
    names: str | None = None
    key: str = KEY
    content_type: str | None = "application/json"
    headers: tuple[tuple[str, str], ...] = ()
    # aiohttp's HTTP parser may see the bad bytes before the handler reads them, and then
    # answers its own plain-text 400 before any middleware runs; or, when they arrive apart
    # from the headers, never tell the handler, whose body deadline answers 408 instead
    # (test_a_body_that_never_completes_is_408_in_bounded_time).
    parser_may_answer: bool = False

    def __str__(self) -> str:
        return self.name


def _nested_data(kind: str, depth: int) -> bytes:
    return b'{"type": "invoice.paid", "data": %s}' % nested(kind, depth).text.encode()


REGRESSIONS = [
    # orjson writes 254 levels at most and a delivery's body wraps `data` in one more:
    # deeper `data` was a TypeError from orjson.dumps.
    Case("data nested 253 deep", "POST", "/v1/events", _nested_data("object", 253), 202),
    Case("data nested 254 deep", "POST", "/v1/events", _nested_data("object", 254), 422, "data"),
    Case("data nested 255 deep", "POST", "/v1/events", _nested_data("object", 255), 422, "data"),
    Case("data arrays 300 deep", "POST", "/v1/events", _nested_data("array", 300), 422, "data"),
    # The body object adds a level: orjson reads 1024 at most.
    Case("data nested 1023 deep", "POST", "/v1/events", _nested_data("object", 1023), 422, "data"),
    Case("data nested 1024 deep", "POST", "/v1/events", _nested_data("array", 1024), 400),
    # A NUL in an id went to PostgreSQL (the idempotency record): DataError.
    Case(
        "event id with NUL",
        "POST",
        "/v1/events",
        b'{"type": "invoice.paid", "data": {}, "id": "a\\u0000b"}',
        422,
        "id",
    ),
    Case(
        "event id with a line separator",
        "POST",
        "/v1/events",
        b'{"type": "invoice.paid", "data": {}, "id": "a\\u2028b"}',
        422,
        "id",
    ),
    # The case: UTC before year 1.
    Case(
        "occurred_at before year 1 in UTC",
        "POST",
        "/v1/events",
        b'{"type": "invoice.paid", "data": {}, "occurred_at": "0001-01-01T00:00:00+01:00"}',
        422,
        "occurred_at",
    ),
    Case(
        "occurred_at after year 9999 in UTC",
        "POST",
        "/v1/events",
        b'{"type": "invoice.paid", "data": {}, "occurred_at": "9999-12-31T23:59:59-23:59"}',
        422,
        "occurred_at",
    ),
    # str.isdigit() took these, int() did not: ValueError.
    Case(
        "since '--5'", "POST", "/v1/webhooks/{recover}/recover", b'{"since": "--5"}', 422, "since"
    ),
    Case(
        "since superscript two",
        "POST",
        "/v1/webhooks/{recover}/recover",
        b'{"since": "\\u00b2"}',
        422,
        "since",
    ),
    Case(
        "until of 4,301 digits",
        "POST",
        "/v1/webhooks/{recover}/recover",
        b'{"since": 0, "until": "' + b"9" * 4301 + b'"}',
        422,
        "until",
    ),
    Case(
        "since before year 1 in UTC",
        "POST",
        "/v1/webhooks/{recover}/recover",
        b'{"since": "0001-01-01T00:00:00+01:00"}',
        422,
        "since",
    ),
    Case("query since '²'", "GET", "/v1/deliveries?since=%C2%B2", None, 422, "since"),
    Case("query until '--5'", "GET", "/v1/deliveries?until=--5", None, 422, "until"),
    # Leading zeros make it 5001 digits for int() too.
    Case(
        "query since 5 after 5,000 zeros",
        "GET",
        "/v1/deliveries?since=" + "0" * 5000 + "5",
        None,
        200,
    ),
    Case(
        "query since 4,301 digits", "GET", "/v1/deliveries?since=" + "9" * 4301, None, 422, "since"
    ),
    # Cursors decoding to ids PostgreSQL cannot hold: DataError, UnicodeEncodeError.
    Case("cursor id NUL", "GET", "/v1/deliveries?cursor=WzAsIlx1MDAwMCJd", None, 422, "cursor"),
    Case(
        "cursor id surrogate", "GET", "/v1/deliveries?cursor=WzAsIlx1ZDgwMCJd", None, 422, "cursor"
    ),
    Case(
        "webhooks cursor id NUL", "GET", "/v1/webhooks?cursor=WzAsIlx1MDAwMCJd", None, 422, "cursor"
    ),
    # NUL in a query filter or a path id went to PostgreSQL: DataError.
    Case("webhook_id NUL", "GET", "/v1/deliveries?webhook_id=%00", None, 422, "webhook_id"),
    Case("event_type NUL", "GET", "/v1/deliveries?event_type=a%00", None, 422, "event_type"),
    Case("tenant_id NUL", "GET", "/v1/deliveries?tenant_id=%00", None, 422, "tenant_id", ADMIN),
    Case(
        "tenant_id NUL on a delivery",
        "GET",
        "/v1/deliveries/dlv_x?tenant_id=%00",
        None,
        422,
        "tenant_id",
        ADMIN,
    ),
    Case("delivery id NUL", "GET", "/v1/deliveries/%00", None, 404, "not_found"),
    Case("replay id NUL", "POST", "/v1/deliveries/a%00/replay", b"{}", 404, "not_found"),
    Case("principal id NUL", "PUT", "/v1/principals/a%00b", b'{"permissions": []}', 422, "id"),
    # A body that does not decompress as its Content-Encoding says: ContentEncodingError.
    Case(
        "gzip body that is not gzip",
        "POST",
        "/v1/events",
        b'{"type": "invoice.paid", "data": {}}',
        400,
        "bad_request",
        headers=(("Content-Encoding", "gzip"),),
        parser_may_answer=True,
    ),
    Case(
        "deflate body that is not deflate",
        "POST",
        "/v1/webhooks",
        b"{}",
        400,
        "bad_request",
        headers=(("Content-Encoding", "deflate"),),
        parser_may_answer=True,
    ),
    # Accepted before (no 5xx, but a URL the sender cannot send to, and a check that saw
    # another URL than the one stored: urlsplit drops CR, LF and TAB).
    Case(
        "url with CRLF",
        "POST",
        "/v1/webhooks",
        b'{"name": "n", "url": "https://93.184.215.14/\\r\\nX: 1", "events": ["invoice.paid"]}',
        422,
        "url",
    ),
    Case(
        "url with NUL",
        "PATCH",
        "/v1/webhooks/{patch}",
        b'{"url": "https://93.184.215.14/\\u0000"}',
        422,
        "url",
    ),
    Case("name with NUL", "PATCH", "/v1/webhooks/{patch}", b'{"name": "a\\u0000"}', 422, "name"),
    Case(
        "description keeps line breaks",
        "PATCH",
        "/v1/webhooks/{patch}",
        b'{"description": "two\\r\\nlines\\tand a tab"}',
        200,
    ),
    # The console's forms: aiohttp's form parser raised ValueError, LookupError or
    # UnicodeDecodeError for these, and the console answered its 500 page.
    Case(
        "form charset unknown",
        "POST",
        "/console/webhooks/{console_edit}/enabled",
        b"enabled=true",
        400,
        content_type="application/x-www-form-urlencoded; charset=nope",
    ),
    Case(
        "form not UTF-8",
        "POST",
        "/console/webhooks/{console_edit}/enabled",
        b"enabled=\xff",
        400,
        content_type="application/x-www-form-urlencoded",
    ),
    Case(
        "multipart without boundary",
        "POST",
        "/console/webhooks",
        b"--x\r\n",
        400,
        content_type="multipart/form-data",
    ),
    Case(
        "multipart with another boundary",
        "POST",
        "/console/webhooks/{console_edit}/rotate-secret",
        b'--x\r\nContent-Disposition: form-data; name="a"\r\n\r\nb\r\n--x--\r\n',
        400,
        content_type="multipart/form-data; boundary=other",
    ),
    Case(
        "multipart part in an unknown transfer encoding",
        "POST",
        "/console/sign-in",
        b'--x\r\nContent-Disposition: form-data; name="a"\r\n'
        b"Content-Transfer-Encoding: nope\r\n\r\nb\r\n--x--\r\n",
        400,
        content_type="multipart/form-data; boundary=x",
    ),
    Case(
        "console delivery filter NUL",
        "GET",
        "/console/deliveries?webhook_id=%00&since=%C2%B2",
        None,
        422,
        content_type=None,
    ),
]


@pytest.mark.parametrize("case", REGRESSIONS, ids=str)
def test_regressions(target: Target, case: Case) -> None:
    path = case.path.format(**target.webhooks)
    console = path.startswith("/console/")
    body = case.body
    if console and case.method == "POST":
        # The form's CSRF token first, as every console form sends it.
        token = f"{CSRF_FIELD}={target.csrf(case.key)}&".encode()
        body = token + (body or b"") if "urlencoded" in (case.content_type or "") else body
        reply = target.console(
            case.method, path, body, key=case.key, content_type=case.content_type
        )
    elif console:
        reply = target.console(case.method, path, key=case.key, content_type=case.content_type)
    else:
        headers = {"Authorization": f"Bearer {case.key}", **dict(case.headers)}
        if case.content_type is not None:
            headers["Content-Type"] = case.content_type
        reply = target.send(case.method, path, body, headers)
    sent = describe(case.method, path, body, case.content_type)
    by_parser = case.parser_may_answer and reply.headers.get_content_type() == "text/plain"
    check(target, reply, sent, console=console or by_parser)
    if case.parser_may_answer and reply.status == 408:
        assert orjson.loads(reply.body)["error"]["code"] == "body_timeout", reply.body
        return
    assert reply.status == case.status, f"{sent}\n{reply.status} {reply.body[:500]!r}"
    if case.names is not None and not by_parser:
        error = orjson.loads(reply.body)["error"]
        if reply.status == 422:
            assert [d["field"] for d in error["details"]] == [case.names], error
        else:
            assert error["code"] == case.names, error


def test_console_rotation_reads_only_whole_numbers_it_can(target: Target) -> None:
    """ "²" passed str.isdigit() and int("²") raised, as int() does beyond 4,300 digits: the
    console's 500 page."""
    path = f"/console/webhooks/{target.webhooks['console_edit']}/rotate-secret"
    # Back to the webhook's page saying what was wrong (303), or rotated (the secret's page).
    for grace, status in (
        ("\u00b2", 303),
        ("\u0663", 303),
        ("9" * 4301, 303),
        ("0" * 5000 + "1", 200),
    ):
        body = urllib.parse.urlencode({CSRF_FIELD: target.csrf(), "grace_period_seconds": grace})
        reply = target.console("POST", path, body.encode())
        check(target, reply, describe("POST", path, body.encode()), console=True)
        assert reply.status == status, reply.body[:500]


def test_overlong_request_lines_are_400(target: Target) -> None:
    """Above 8190 bytes aiohttp's HTTP parser answers before any middleware: a plain-text 400,
    the one 4xx that is not the API's JSON error (nothing of the app runs to write one)."""
    path = "/v1/deliveries?since=" + "9" * 9000
    reply = target.api("GET", path, content_type=None)
    assert reply.status == 400, reply.body[:300]


def _raw_exchange(port: int, head: bytes, body: bytes) -> tuple[int, bytes]:
    """Headers, then (a moment later, in a packet of their own) body bytes; the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=BODY_SECONDS + 20) as conn:
        conn.sendall(head)
        time.sleep(0.2)  # apart from the headers: the order of packets is the point here
        conn.sendall(body)
        reply = b""
        while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
            chunk = conn.recv(65536)
            if not chunk:
                break
            reply += chunk
    status = int(reply.split(b" ", 2)[1])
    return status, reply.split(b"\r\n\r\n", 1)[1]


def test_a_body_that_never_completes_is_408_in_bounded_time(target: Target) -> None:
    """A body that stops arriving mid-way, and one aiohttp's decoder never finishes (deflate
    that is not deflate, sent apart from its headers: request.read() waited for good), each
    get a 408 naming the problem once the body deadline passes, not a handler held open."""
    auth = f"Authorization: Bearer {KEY}\r\nContent-Type: application/json\r\n".encode()
    stalled = (
        b"POST /v1/webhooks HTTP/1.1\r\nHost: x\r\n" + auth + b"Content-Length: 100\r\n\r\n",
        b'{"url": "https://',
    )
    not_deflate = (
        b"POST /v1/webhooks HTTP/1.1\r\nHost: x\r\n"
        + auth
        + b"Content-Encoding: deflate\r\nContent-Length: 2\r\n\r\n",
        b"{}",
    )
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        replies = list(
            pool.map(lambda parts: _raw_exchange(target.port, *parts), [stalled, not_deflate])
        )
    for status, body in replies:
        assert status == 408, body
        error = orjson.loads(body)["error"]
        assert error["code"] == "body_timeout", error
        assert f"{BODY_SECONDS:g} s" in error["message"], error
