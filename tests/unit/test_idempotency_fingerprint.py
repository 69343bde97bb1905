"""What counts as the same request under one Idempotency-Key: content, not spelling."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from hookstream.api.idempotency import request_fingerprint

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)
bodies = st.dictionaries(st.text(max_size=6), json_values, max_size=5)


def fingerprint(body: bytes, query: str = "", path: str = "/v1/webhooks") -> str:
    return request_fingerprint("POST", path, query, body)


@given(body=bodies, indent=st.sampled_from([None, 1, 4]))
def test_json_bodies_are_compared_by_content(body: dict[str, Any], indent: int | None) -> None:
    compact = json.dumps(body).encode()
    respelled = json.dumps(dict(reversed(list(body.items()))), indent=indent).encode()
    assert fingerprint(compact) == fingerprint(respelled)


@given(first=bodies, second=bodies)
def test_different_bodies_are_different_requests(
    first: dict[str, Any], second: dict[str, Any]
) -> None:
    same = fingerprint(json.dumps(first).encode()) == fingerprint(json.dumps(second).encode())
    # Compared as JSON: Python holds True == 1, JSON does not.
    assert same == (json.dumps(first, sort_keys=True) == json.dumps(second, sort_keys=True))


def test_query_order_does_not_matter_but_its_content_does() -> None:
    assert fingerprint(b"{}", "a=1&b=2") == fingerprint(b"{}", "b=2&a=1")
    assert fingerprint(b"{}", "a=1%262") != fingerprint(b"{}", "a=1&2")
    assert fingerprint(b"{}", "a=1") != fingerprint(b"{}", "a=2")


def test_an_empty_body_is_the_empty_object_and_paths_differ() -> None:
    assert fingerprint(b"") == fingerprint(b" {} ")
    assert fingerprint(b"not json") != fingerprint(b"not  json")
    assert fingerprint(b"{}", path="/v1/events") != fingerprint(b"{}")
